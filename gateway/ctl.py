"""``gatewayctl``: the operator CLI for routing rules (DESIGN.md §5) and the fleet view.

It reads and edits the rule items of the control table and reads the members
table, in one region's replica: the local cluster's (``--local``, from
``.local/cluster.json``) or an AWS region's (``--region``, ``--config``).

Invariants:
- Every edit is a conditional write on what was read: ``attribute_not_exists(pk)``
  to create a rule, ``version = :version`` (the version read, or
  ``--expect-version``) to edit or delete one. Of two edits made from the same
  read, one is written; the other is refused, names who changed the rule, and
  writes nothing.
- Nothing is written without first showing its diff, and without a terminal to
  confirm on nothing is written unless ``--yes`` says so.
- A rule is written only if it validates against the config's regions and views
  (``routing.validate``). A rule in the ``switching`` state is never edited or
  deleted here: the switch that set it owns it until it commits or aborts.
- Epochs never go back for a key: a new scope starts one above the epoch of the
  scope that covered its keys until now (its parent) and above any epoch the
  fleet still reports for it (a re-created scope); with neither, at 0.

Conventions: a new rule is version 1, each edit adds 1 (``routing.edited``, which
also bumps the epoch when the primary or the mode changes). The condition is
checked against the chosen region's replica only; global tables settle
concurrent edits made in two regions by last writer wins, so make every edit in
one region.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway import ctl_render as render
from gateway import ctl_switch
from gateway.clock import Clock, SystemClock
from gateway.config import Config, ConfigError
from gateway.config import load as load_config
from gateway.ctl_control import Control, CtlError
from gateway.ctl_edits import (
    check_expected,
    check_regions,
    check_view,
    fallback_note,
    initial_epoch,
    known_regions,
    plan_set,
    refuse_switching,
)
from gateway.routing import MODES, SINGLE_PRIMARY, RuleError, ScheduleEntry, check_scope

#: Defaults of the options accepted both before and after the subcommand.
TARGET_DEFAULTS: dict[str, Any] = {
    "local": False, "state_dir": ".local", "region": None, "profile": None, "endpoint_url": None,
    "config": None, "json": False,
}

#: Asks the operator a yes/no question; ``None`` when there is no terminal to ask on.
Confirm = Callable[[str], bool]
#: Opens the store of a target; returns it and the endpoint URL it talks to (for messages).
OpenStore = Callable[["Target"], Awaitable[tuple[Any, str]]]


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


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _target_options(common)
    p = argparse.ArgumentParser(
        prog="gatewayctl",
        parents=[common],
        description="Operate Feature Gateway: read and edit routing rules in the control table, see the fleet.",
        epilog="examples: gatewayctl --local rules list; "
        "gatewayctl --local rules set view#users --primary eu-west-1 --yes; gatewayctl --local members",
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
    delete = rules_sub.add_parser("delete", parents=[common], help="delete a rule (shows it first)")
    delete.add_argument("scope", type=scope_arg, help="default, view#VIEW or view#VIEW#prefix#PREFIX")
    for edit in (put, delete):
        edit.add_argument("--expect-version", type=int, metavar="N", help="refuse unless the stored rule is version N")
        edit.add_argument("--yes", action="store_true", help="apply without asking")
    put.add_argument("--by", help="who edits, for updated_by (default: $USER@hostname)")

    sub.add_parser("members", parents=[common], help="the fleet as the region's replica of the members table shows it")

    switch = sub.add_parser(
        "switch", parents=[common], help="planned primary switch with write buffering and a fence (or: switch abort SCOPE)",
        usage="gatewayctl switch SCOPE --to REGION [--dry-run] [--max-duration S] [--force] | gatewayctl switch abort SCOPE",
    )
    switch.add_argument("words", nargs="+", metavar="SCOPE", help="the scope to switch, or: abort SCOPE")
    switch.add_argument("--to", metavar="REGION", help="the new primary")
    switch.add_argument("--dry-run", action="store_true", help="run the preflight only; write nothing")
    switch.add_argument("--max-duration", type=float, metavar="S", help="abort when the fence is not verified in S seconds")
    switch.add_argument("--force", action="store_true", help="switch even if the scope changed less than switch.min_interval ago")
    switch.add_argument("--by", help="who switches, for updated_by (default: $USER@hostname)")
    failover = sub.add_parser("failover", parents=[common], help="make another region primary now, without a fence")
    failover.add_argument("scope", type=scope_arg)
    failover.add_argument("--to", required=True, metavar="REGION", help="the new primary")
    failover.add_argument("--yes", action="store_true", help="apply without asking")
    failover.add_argument("--by", help="who fails over, for updated_by (default: $USER@hostname)")
    return p


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


# -- the target --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    region: str
    #: ``None``: the AWS regional endpoint, resolved by botocore.
    endpoint_url: str | None
    profile: str | None
    config: Config


def resolve_target(args: argparse.Namespace) -> Target:
    """Region, endpoint, credentials and config from the arguments (and the local cluster's state file)."""
    if not args.local:
        return Target(args.region, args.endpoint_url, args.profile, _config(args.config, args.region))
    state_file = Path(args.state_dir) / "cluster.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CtlError(f"no running local cluster ({state_file} missing); start one with `make run`") from None
    except (OSError, ValueError) as exc:
        raise CtlError(f"cannot read the local cluster's state {state_file}: {exc}") from None
    regions = state.get("regions") if isinstance(state, dict) else None
    if not isinstance(regions, dict) or not regions:
        raise CtlError(f"{state_file} lists no regions; is the local cluster still starting?")
    region = args.region or next(iter(regions))
    if region not in regions:
        raise CtlError(f"region {region} is not in the local cluster ({', '.join(regions)})")
    info = regions[region]
    if info.get("stopped"):
        raise CtlError(f"region {region} of the local cluster is stopped (fault stop-region); "
                       "start it again or pick another with --region")
    if not info.get("dynamodb"):
        raise CtlError(f"{state_file} names no DynamoDB endpoint for {region}")
    config_path = args.config or state.get("config")
    if not config_path:
        raise CtlError(f"{state_file} names no config file; pass --config")
    beside_state = state_file.resolve().parent.parent / config_path
    if not args.config and not Path(config_path).is_absolute() and beside_state.exists():
        # cluster.json holds the path `local up` was given, relative to where it ran: beside its state directory.
        config_path = str(beside_state)
    from gateway.local.cluster import PEER_SECRET_FILE, use_local_credentials

    use_local_credentials()
    secret_file = state_file.parent / PEER_SECRET_FILE
    if secret_file.exists() and not os.environ.get("FGW_PEER_SECRET"):
        os.environ["FGW_PEER_SECRET"] = secret_file.read_text().strip()  # the cluster's, for switch and failover
    return Target(region, info["dynamodb"], None, _config(config_path, region))


def _config(path: str, region: str) -> Config:
    try:
        return load_config(path, region=region)
    except ConfigError as exc:
        raise CtlError(f"bad configuration: {exc}") from None


async def open_botocore_store(target: Target) -> tuple[Any, str]:
    from botocore.exceptions import BotoCoreError

    from gateway.store_botocore import BotocoreStore

    try:
        # Few attempts: an operator waiting on an unreachable endpoint wants the error, not a minute of retries.
        store = await BotocoreStore.open(target.region, target.endpoint_url, profile=target.profile, max_attempts=3)
    except BotoCoreError as exc:  # e.g. ProfileNotFound, a malformed endpoint URL
        raise CtlError(f"cannot open a DynamoDB client for {target.region}: {exc}") from None
    return store, target.endpoint_url or store.client.meta.endpoint_url


# -- commands ----------------------------------------------------------------------------------


def default_editor() -> str:
    user = os.environ.get("USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


@dataclass(slots=True)
class Session:
    args: argparse.Namespace
    target: Target
    control: Control
    clock: Clock
    confirm: Confirm | None

    def say(self, text: str) -> None:
        """Human text: stdout, or stderr when stdout carries JSON."""
        print(text, file=sys.stderr if self.args.json else sys.stdout)

    def emit(self, body: Any) -> None:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())

    async def confirmed(self) -> bool:
        if self.args.yes:
            return True
        if self.confirm is None:
            raise CtlError("stdin is not a terminal to confirm on: nothing was written; pass --yes to apply without asking")
        if await asyncio.to_thread(self.confirm, "apply? [y/N] "):
            return True
        self.say("nothing was written")
        return False


async def rules_list(s: Session) -> int:
    rules, malformed = await s.control.rules()
    if not s.args.json:
        print(render.rules_text(rules, malformed))
        return 0
    s.emit([r.to_json() for r in sorted(rules, key=lambda r: r.scope)])
    for m in malformed:
        print(f"gatewayctl: malformed rule item {m.scope}: {m.reason}", file=sys.stderr)
    return 0


async def rules_get(s: Session) -> int:
    rule = await s.control.rule(s.args.scope)
    if isinstance(rule, render.Malformed):
        raise CtlError(f"the rule item of {rule.scope} is malformed: {rule.reason}; gateways ignore it")
    if rule is None:
        raise CtlError(f"no rule for {s.args.scope} in {s.control.where()}; `gatewayctl rules list` shows them")
    if s.args.json:
        s.emit(rule.to_json())
    else:
        print(render.rule_text(rule))
    return 0


async def rules_set(s: Session) -> int:
    args, config = s.args, s.target.config
    regions = known_regions(config)
    check_view(args.scope, config)
    check_regions(args.scope, args.primary, args.schedule, regions)
    current = await s.control.rule(args.scope)
    if isinstance(current, render.Malformed):
        raise CtlError(f"the rule item of {args.scope} is malformed ({current.reason}); "
                       f"delete it first: gatewayctl rules delete {args.scope}")
    if current is not None:
        refuse_switching(current)
    check_expected(args.scope, current, args.expect_version)
    epoch = 0
    if current is None:
        rules, _ = await s.control.rules()
        epoch = initial_epoch(args.scope, rules, await s.control.observed_epochs(args.scope))
    new = plan_set(current, args.scope, primary=args.primary, mode=args.mode, schedule=args.schedule,
                   regions=regions, by=args.by or default_editor(), now_ms=s.clock.wall_ms(), epoch=epoch)
    if new is None:  # only an edit can change nothing
        s.say(f"no change: the rule for {args.scope} already says that (version {current.version if current else '-'})")
        return 0
    s.say(render.diff_text(args.scope, current, new))
    if current is not None and current.mode == SINGLE_PRIMARY and new.primary != current.primary:
        s.say("note: this moves the primary at once, without a fence; writes the old primary acknowledged "
              "may not have replicated yet (a planned switch fences them)")
    if not await s.confirmed():
        return 1
    await s.control.put(new, expect=None if current is None else current.version)
    s.say(f"written: {new.scope} version {new.version}, epoch {new.epoch}, in {s.control.where()}")
    if args.json:
        s.emit(new.to_json())
    return 0


async def rules_delete(s: Session) -> int:
    scope = s.args.scope
    current = await s.control.rule(scope)
    if current is None:
        raise CtlError(f"no rule for {scope} in {s.control.where()}; nothing to delete")
    if isinstance(current, render.Malformed):
        s.say(f"delete malformed rule item {scope} ({current.reason})")
        if not await s.confirmed():
            return 1
        await s.control.delete(scope, expect=None)
        s.say(f"deleted: {scope}")
        return 0
    refuse_switching(current)
    check_expected(scope, current, s.args.expect_version)
    rules, _ = await s.control.rules()
    s.say(render.diff_text(scope, current, None))
    s.say(fallback_note(scope, rules))
    if not await s.confirmed():
        return 1
    await s.control.delete(scope, expect=current.version)
    s.say(f"deleted: {scope} (was version {current.version}, epoch {current.epoch})")
    if s.args.json:
        s.emit(current.to_json())
    return 0


async def members(s: Session) -> int:
    expiry = s.target.config.members.expiry
    rows = await s.control.members(now_us=s.clock.wall_us(), expiry=expiry)
    if s.args.json:
        s.emit(render.members_json(rows))
    else:
        print(render.members_text(rows, expiry=expiry))
    return 0


COMMANDS: dict[tuple[str, str | None], Callable[[Session], Awaitable[int]]] = {
    ("rules", "list"): rules_list,
    ("rules", "get"): rules_get,
    ("rules", "set"): rules_set,
    ("rules", "delete"): rules_delete,
    ("members", None): members,
    ("switch", None): ctl_switch.switch,
    ("failover", None): ctl_switch.failover,
}


# -- entry points ------------------------------------------------------------------------------


def ask_on_terminal(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def _session(args: argparse.Namespace, target: Target, confirm: Confirm | None, open_store: OpenStore,
                   clock: Clock) -> int:
    store, endpoint = await open_store(target)
    try:
        control = Control(store, target.region, endpoint, target.config, clock)
        command = COMMANDS[(args.command, getattr(args, "action", None))]
        return await command(Session(args, target, control, clock, confirm))
    finally:
        await store.close()


def run(
    argv: list[str] | None = None,
    *,
    confirm: Confirm | None = None,
    open_store: OpenStore = open_botocore_store,
    clock: Clock | None = None,
) -> int:
    """Parse, resolve the target, run one command in its own event loop; returns the exit code."""
    args = parse_args(argv)
    try:
        target = resolve_target(args)
        return asyncio.run(_session(args, target, confirm, open_store, clock or SystemClock()))
    except CtlError as exc:
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
