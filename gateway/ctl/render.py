"""How ``gatewayctl`` shows things: rule tables, one rule, the diff of an edit, the fleet.

Pure functions from domain values to text or JSON-ready objects; nothing here
reads a table or prints. Absent values show as ``-`` in text and ``null`` in
JSON; times are UTC ISO 8601 in text and integers in JSON (milliseconds, as
the control table stores them), so scripts never parse a rendered date.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.members import MemberRow
from gateway.routing.control_table import Malformed
from gateway.routing.rules import Rule, ScheduleEntry

NONE = "-"

#: Columns of ``rules list``, in order.
RULE_COLUMNS = (
    "scope", "mode", "primary", "epoch", "state", "next_primary", "version", "updated_by", "updated_at",
)

#: Fields an edit can change, in the order the diff shows them.
DIFF_FIELDS = ("mode", "primary", "schedule", "failover", "state", "epoch", "version")


def iso_ms(ms: int | None) -> str:
    if not ms:
        return NONE
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_text(schedule: Sequence[ScheduleEntry]) -> str:
    """The ``--schedule`` syntax, so what is shown can be pasted back."""
    return ",".join(f"{e.at}={e.primary}" for e in schedule) or NONE


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _text(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


# -- rules -------------------------------------------------------------------------------------


def rules_text(rules: Sequence[Rule], malformed: Sequence[Malformed] = ()) -> str:
    lines = []
    if rules:
        rows = [RULE_COLUMNS] + [
            (
                r.scope, r.mode, _text(r.primary), str(r.epoch), r.state, _text(r.next_primary), str(r.version),
                _text(r.updated_by), iso_ms(r.updated_at),
            )
            for r in sorted(rules, key=lambda r: r.scope)
        ]
        lines.append(table(rows))
    else:
        lines.append("no rules")
    if malformed:
        lines.append("")
        lines.append("malformed rule items (gateways ignore them and keep their last good rule):")
        lines += [f"  {m.scope or '(no scope)'}: error: {m.reason}" for m in sorted(malformed, key=_malformed_order)]
    return "\n".join(lines)


def _malformed_order(m: Malformed) -> tuple[str, str]:
    return m.scope, m.key


def malformed_json(malformed: Iterable[Malformed]) -> list[dict[str, Any]]:
    """Malformed items as error objects beside the rules of ``rules list --json`` (``scope`` null if none)."""
    return [{"scope": m.scope or None, "key": m.key or None, "error": m.reason}
            for m in sorted(malformed, key=_malformed_order)]


def failover_text(rule: Rule) -> str:
    """Automatic failover as ``--failover-order``/``--failover-after`` say it."""
    if not rule.failover_order:
        return NONE
    return f"{','.join(rule.failover_order)} after {rule.failover_after:g}s unreachable"


def rule_text(rule: Rule) -> str:
    fields = [
        ("scope", rule.scope), ("mode", rule.mode), ("primary", _text(rule.primary)), ("epoch", str(rule.epoch)),
        ("state", rule.state), ("next_primary", _text(rule.next_primary)), ("switch_id", _text(rule.switch_id)),
        ("switch_started_at", iso_ms(rule.switch_started_at)), ("schedule", schedule_text(rule.schedule)),
        ("failover", failover_text(rule)), ("version", str(rule.version)), ("updated_by", _text(rule.updated_by)), ("updated_at", iso_ms(rule.updated_at)),
    ]
    width = max(len(name) for name, _ in fields) + 1
    return "\n".join(f"{(name + ':').ljust(width)} {value}" for name, value in fields)


def _field(rule: Rule | None, name: str) -> str:
    if rule is None:
        return NONE
    if name == "schedule":
        return schedule_text(rule.schedule)
    if name == "failover":
        return failover_text(rule)
    return _text(getattr(rule, name))


def diff(old: Rule | None, new: Rule | None) -> list[tuple[str, str, str]]:
    """(field, old, new) of every shown field that differs; ``None`` is a rule that does not exist."""
    changes = []
    for name in DIFF_FIELDS:
        before, after = _field(old, name), _field(new, name)
        if before != after:
            changes.append((name, before, after))
    return changes


def diff_text(scope: str, old: Rule | None, new: Rule | None) -> str:
    if old is None:
        head = f"create rule {scope}:"
    elif new is None:
        head = f"delete rule {scope} (version {old.version}):"
    else:
        head = f"edit rule {scope} (version {old.version}):"
    changes = diff(old, new)
    width = max((len(name) for name, _, _ in changes), default=0) + 1
    return "\n".join([head] + [f"  {(name + ':').ljust(width)} {a} -> {b}" for name, a, b in changes])


# -- members -----------------------------------------------------------------------------------


def _pairs(values: dict[str, Any], fmt: str = "{}") -> str:
    return ",".join(f"{k}={fmt.format(v)}" for k, v in sorted(values.items())) or NONE


def members_text(rows: Sequence[MemberRow], *, expiry: float) -> str:
    if not rows:
        return "no members (no gateway has heartbeated into this region's replica)"
    header = ("region", "instance", "peer", "heartbeat_age", "epochs", "replication_lag", "buffer", "status")
    body = [
        (
            m.region, m.instance, _text(m.peer), f"{m.heartbeat_age:.1f}s", _pairs(m.epochs),
            _pairs(m.replication_lag, "{:.3f}s"), str(m.buffer_depth), "stale" if m.stale else "live",
        )
        for m in rows
    ]
    text = table([header, *body])
    stale = sum(m.stale for m in rows)
    if stale:
        text += f"\n\n{stale} stale: no heartbeat for more than members.expiry ({expiry:g}s); they are gone, " \
                "their items wait for the table's TTL"
    return text


def members_json(rows: Iterable[MemberRow]) -> list[dict[str, Any]]:
    return [
        {
            "region": m.region,
            "instance": m.instance,
            "downstream": m.downstream or None,
            "peer": m.peer or None,
            "started_at": m.started_at_ms,
            "heartbeat_age_seconds": round(m.heartbeat_age, 3),
            "epochs": dict(sorted(m.epochs.items())),
            "replication_lag_seconds": dict(sorted(m.replication_lag.items())),
            "buffer_depth": m.buffer_depth,
            "stale": m.stale,
        }
        for m in rows
    ]
