"""``gatewayctl rules list|get|set|delete``: read and edit the rule items of the control table (DESIGN.md §5).

Invariants:
- Every edit is a conditional write on what was read: ``attribute_not_exists(pk)``
  to create a rule, ``version = :version`` (the version read, or
  ``--expect-version``) to edit or delete one. Of two edits made from the same
  read, one is written; the other is refused, names who changed the rule, and
  writes nothing.
- Nothing is written without first showing its diff, and without a terminal to
  confirm on nothing is written unless ``--yes`` says so; ``--dry-run`` shows
  the diff and writes nothing.
- A rule is written only if it validates against the config's regions and views
  (``routing.rules.validate``). A rule in the ``switching`` state is never edited or
  deleted here: the switch that set it owns it until it commits or aborts.
- Epochs never go back for a key: a new scope starts one above the epoch of the
  scope that covered its keys until now (its parent) and above any epoch the
  fleet still reports for it (a re-created scope); with neither, at 0.

Conventions: a new rule is version 1, each edit adds 1 (``routing.rules.edited``,
which also bumps the epoch when the primary or the mode changes). The condition is
checked against the chosen region's replica only; global tables settle
concurrent edits made in two regions by last writer wins, so make every edit in
one region. What each edit would write is decided by pure functions
(gateway/ctl/edits.py); how it is shown, by gateway/ctl/render.py.
"""

from __future__ import annotations

import sys

from gateway.ctl import render
from gateway.ctl.edits import (
    check_expected,
    check_regions,
    check_view,
    fallback_note,
    initial_epoch,
    known_regions,
    plan_set,
    refuse_switching,
)
from gateway.ctl.session import CtlError, Session, default_editor
from gateway.routing.control_table import Malformed
from gateway.routing.rules import SINGLE_PRIMARY


async def rules_list(session: Session) -> int:
    rules, malformed = await session.control.rules()
    if not session.args.json:
        print(render.rules_text(rules, malformed))
        return 0
    session.emit([r.to_json() for r in sorted(rules, key=lambda r: r.scope)] + render.malformed_json(malformed))
    for m in sorted(malformed, key=lambda m: (m.scope, m.key)):
        print(f"gatewayctl: malformed rule item {m.scope or m.key}: {m.reason}", file=sys.stderr)
    return 0


async def rules_get(session: Session) -> int:
    rule = await session.control.rule(session.args.scope)
    if isinstance(rule, Malformed):
        raise CtlError(f"the rule item of {rule.scope} is malformed: {rule.reason}; gateways ignore it")
    if rule is None:
        raise CtlError(f"no rule for {session.args.scope} in {session.control.where()}; `gatewayctl rules list` shows them")
    if session.args.json:
        session.emit(rule.to_json())
    else:
        print(render.rule_text(rule))
    return 0


async def rules_set(session: Session) -> int:
    args, config = session.args, session.target.config
    regions = known_regions(config)
    check_view(args.scope, config)
    witnesses = set(regions) - set(config.primary_regions)
    check_regions(args.scope, args.primary, args.schedule, regions, witnesses, args.failover_order or ())
    current = await session.control.rule(args.scope)
    if isinstance(current, Malformed):
        raise CtlError(f"the rule item of {args.scope} is malformed ({current.reason}); "
                       f"delete it first: gatewayctl rules delete {args.scope}")
    if current is not None:
        refuse_switching(current)
    check_expected(args.scope, current, args.expect_version)
    epoch = 0
    if current is None:
        rules, _ = await session.control.rules()
        epoch = initial_epoch(args.scope, rules, await session.control.observed_epochs(args.scope))
    new = plan_set(current, args.scope, primary=args.primary, mode=args.mode, schedule=args.schedule,
                   regions=regions, by=args.by or default_editor(), now_ms=session.clock.wall_ms(), epoch=epoch,
                   failover_order=args.failover_order, failover_after=args.failover_after)
    if new is None:  # only an edit can change nothing
        session.say(f"no change: the rule for {args.scope} already says that (version {current.version if current else '-'})")
        return 0
    session.say(render.diff_text(args.scope, current, new))
    if current is not None and current.mode == SINGLE_PRIMARY and new.primary != current.primary:
        session.say("note: this moves the primary at once, without a fence; writes the old primary acknowledged "
              f"may not have replicated yet (a planned switch fences them: `gatewayctl switch {args.scope} "
              f"--to {new.primary}`)")
    if not await session.confirmed():
        return 0 if args.dry_run else 1
    new = await session.control.put(new, expect=None if current is None else current.version)
    session.say(f"written: {new.scope} version {new.version}, epoch {new.epoch}, {session.control.written()}")
    if args.json:
        session.emit(new.to_json())
    return 0


async def rules_delete(session: Session) -> int:
    scope = session.args.scope
    current = await session.control.rule(scope)
    if current is None:
        raise CtlError(f"no rule for {scope} in {session.control.where()}; nothing to delete "
                       "(`gatewayctl rules list` shows the rules)")
    if isinstance(current, Malformed):
        session.say(f"delete malformed rule item {scope} ({current.reason})")
        if not await session.confirmed():
            return 0 if session.args.dry_run else 1
        await session.control.delete(scope, expect=None)
        session.say(f"deleted: {scope}, {session.control.written()}")
        return 0
    refuse_switching(current)
    check_expected(scope, current, session.args.expect_version)
    rules, _ = await session.control.rules()
    session.say(render.diff_text(scope, current, None))
    session.say(fallback_note(scope, rules))
    if not await session.confirmed():
        return 0 if session.args.dry_run else 1
    await session.control.delete(scope, expect=current.version)
    session.say(f"deleted: {scope} (was version {current.version}, epoch {current.epoch}), {session.control.written()}")
    if session.args.json:
        session.emit(current.to_json())
    return 0
