"""The status page renders every part of a report and escapes every value (gateway/obs/status_page.py)."""

from __future__ import annotations

from html.parser import HTMLParser

from gateway.obs.status_page import render

HOSTILE = '<script>alert("x")</script>'


def report(region: str, **overrides) -> dict:
    body = {
        "region": region,
        "instance": f"{region}/host/1/abc",
        "generated_at_ms": 1_700_000_000_000,
        "gateway": {"ready": True, "reasons": [], "snapshot_age_seconds": 0.1, "buffer_depth": 3},
        "rules": [
            {"scope": "view#users", "mode": "single_primary", "primary": "us-east-1", "epoch": 4, "state": "active"},
            {"scope": "view#items", "mode": "single_primary", "primary": "us-east-1", "epoch": 1, "state": "switching",
             "next_primary": "eu-west-1", "switch_id": "s1"},
        ],
        "switches": [{"scope": "view#items", "from": "us-east-1", "to": "eu-west-1", "switch_id": "s1", "by": "ann",
                      "elapsed_seconds": 1.5, "step": "verify", "gateways_answered": 1, "gateways_total": 1,
                      "keys_verified": 62, "keys_total": 80}],
        "forwards": {"us-east-1": {"ok": 9, "not_primary": 0, "unreachable": 1, "error": 0}},
        "members": [{"region": region, "instance": f"{region}/host/1/abc", "downstream": "d", "peer": "p",
                     "heartbeat_age_seconds": 0.05, "late_after_seconds": 0.4, "buffer_depth": 3,
                     "replication_lag_seconds": {"us-east-1": 0.25}}],
    }
    body.update(overrides)
    return body


class Collect(HTMLParser):
    """The page as a browser parses it: its elements and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collect:
    parser = Collect()
    parser.feed(page)
    return parser


def test_the_page_shows_rules_per_region_switch_steps_lag_matrix_and_forward_error_rates():
    page = render({"eu-west-1": report("eu-west-1"), "ap-southeast-1": None},
                  title="cluster", problems={"ap-southeast-1": "stopped (local fault)"})
    text = " ".join(parse(page).text)
    assert '<meta http-equiv="refresh" content="2">' in page  # refreshes by itself
    assert "us-east-1 @ epoch 4, active" in text
    assert "us-east-1 @ epoch 1, switching -> eu-west-1" in text
    assert "verify" in text and "62/80 key(s) verified" in text
    assert "0.250" in text  # eu-west-1 measures 0.25 s from us-east-1
    assert "10.0 %" in text  # one unreachable forward in ten
    assert "stopped (local fault)" in text
    assert "src=" not in page and "href=" not in page  # no external asset


def test_every_value_is_text_never_markup():
    hostile = report(
        "eu-west-1", instance=HOSTILE,
        rules=[{"scope": HOSTILE, "mode": "single_primary", "primary": "us-east-1", "epoch": 0, "state": "active"}],
        switches=[{"scope": HOSTILE, "from": "a", "to": "b", "switch_id": '"><b>', "by": HOSTILE, "step": HOSTILE}],
    )
    page = render({"eu-west-1": hostile}, title=HOSTILE, problems={})
    parsed = parse(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert parsed.text.count(HOSTILE) >= 4  # title, heading, scope rows, switch
    assert HOSTILE not in page
