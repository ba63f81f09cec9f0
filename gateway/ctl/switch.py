"""``gatewayctl switch`` / ``switch abort`` / ``switch status`` / ``failover``: the operator's side of DESIGN.md §7.

The protocol itself is gateway/switch/coordinator.py (``SwitchCoordinator``); this module
wires it to the CLI's target (the control region's tables, signed calls to the
fleet's peer APIs), prints each step with its duration as it happens, and
prints the fence's progress each second while it waits. Each progress report
is also kept in the control table's ``switch#SCOPE`` item, so ``switch
status SCOPE [--watch]`` shows a switch from any terminal: its step, elapsed
time, fence progress, and the writes each live gateway holds for the scope
(asked over the peer API).

Like every command that changes something, ``switch``, ``switch abort`` and
``failover`` ask on a terminal, refuse without one unless given ``--yes``, and
take ``--dry-run``: for a switch it runs every preflight check and prints each
result.

Exit status: 0 when the switch committed (or a dry run's checks all passed), 1
when it was refused or aborted (the message says why, and the scope is active
either way), as for every other gatewayctl failure.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.ctl import render
from gateway.ctl.session import CtlError, Session, default_editor
from gateway.errors import GatewayError
from gateway.obs.metrics import Metrics
from gateway.peer.auth import PeerSigner
from gateway.peer.client import PeerClient
from gateway.peer.routes import BUFFER_PATH
from gateway.routing.control_table import ControlTableError
from gateway.routing.rules import SWITCHING, Rule
from gateway.switch.coordinator import Outcome, SwitchCoordinator, SwitchError, SwitchProgress

#: Seconds between two views of ``switch status --watch``.
WATCH_INTERVAL = 1.0
#: The steps during which the coordinator waits on the fence and reports progress each second.
WAITING_STEPS = ("fence", "verify")


def peer_client(session: Session) -> PeerClient:
    """The default ``OpenPeers``: signed calls to the fleet's peer APIs with the configured secret."""
    config = session.target.config
    if not config.peer.secret:
        raise CtlError(
            f"no peer secret: switches talk to the gateways' peer API; set {config.peer.secret_env} "
            "(with --local, the cluster's state directory holds it)"
        )
    return PeerClient(config, PeerSigner(config.peer.secret, session.clock), session.clock, Metrics())


def coordinator(session: Session, peers: Any) -> SwitchCoordinator:
    def report(step: str, seconds: float, detail: str) -> None:
        session.say(f"{step:<10} {seconds * 1000:>8.0f} ms  {detail}")

    printed: set[str] = set()

    async def progress(p: SwitchProgress) -> None:
        try:
            await session.control.put_switch_progress(p.scope, p.to_json())
        except ControlTableError:
            pass  # the progress item is advice for `switch status`; the switch goes on without it
        if p.step in WAITING_STEPS and not p.outcome:
            if p.step in printed:  # the first report of a step is its start, not progress
                session.say(f"{p.step:<10} {p.elapsed:>8.1f} s   {progress_text(p)}")
            printed.add(p.step)

    by = getattr(session.args, "by", None) or default_editor()
    return SwitchCoordinator(session.target.config, session.control, peers, session.clock, by=by, report=report,
                             progress=progress)


def progress_text(p: SwitchProgress) -> str:
    return (f"fence: {p.gateways_answered}/{p.gateways_total} gateway(s) of {p.from_region} answered; "
            f"{p.keys_verified}/{p.keys_total} key(s) verified in {p.to_region}")


async def _with_coordinator(session: Session, work: Any) -> Any:
    peers = session.open_peers(session)
    try:
        try:
            return await work(coordinator(session, peers), peers)
        except SwitchError as exc:
            raise CtlError(str(exc)) from None
    finally:
        await peers.close()


# -- switch ------------------------------------------------------------------------------------


async def switch(session: Session) -> int:
    words = session.args.words
    if words[0] in ("abort", "status") and len(words) == 2:
        return await (abort if words[0] == "abort" else status)(session, words[1])
    if len(words) != 1 or words[0] in ("abort", "status"):
        raise CtlError("usage: gatewayctl switch SCOPE --to REGION | gatewayctl switch abort SCOPE | "
                       "gatewayctl switch status SCOPE (`gatewayctl switch --help` says more)")
    scope, to = words[0], session.args.to
    if not to:
        raise CtlError(f"a switch needs --to REGION: gatewayctl switch {scope} --to REGION")
    args = session.args

    async def run(switches: SwitchCoordinator, peers: Any) -> int:
        if args.dry_run:
            return dry_run(session, await switches.dry_run(scope, to, force=args.force))
        rule = await switches.current(scope)
        limit = args.max_duration or session.target.config.switch.max_duration
        session.say(f"switch {scope}: {rule.primary} -> {to} with a fence; its writes are held while it runs "
                    f"(at most {limit:g}s, then it aborts)")
        if not await session.confirmed():
            return 1
        outcome = await switches.switch(scope, to, max_duration=args.max_duration, force=args.force)
        return switched(session, scope, outcome)

    return await _with_coordinator(session, run)


def dry_run(session: Session, checks: list[Any]) -> int:
    failed = [c for c in checks if not c.passed]
    if session.args.json:
        session.emit({"checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
                      "passed": not failed})
    for c in checks:
        session.say(f"{'ok' if c.passed else 'FAIL':<4}  {c.name:<16}  {c.detail}")
    if failed:
        session.say(f"dry run: {len(failed)} of {len(checks)} preflight checks failed; nothing was written")
        return 1
    session.say(f"dry run: all {len(checks)} preflight checks passed; nothing was written")
    return 0


def switched(session: Session, scope: str, outcome: Outcome) -> int:
    if session.args.json:
        session.emit({"rule": outcome.rule.to_json(), "committed": outcome.committed, "seconds": round(outcome.seconds, 3),
                      "detail": outcome.detail})
    if outcome.committed:
        session.say(f"switched {scope} to {outcome.rule.primary} (epoch {outcome.rule.epoch}) in {outcome.seconds:.2f}s")
        return 0
    if outcome.overtaken:
        session.say(f"switch {outcome.detail}")
        return 1
    session.say(f"switch aborted: {outcome.detail}; {outcome.rule.primary} stays primary (epoch {outcome.rule.epoch}); "
                f"`gatewayctl switch {scope} --dry-run --to REGION` checks a new attempt")
    return 1


# -- abort -------------------------------------------------------------------------------------


async def abort(session: Session, scope: str) -> int:
    async def run(switches: SwitchCoordinator, peers: Any) -> int:
        rule = await switches.current(scope)
        if rule.state != SWITCHING:
            raise CtlError(f"{scope} is not switching (state {rule.state}, primary {rule.primary}); nothing to abort "
                           f"(`gatewayctl switch status {scope}` shows its last switch)")
        session.say(f"abort the switch of {scope} to {rule.next_primary} (switch_id {rule.switch_id}): {rule.primary} "
                    f"stays primary at epoch {rule.epoch + 1}; held writes drain to it")
        if not await session.confirmed():
            return 0 if session.args.dry_run else 1
        outcome = await switches.abort(scope)
        if session.args.json:
            session.emit({"rule": outcome.rule.to_json(), "detail": outcome.detail})
        session.say(f"aborted: {scope} is {outcome.rule.state} with {outcome.rule.primary} primary at epoch "
                    f"{outcome.rule.epoch}; a `gatewayctl switch` still running says so and stops")
        return 0

    return await _with_coordinator(session, run)


# -- status ------------------------------------------------------------------------------------


async def status(session: Session, scope: str) -> int:
    """``switch status SCOPE [--watch]``: the rule's switch, its progress, the writes each gateway holds."""
    peers = None
    try:
        peers = session.open_peers(session)
    except CtlError as exc:
        session.say(f"note: {exc}; buffered writes below are each gateway's total (members table)")
    try:
        while True:
            view = await _status(session, scope, peers)
            if session.args.json:
                print(orjson.dumps(view).decode() if session.args.watch else
                      orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
            else:
                print(status_text(view, session.clock.wall_ms()), flush=True)
            if not session.args.watch or view["rule"]["state"] != SWITCHING:
                return 0
            await asyncio.sleep(WATCH_INTERVAL)
            if not session.args.json:
                print()
    finally:
        if peers is not None:
            await peers.close()


async def _status(session: Session, scope: str, peers: Any) -> dict[str, Any]:
    rule = await session.control.rule(scope)
    if not isinstance(rule, Rule):
        raise CtlError(f"no rule for {scope} in {session.control.where()} (`gatewayctl rules list` shows the rules)"
                       if rule is None else f"the rule item of {scope} is malformed ({rule.reason}); "
                       f"`gatewayctl rules delete {scope}` removes it")
    progress = await session.control.switch_progress(scope)
    config = session.target.config
    members = [m for m in await session.control.members(now_us=session.clock.wall_us(), expiry=config.members.expiry)
               if not m.stale]
    buffers = []
    for m in members:
        held = outstanding = None
        if peers is not None and m.peer:
            try:
                answer = await peers.call_address(m.peer, BUFFER_PATH, {"scope": scope}, region=m.region, timeout=1.0)
                held, outstanding = int(answer.get("held", 0)), int(answer.get("outstanding", 0))
            except GatewayError:
                pass  # unreachable: shown as such
        buffers.append({"region": m.region, "instance": m.instance, "held": held, "outstanding": outstanding,
                        "buffer_depth": m.buffer_depth})
    return {"rule": rule.to_json(), "progress": progress, "buffers": buffers, "asked_peers": peers is not None}


def status_text(view: dict[str, Any], now_ms: int) -> str:
    rule, p = view["rule"], view["progress"]
    scope = rule["scope"]
    lines = []
    if rule["state"] == SWITCHING:
        started = rule.get("switch_started_at") or 0
        lines.append(f"{scope}: switching {rule['primary']} -> {rule['next_primary']} (switch_id {rule['switch_id']}, "
                     f"by {rule.get('updated_by') or '-'}), {max(0.0, (now_ms - started) / 1000):.1f} s elapsed")
        if p and p.get("switch_id") == rule["switch_id"]:
            progress = SwitchProgress.from_json(p)
            lines.append(f"step: {progress.step} (reported at {progress.elapsed:.1f} s); {progress_text(progress)}")
        else:
            lines.append("step: not reported (its coordinator keeps no progress item: a scheduled switch, or it died; "
                         f"`gatewayctl switch abort {scope}` ends it)")
    else:
        lines.append(f"{scope} is not switching: {rule['state']}, {rule.get('primary') or '-'} primary at epoch "
                     f"{rule['epoch']} (version {rule['version']})")
        if p:
            ended = p.get("outcome") or "no end reported (its coordinator stopped)"
            lines.append(f"last switch {p.get('switch_id')}: {p.get('from_region')} -> {p.get('to_region')} by "
                         f"{p.get('by')}, {ended} after {p.get('elapsed', 0):.1f} s: {p.get('detail') or '-'}")
    rows = [("region", "instance", "held", "outstanding")]
    for b in view["buffers"]:
        if view["asked_peers"]:
            held = render.NONE if b["held"] is None else str(b["held"])
            outstanding = "unreachable" if b["held"] is None else str(b["outstanding"])
        else:
            held, outstanding = f"{b['buffer_depth']} (all scopes)", render.NONE
        rows.append((b["region"], b["instance"], held, outstanding))
    lines.append("buffered writes per gateway:" if len(rows) > 1 else "buffered writes per gateway: no live gateway")
    if len(rows) > 1:
        lines.append(render.table(rows))
    return "\n".join(lines)


# -- failover ----------------------------------------------------------------------------------


async def failover(session: Session) -> int:
    scope, to, args = session.args.scope, session.args.to, session.args

    async def run(switches: SwitchCoordinator, peers: Any) -> int:
        rule = await switches.current(scope)
        old = rule.primary
        answered, asked = await switches.primary_answers(rule) if old and old != to else (0, 0)
        if answered and not args.force:
            raise CtlError(
                f"{old}, the primary of {scope}, is alive and answering ({answered} of {asked} gateway(s) answered): "
                f"a failover would lose the writes it acknowledged and had not replicated; use "
                f"`gatewayctl switch {scope} --to {to}` (fenced, loses nothing), or pass --force to fail over anyway"
            )
        members = await switches.live()
        window = loss_window_text(SwitchCoordinator.loss_window(rule, to, members), old, to)
        session.say(f"failover of {scope}: {old} -> {to} without a fence; writes {old} acknowledged but had not "
                    f"replicated yet may be lost: {window}")
        if answered:
            session.say(f"note: {old} still answers ({answered} of {asked} gateway(s)); --force fails over anyway")
        if not await session.confirmed():
            return 0 if args.dry_run else 1
        outcome, loss_window = await switches.failover(scope, to)
        if args.json:
            session.emit({"rule": outcome.rule.to_json(), "loss_window_seconds": loss_window})
        session.say(f"{to} is primary of {scope} at epoch {outcome.rule.epoch}; possible loss window: "
                    f"{loss_window_text(loss_window, old, to)}")
        return 0

    return await _with_coordinator(session, run)


def loss_window_text(seconds: float | None, old: str | None, to: str) -> str:
    if seconds is None:
        return f"unknown ({to}'s gateways measured no replication lag from {old})"
    return (f"{seconds:.3f}s (the replication lag from {old} to {to} measured at {old}'s last heartbeat, "
            "just before it stopped answering)")
