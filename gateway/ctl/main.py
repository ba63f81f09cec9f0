"""``gatewayctl``: the operator CLI for routing rules (DESIGN.md §5), switches (§7) and the fleet view.

This module parses the arguments, resolves the target (gateway/ctl/session.py),
opens its control table and runs one command in its own event loop:
``rules list|get|set|delete`` (gateway/ctl/rules.py), ``members``
(gateway/ctl/members.py), ``switch``, ``switch abort``, ``switch status``
and ``failover`` (gateway/ctl/switch.py). Every command that changes
something takes ``--yes`` and ``--dry-run`` (``_changing``).

Exit status: 0 on success, 1 when a command refused or failed (one line on
stderr says why), 2 for bad arguments (argparse), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.clock import Clock, SystemClock
from gateway.consensus.acceptor import Acceptor
from gateway.consensus.proposer import Proposer
from gateway.ctl import members, rules, switch
from gateway.ctl.session import (
    Confirm,
    CtlError,
    OpenPeers,
    OpenStore,
    Session,
    Target,
    default_editor,
    open_target_store,
    resolve_target,
)
from gateway.routing.control_table import ControlTable, ControlTableError
from gateway.routing.rules import MODES, RuleError, ScheduleEntry, check_scope

#: Defaults of the options accepted both before and after the subcommand.
TARGET_DEFAULTS: dict[str, Any] = {
    "local": False, "state_dir": ".local", "region": None, "profile": None, "endpoint_url": None,
    "config": None, "json": False,
}


# -- arguments ---------------------------------------------------------------------------------


def _target_options(p: argparse.ArgumentParser) -> None:
    # SUPPRESS lets `gatewayctl --json rules list` and `gatewayctl rules list --json` both work:
    # a subparser's defaults would otherwise overwrite what the main parser read.
    s = argparse.SUPPRESS
    g = p.add_argument_group("target")
    g.add_argument("--local", action="store_true", default=s, help="the local cluster of `make run` (reads STATE_DIR/cluster.json)")
    g.add_argument("--state-dir", default=s, help="the local cluster's state directory (default: .local)")
    g.add_argument("--region", default=s, help="the region whose replica to use (required without --local)")
    g.add_argument("--profile", default=s, help="AWS profile for credentials (default: the provider chain)")
    g.add_argument("--endpoint-url", default=s, help="DynamoDB endpoint (default: the AWS regional endpoint)")
    g.add_argument("--config", default=s, help="gateway TOML naming the regions, views and tables (required without --local)")
    g.add_argument("--json", action="store_true", default=s, help="print JSON instead of text")


def scope_arg(text: str) -> str:
    try:
        return check_scope(text)
    except RuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_schedule(text: str) -> tuple[ScheduleEntry, ...]:
    """``HH:MM=REGION,HH:MM=REGION`` (UTC), sorted by time; an empty string clears the schedule."""
    entries = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        at, sep, region = part.partition("=")
        if not sep or not at.strip() or not region.strip():
            raise argparse.ArgumentTypeError(f"schedule entry {part!r} is not HH:MM=REGION")
        entries.append(ScheduleEntry(at.strip(), region.strip()))
    return tuple(sorted(entries, key=lambda e: e.at))


def parse_regions(text: str) -> tuple[str, ...]:
    """``REGION,REGION``; an empty string is none."""
    return tuple(filter(None, (p.strip() for p in text.split(","))))


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _target_options(common)
    p = argparse.ArgumentParser(
        prog="gatewayctl",
        parents=[common],
        description="Operate Feature Gateway: read and edit routing rules in the control table, see the fleet.",
        epilog="examples: gatewayctl --local rules list; "
        "gatewayctl --local rules set view#users --primary eu-west-1 --yes; gatewayctl --local members; "
        "gatewayctl --local switch view#items --to eu-west-1 --yes. Every command that changes something asks "
        "on a terminal, needs --yes without one, and takes --dry-run.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{rules,members,switch,failover}")
    rules = sub.add_parser("rules", help="list, show and edit routing rules")
    rules_sub = rules.add_subparsers(dest="action", required=True)
    rules_sub.add_parser("list", parents=[common], help="every rule of the control table")
    get = rules_sub.add_parser("get", parents=[common], help="one rule")
    get.add_argument("scope", type=scope_arg, help="default, view#VIEW or view#VIEW#prefix#PREFIX")

    put = rules_sub.add_parser("set", parents=[common], help="create or edit a rule (shows the diff first)")
    put.add_argument("scope", type=scope_arg, help="default, view#VIEW or view#VIEW#prefix#PREFIX")
    put.add_argument("--primary", help="the region that accepts writes (required to create a single_primary rule)")
    put.add_argument("--mode", choices=MODES, help="default: single_primary for a new rule, unchanged for an edit")
    put.add_argument("--schedule", type=parse_schedule, help="follow-the-sun, UTC: HH:MM=REGION,HH:MM=REGION ('' clears)")
    put.add_argument("--failover-order", type=parse_regions, metavar="REGION,REGION",
                     help="automatic failover, to the first reachable of these regions ('' turns it off)")
    put.add_argument("--failover-after", type=float, metavar="S",
                     help="with --failover-order: once the primary has been unreachable from a majority for S seconds")
    delete = rules_sub.add_parser("delete", parents=[common], help="delete a rule (shows it first)")
    delete.add_argument("scope", type=scope_arg, help="default, view#VIEW or view#VIEW#prefix#PREFIX")
    for edit in (put, delete):
        edit.add_argument("--expect-version", type=int, metavar="N", help="refuse unless the stored rule is version N")
        _changing(edit, "show the diff and write nothing")
    put.add_argument("--by", help="who edits, for updated_by (default: $USER@hostname)")

    sub.add_parser("members", parents=[common], help="the fleet as the region's replica of the members table shows it")

    switch = sub.add_parser(
        "switch", parents=[common],
        help="planned primary switch with write buffering and a fence (or: switch abort SCOPE, switch status SCOPE)",
        usage="gatewayctl switch SCOPE --to REGION [--yes] [--dry-run] [--max-duration S] [--force]\n"
              "       gatewayctl switch abort SCOPE [--yes] [--dry-run]\n"
              "       gatewayctl switch status SCOPE [--watch]",
    )
    switch.add_argument("words", nargs="+", metavar="SCOPE", help="the scope to switch, or: abort SCOPE, status SCOPE")
    switch.add_argument("--to", metavar="REGION", help="the new primary")
    _changing(switch, "run every preflight check, print each result, write nothing")
    switch.add_argument("--max-duration", type=float, metavar="S", help="abort when the fence is not verified in S seconds")
    switch.add_argument("--force", action="store_true", help="switch even if the scope changed less than switch.min_interval ago")
    switch.add_argument("--watch", action="store_true", help="switch status: show the switch each second until it ends")
    switch.add_argument("--by", help="who switches, for updated_by (default: $USER@hostname)")
    failover = sub.add_parser("failover", parents=[common], help="make another region primary now, without a fence")
    failover.add_argument("scope", type=scope_arg)
    failover.add_argument("--to", required=True, metavar="REGION", help="the new primary")
    _changing(failover, "show what would change and the loss window; write nothing")
    failover.add_argument("--force", action="store_true", help="fail over even though the primary still answers")
    failover.add_argument("--by", help="who fails over, for updated_by (default: $USER@hostname)")
    return p


def _changing(p: argparse.ArgumentParser, dry_run: str) -> None:
    """The options of every command that changes something: one convention for all of them."""
    p.add_argument("--yes", action="store_true", help="apply without asking (required without a terminal)")
    p.add_argument("--dry-run", action="store_true", help=dry_run)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    for name, value in TARGET_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.local and (args.profile or args.endpoint_url):
        p.error("--profile and --endpoint-url name an AWS target; --local uses the local cluster's endpoints")
    if not args.local and not (args.region and args.config):
        p.error("without --local, --region and --config are both required (the config names the regions, "
                "views and tables rules are checked against)")
    return args

#: The commands that change rules: they go through the majority control plane.
CHANGING = {("rules", "set"), ("rules", "delete"), ("switch", None), ("failover", None)}

COMMANDS: dict[tuple[str, str | None], Callable[[Session], Awaitable[int]]] = {
    ("rules", "list"): rules.rules_list,
    ("rules", "get"): rules.rules_get,
    ("rules", "set"): rules.rules_set,
    ("rules", "delete"): rules.rules_delete,
    ("members", None): members.members,
    ("switch", None): switch.switch,
    ("failover", None): switch.failover,
}


# -- entry points ------------------------------------------------------------------------------


def ask_on_terminal(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def _session(args: argparse.Namespace, target: Target, confirm: Confirm | None, open_store: OpenStore,
                   clock: Clock, open_peers: OpenPeers | None) -> int:
    store, endpoint = await open_store(target)
    stores = {target.region: store}
    try:
        key = (args.command, getattr(args, "action", None))
        proposer = None
        if key in CHANGING and len(target.config.regions) > 1:
            # A change is decided by a majority of the regions (gateway/consensus/): reach every region's replica.
            for region in target.config.regions:
                if region not in stores:
                    stores[region] = (await open_store(target.of(region)))[0]
            table = target.config.routing.table
            proposer = Proposer({r: Acceptor(stores[r], table, r) for r in target.config.regions}, clock,
                                f"gatewayctl-{default_editor()}-{os.getpid()}")
            await proposer.warm()  # before a switch's clock starts: its deadline is for the fence, not for clients
        control = ControlTable(store, target.region, endpoint, target.config, clock, proposer=proposer,
                               replicas=stores if proposer is not None else None)
        return await COMMANDS[key](Session(args, target, control, clock, confirm, open_peers or switch.peer_client))
    finally:
        for each in {id(s): s for s in stores.values()}.values():
            await each.close()


def run(
    argv: list[str] | None = None,
    *,
    confirm: Confirm | None = None,
    open_store: OpenStore = open_target_store,
    clock: Clock | None = None,
    open_peers: OpenPeers | None = None,
) -> int:
    """Parse, resolve the target, run one command in its own event loop; returns the exit code."""
    args = parse_args(argv)
    try:
        target = resolve_target(args)
        return asyncio.run(_session(args, target, confirm, open_store, clock or SystemClock(), open_peers))
    except (CtlError, ControlTableError) as exc:
        print(f"gatewayctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gatewayctl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gatewayctl … | head`: the reader left; say nothing more (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(argv: list[str] | None = None) -> int:
    return run(argv, confirm=ask_on_terminal if sys.stdin.isatty() else None)


if __name__ == "__main__":
    sys.exit(main())
