"""``gatewayctl switch`` / ``switch abort`` / ``failover``: the operator's side of DESIGN.md §7.

The protocol itself is gateway/switch.py (``SwitchCoordinator``); this module
wires it to the CLI's target (the control region's tables, signed calls to the
fleet's peer APIs) and prints each step with its duration as it happens.

Exit status: 0 when the switch committed (or a dry run passed preflight), 1
when it was refused or aborted (the message says why, and the scope is active
either way), as for every other gatewayctl failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.ctl_control import CtlError
from gateway.metrics import Metrics
from gateway.peer import PeerClient
from gateway.peer_auth import PeerSigner
from gateway.switch import SwitchCoordinator, SwitchError

if TYPE_CHECKING:
    from gateway.ctl import Session


def coordinator(s: Session, peers: PeerClient) -> SwitchCoordinator:
    from gateway.ctl import default_editor

    def report(step: str, seconds: float, detail: str) -> None:
        s.say(f"{step:<10} {seconds * 1000:>8.0f} ms  {detail}")

    return SwitchCoordinator(
        s.target.config, s.control, peers, s.clock, by=getattr(s.args, "by", None) or default_editor(), report=report
    )


def peer_client(s: Session) -> PeerClient:
    config = s.target.config
    if not config.peer.secret:
        raise CtlError(
            f"no peer secret: switches talk to the gateways' peer API; set {config.peer.secret_env} "
            "(with --local, the cluster's state directory holds it)"
        )
    return PeerClient(config, PeerSigner(config.peer.secret, s.clock), s.clock, Metrics())


async def switch(s: Session) -> int:
    words = s.args.words
    abort = words[0] == "abort"
    if abort and len(words) != 2 or not abort and len(words) != 1:
        raise CtlError("usage: gatewayctl switch SCOPE --to REGION | gatewayctl switch abort SCOPE")
    scope = words[-1]
    if not abort and not s.args.to:
        raise CtlError("a switch needs --to REGION")
    peers = peer_client(s)
    try:
        c = coordinator(s, peers)
        try:
            if abort:
                outcome = await c.abort(scope)
            else:
                outcome = await c.switch(
                    scope, s.args.to, dry_run=s.args.dry_run, max_duration=s.args.max_duration, force=s.args.force
                )
        except SwitchError as exc:
            raise CtlError(str(exc)) from None
    finally:
        await peers.close()
    if s.args.json:
        s.emit({"rule": outcome.rule.to_json(), "committed": outcome.committed, "seconds": round(outcome.seconds, 3),
                "detail": outcome.detail})
    if outcome.committed:
        s.say(f"switched {scope} to {outcome.rule.primary} (epoch {outcome.rule.epoch}) in {outcome.seconds:.2f}s")
        return 0
    if s.args.dry_run and not abort:
        s.say(f"dry run: preflight passed; {outcome.detail}")
        return 0
    s.say(f"{'aborted' if abort else 'switch aborted'}: {outcome.detail}; {outcome.rule.primary} stays primary "
          f"(epoch {outcome.rule.epoch})")
    return 0 if abort else 1


async def failover(s: Session) -> int:
    scope, to = s.args.scope, s.args.to
    current = await s.control.rule(scope)
    if current is None:
        raise CtlError(f"there is no rule for {scope}")
    s.say(f"failover of {scope}: {getattr(current, 'primary', '?')} -> {to} without a fence; writes the old primary "
          "acknowledged but had not replicated yet may be lost")
    if not await s.confirmed():
        return 1
    peers = peer_client(s)
    try:
        try:
            outcome, loss_window = await coordinator(s, peers).failover(scope, to)
        except SwitchError as exc:
            raise CtlError(str(exc)) from None
    finally:
        await peers.close()
    window = "unknown (no replication lag measured)" if loss_window is None else f"{loss_window:.3f}s"
    if s.args.json:
        s.emit({"rule": outcome.rule.to_json(), "loss_window_seconds": loss_window})
    s.say(f"{to} is primary of {scope} at epoch {outcome.rule.epoch}; possible loss window: {window} "
          f"(the replication lag from the old primary when it failed over)")
    return 0
