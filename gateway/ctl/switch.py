"""``gatewayctl switch`` / ``switch abort`` / ``failover``: the operator's side of DESIGN.md §7.

The protocol itself is gateway/switch/coordinator.py (``SwitchCoordinator``); this module
wires it to the CLI's target (the control region's tables, signed calls to the
fleet's peer APIs) and prints each step with its duration as it happens.

Exit status: 0 when the switch committed (or a dry run passed preflight), 1
when it was refused or aborted (the message says why, and the scope is active
either way), as for every other gatewayctl failure.
"""

from __future__ import annotations

from gateway.ctl.session import CtlError, Session, default_editor
from gateway.obs.metrics import Metrics
from gateway.peer.auth import PeerSigner
from gateway.peer.client import PeerClient
from gateway.switch.coordinator import SwitchCoordinator, SwitchError


def coordinator(session: Session, peers: PeerClient) -> SwitchCoordinator:
    def report(step: str, seconds: float, detail: str) -> None:
        session.say(f"{step:<10} {seconds * 1000:>8.0f} ms  {detail}")

    by = getattr(session.args, "by", None) or default_editor()
    return SwitchCoordinator(session.target.config, session.control, peers, session.clock, by=by, report=report)


def peer_client(session: Session) -> PeerClient:
    config = session.target.config
    if not config.peer.secret:
        raise CtlError(
            f"no peer secret: switches talk to the gateways' peer API; set {config.peer.secret_env} "
            "(with --local, the cluster's state directory holds it)"
        )
    return PeerClient(config, PeerSigner(config.peer.secret, session.clock), session.clock, Metrics())


async def switch(session: Session) -> int:
    words = session.args.words
    abort = words[0] == "abort"
    if abort and len(words) != 2 or not abort and len(words) != 1:
        raise CtlError("usage: gatewayctl switch SCOPE --to REGION | gatewayctl switch abort SCOPE")
    scope = words[-1]
    if not abort and not session.args.to:
        raise CtlError("a switch needs --to REGION")
    peers = peer_client(session)
    try:
        switches = coordinator(session, peers)
        try:
            if abort:
                outcome = await switches.abort(scope)
            else:
                outcome = await switches.switch(
                    scope, session.args.to, dry_run=session.args.dry_run, max_duration=session.args.max_duration, force=session.args.force
                )
        except SwitchError as exc:
            raise CtlError(str(exc)) from None
    finally:
        await peers.close()
    if session.args.json:
        session.emit({"rule": outcome.rule.to_json(), "committed": outcome.committed, "seconds": round(outcome.seconds, 3),
                "detail": outcome.detail})
    if outcome.committed:
        session.say(f"switched {scope} to {outcome.rule.primary} (epoch {outcome.rule.epoch}) in {outcome.seconds:.2f}s")
        return 0
    if session.args.dry_run and not abort:
        session.say(f"dry run: preflight passed; {outcome.detail}")
        return 0
    session.say(f"{'aborted' if abort else 'switch aborted'}: {outcome.detail}; {outcome.rule.primary} stays primary "
          f"(epoch {outcome.rule.epoch})")
    return 0 if abort else 1


async def failover(session: Session) -> int:
    scope, to = session.args.scope, session.args.to
    current = await session.control.rule(scope)
    if current is None:
        raise CtlError(f"there is no rule for {scope}")
    session.say(f"failover of {scope}: {getattr(current, 'primary', '?')} -> {to} without a fence; writes the old primary "
          "acknowledged but had not replicated yet may be lost")
    if not await session.confirmed():
        return 1
    peers = peer_client(session)
    try:
        try:
            outcome, loss_window = await coordinator(session, peers).failover(scope, to)
        except SwitchError as exc:
            raise CtlError(str(exc)) from None
    finally:
        await peers.close()
    window = "unknown (no replication lag measured)" if loss_window is None else f"{loss_window:.3f}s"
    if session.args.json:
        session.emit({"rule": outcome.rule.to_json(), "loss_window_seconds": loss_window})
    session.say(f"{to} is primary of {scope} at epoch {outcome.rule.epoch}; possible loss window: {window} "
          f"(the replication lag from the old primary when it failed over)")
    return 0
