"""The read-only HTML status page: gateways, rules, switches, buffers, replication lag, forwards.

``render`` turns status reports (the body of a gateway's ``GET /status.json``,
gateway/api/status.py) into one page: a gateway's admin listener renders its
own report (its region, and the fleet as its members replica shows it); the
local cluster (``feature-gateway local up``) renders the reports of every
region's gateway on one page. After the pages operators know (Envoy's admin
page, HAProxy's stats page): tables and nothing else, a few lines of CSS, no
script, no external asset (it works offline), and a ``<meta http-equiv=refresh>``
so it refreshes by itself.

Invariant: every value on the page passes through ``_e`` (``html.escape``,
quotes included) exactly once, and nothing else is interpolated into the markup.
Rule scopes, instance ids and error texts are data a user or a peer wrote: a
scope named ``<script>`` shows as text, never as markup.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Seconds between two refreshes of the page.
REFRESH_SECONDS = 2

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.2em 0}th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#0a6b0a}.bad{color:#b00020;font-weight:600}.warn{color:#a15c00}.muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _cell(value: Any, css: str = "") -> str:
    return f'<td class="{_e(css)}">{_e(value)}</td>' if css else f"<td>{_e(value)}</td>"


def _table(table_id: str, head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``rows`` are already cells (``_cell``); ``head`` is escaped here."""
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return (f'<table id="{_e(table_id)}"><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(
    reports: Mapping[str, Mapping[str, Any] | None],
    *,
    title: str,
    problems: Mapping[str, str] | None = None,
    now_ms: int | None = None,
    refresh: int = REFRESH_SECONDS,
) -> str:
    """The page of ``reports`` (region -> its gateway's status report, or None with the reason in ``problems``)."""
    problems = problems or {}
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    present = {region: r for region, r in reports.items() if r is not None}
    members = _members(present.values())
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{int(refresh)}">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">generated {_e(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now_ms / 1000)))} UTC; '
        f"refreshes every {int(refresh)} s</p>",
        "<h2>Regions</h2>", _regions(reports, problems),
        "<h2>Gateways</h2>", _gateways(members),
        "<h2>Rules</h2>", _rules(present),
        "<h2>Switches in progress</h2>", _switches(present),
        "<h2>Replication lag</h2>",
        '<p class="muted">seconds; a row is the region that measures, a column the region the changes come from</p>',
        _lag(list(reports), members),
        "<h2>Forwarded writes</h2>", _forwards(present),
        "</body></html>",
    ]
    return "\n".join(parts)


def _members(reports: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every gateway any report's members replica shows, the freshest heartbeat of each."""
    newest: dict[str, Mapping[str, Any]] = {}
    for report in reports:
        for m in report.get("members", []):
            seen = newest.get(m["instance"])
            if seen is None or m["heartbeat_age_seconds"] < seen["heartbeat_age_seconds"]:
                newest[m["instance"]] = m
    return sorted(newest.values(), key=lambda m: (m["region"], m["instance"]))


def _regions(reports: Mapping[str, Mapping[str, Any] | None], problems: Mapping[str, str]) -> str:
    rows = []
    for region, report in reports.items():
        if report is None:
            rows.append([_cell(region), _cell(problems.get(region, "no report"), "bad"), *[_cell(None)] * 4])
            continue
        gw = report["gateway"]
        health = "ready" if gw["ready"] else "not ready: " + "; ".join(gw.get("reasons", []))
        rows.append([
            _cell(region), _cell(health, "ok" if gw["ready"] else "bad"), _cell(report["instance"]),
            _cell(_seconds(gw.get("snapshot_age_seconds")), "n"), _cell(gw.get("buffer_depth", 0), "n"),
            _cell(len(report.get("rules", [])), "n"),
        ])
    return _table("regions", ("region", "health", "reporting gateway", "rules age", "buffered writes", "rules"), rows)


def _gateways(members: Sequence[Mapping[str, Any]]) -> str:
    if not members:
        return '<p id="gateways">no live gateway in the members table</p>'
    rows = []
    for m in members:
        age = m["heartbeat_age_seconds"]
        late = m.get("late_after_seconds")
        css = "warn" if late is not None and age > late else "ok"
        rows.append([
            _cell(m["region"]), _cell(m["instance"]), _cell(m.get("downstream")), _cell(m.get("peer")),
            _cell(_seconds(age), css), _cell("late" if css == "warn" else "live", css), _cell(m.get("buffer_depth", 0), "n"),
        ])
    return _table("gateways", ("region", "instance", "downstream", "peer", "heartbeat age", "health", "buffered"), rows)


def _rules(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per scope, one column per reporting region: the rule as that region's gateway routes by it."""
    regions = list(reports)
    scopes = sorted({r["scope"] for report in reports.values() for r in report.get("rules", [])})
    if not scopes:
        return '<p id="rules">no rules loaded</p>'
    seen = {region: {r["scope"]: r for r in report.get("rules", [])} for region, report in reports.items()}
    rows = []
    for scope in scopes:
        cells = [_cell(scope)]
        for region in regions:
            rule = seen[region].get(scope)
            if rule is None:
                cells.append(_cell("(not loaded)", "warn"))
                continue
            text = f"{rule.get('primary') or 'any region'} @ epoch {rule['epoch']}, {rule['state']}"
            if rule.get("next_primary"):
                text += f" -> {rule['next_primary']}"
            if rule.get("mode") != "single_primary":
                text += f" ({rule.get('mode')})"
            cells.append(_cell(text, "warn" if rule["state"] != "active" else ""))
        rows.append(cells)
    return _table("rules", ("scope", *(f"as {r} sees it" for r in regions)), rows)


def _switches(reports: Mapping[str, Mapping[str, Any]]) -> str:
    switches: dict[tuple[str, str], Mapping[str, Any]] = {}
    for report in reports.values():
        for s in report.get("switches", []):
            key = (s["scope"], s.get("switch_id") or "")
            if key not in switches or (s.get("step") and not switches[key].get("step")):
                switches[key] = s
    if not switches:
        return '<p id="switches">none</p>'
    rows = []
    for s in switches.values():
        fence = "-"
        if s.get("keys_total") is not None:
            fence = (f"{s.get('gateways_answered')}/{s.get('gateways_total')} gateway(s) answered; "
                     f"{s.get('keys_verified')}/{s.get('keys_total')} key(s) verified")
        rows.append([
            _cell(s["scope"]), _cell(f"{s.get('from')} -> {s.get('to')}"), _cell(s.get("switch_id")), _cell(s.get("by")),
            _cell(_seconds(s.get("elapsed_seconds")), "n"), _cell(s.get("step") or "not reported", "warn"), _cell(fence),
        ])
    return _table("switches", ("scope", "primary", "switch id", "by", "elapsed", "step", "fence"), rows)


def _lag(regions: Sequence[str], members: Sequence[Mapping[str, Any]]) -> str:
    measured: dict[tuple[str, str], float] = {}
    for m in members:
        for source, seconds in m.get("replication_lag_seconds", {}).items():
            key = (m["region"], source)
            measured[key] = max(seconds, measured.get(key, 0.0))
    names = sorted(set(regions) | {a for a, _ in measured} | {b for _, b in measured})
    rows = []
    for target in names:
        cells = [_cell(target)]
        for source in names:
            if source == target:
                cells.append(_cell("", "muted"))
            else:
                value = measured.get((target, source))
                cells.append(_cell("-" if value is None else f"{value:.3f}", "n"))
        rows.append(cells)
    return _table("lag", ("measured in \\ from", *names), rows)


def _forwards(reports: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for region, report in reports.items():
        for to_region, outcomes in sorted(report.get("forwards", {}).items()):
            total = sum(outcomes.values())
            # A not_primary answer is a re-route (the write went on to the right region), not a failure.
            errors = outcomes.get("unreachable", 0) + outcomes.get("error", 0)
            rate = f"{100 * errors / total:.1f} %" if total else "-"
            rows.append([
                _cell(region), _cell(to_region), _cell(total, "n"), _cell(outcomes.get("ok", 0), "n"),
                _cell(outcomes.get("not_primary", 0), "n"), _cell(outcomes.get("unreachable", 0), "n"),
                _cell(outcomes.get("error", 0), "n"), _cell(rate, "bad" if errors else "n"),
            ])
    if not rows:
        return '<p id="forwards">no forwards</p>'
    head = ("from", "to", "forwards", "ok", "not_primary", "unreachable", "error", "error rate")
    return _table("forwards", head, rows)
