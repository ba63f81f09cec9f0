"""``gatewayctl switch``, ``switch abort``, ``switch status`` and ``failover`` against in-memory tables and peers."""

from __future__ import annotations

import json

import pytest

from tests.unit.ctl.harness import MEMBERS, NOW, RULES, Ctl, FleetPeers, member, rule

SCOPE = "view#items"
NOW_MS = int(NOW * 1000)
ACKED = (("items", "k1", "0.100.us-east-1"), ("items", "k2", "0.101.us-east-1"))


def fleet(ctl: Ctl, *, lag: float = 0.2, sampled: float = 0.35, primary_live: bool = True) -> None:
    """One gateway per region; eu-west-1's lag from us-east-1 is ``lag`` now and was ``sampled`` at its last heartbeat."""
    items = [member("euw1", "eu-west-1", lag={"us-east-1": lag}, sampled={"us-east-1": sampled}),
             member("apse1", "ap-southeast-1", lag={"us-east-1": lag})]
    if primary_live:
        items.append(member("use1", "us-east-1"))
    ctl.store.put(MEMBERS, *items)


@pytest.fixture
def cluster(ctl: Ctl) -> Ctl:
    """A scope last changed long ago, a live fleet whose peers answer, and replication within bounds."""
    ctl.seed(rule(SCOPE, updated_at=NOW_MS - 3_600_000))
    fleet(ctl)
    ctl.peers = FleetPeers(acked=ACKED)
    return ctl


def rule_writes(ctl: Ctl) -> list[tuple[str, str, str]]:
    return [w for w in ctl.store.writes if w[2].startswith("rule#")]


# -- switch ------------------------------------------------------------------------------------


def test_a_switch_without_a_terminal_needs_yes_and_then_commits(cluster: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster("switch", SCOPE, "--to", "eu-west-1") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: stdin is not a terminal to confirm on: nothing was written; pass --yes to apply without asking "
        "(or --dry-run to see what it would do)\n"
    )
    assert cluster.store.writes == []
    assert cluster("switch", SCOPE, "--to", "eu-west-1", "--yes") == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == [
        "switch", "preflight", "switching", "push", "fence", "verify", "commit", "push", "drain", "switched",
    ]
    assert out.splitlines()[-1].startswith("switched view#items to eu-west-1 (epoch 1) in ")
    stored = cluster.stored(SCOPE)
    assert stored is not None and (stored.primary, stored.epoch, stored.state) == ("eu-west-1", 1, "active")
    assert cluster.peers is not None and cluster.peers.closed


def test_a_switch_asks_on_a_terminal(cluster: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    asked = []
    assert cluster("switch", SCOPE, "--to", "eu-west-1", confirm=lambda q: asked.append(q) or False) == 1
    assert asked == ["apply? [y/N] "] and cluster.store.writes == []
    assert capsys.readouterr().out.splitlines() == [
        "switch view#items: us-east-1 -> eu-west-1 with a fence; its writes are held while it runs (at most 5s, "
        "then it aborts)",
        "nothing was written",
    ]


def test_a_dry_run_runs_every_check_and_prints_each_result(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule(SCOPE, updated_at=NOW_MS - 49_000))  # changed 49 s ago; switches are 60 s apart
    fleet(ctl, lag=3.0)  # over switch.max_replication_lag (2 s)
    ctl.peers = FleetPeers()
    assert ctl("switch", SCOPE, "--to", "eu-west-1", "--dry-run") == 1
    assert capsys.readouterr().out.splitlines() == [
        "ok    mode              view#items is single_primary",
        "ok    state             view#items is active",
        "ok    primary           us-east-1 is the primary at epoch 0",
        "ok    target            eu-west-1 is another known region",
        "ok    target gateways   1 live gateway(s) in eu-west-1",
        "ok    primary gateways  1 live gateway(s) in us-east-1 to fence",
        "FAIL  replication lag   replication from us-east-1 to eu-west-1 lags 3.00s (limit 2s); a fence would likely "
        "time out: retry when it has caught up (`gatewayctl members` shows the lag)",
        "FAIL  min interval      view#items last changed 49s ago; switches of a scope are at least 60s apart: "
        "retry in 11 s (or pass --force to switch anyway)",
        "dry run: 2 of 8 preflight checks failed; nothing was written",
    ]
    assert ctl.store.writes == []


def test_a_dry_run_that_passes_exits_0_and_json_lists_the_checks(cluster: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster("--json", "switch", SCOPE, "--to", "eu-west-1", "--dry-run") == 0
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert body["passed"] is True and [c["name"] for c in body["checks"]][-1] == "min interval"
    assert all(c["passed"] for c in body["checks"])
    assert captured.err.splitlines()[-1] == "dry run: all 8 preflight checks passed; nothing was written"
    assert cluster.store.writes == []


def test_an_anti_flap_refusal_says_when_the_switch_will_be_allowed(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule(SCOPE, updated_at=NOW_MS - 49_000))
    fleet(ctl)
    ctl.peers = FleetPeers(acked=ACKED)
    assert ctl("switch", SCOPE, "--to", "eu-west-1", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: view#items last changed 49s ago; switches of a scope are at least 60s apart: retry in 11 s "
        "(or pass --force to switch anyway)\n"
    )
    assert rule_writes(ctl) == []
    assert ctl("switch", SCOPE, "--to", "eu-west-1", "--yes", "--force") == 0


# -- switch status -----------------------------------------------------------------------------


def test_status_after_a_switch_shows_how_it_ended(cluster: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster("switch", SCOPE, "--to", "eu-west-1", "--yes", "--by", "ann@ops") == 0
    capsys.readouterr()
    assert cluster("switch", "status", SCOPE) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "view#items is not switching: active, eu-west-1 primary at epoch 1 (version 3)"
    assert lines[1].startswith("last switch ") and lines[1].endswith(
        ": us-east-1 -> eu-west-1 by ann@ops, committed after 0.0 s: eu-west-1 is primary at epoch 1")


def test_status_shows_a_switch_in_progress_from_any_terminal(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule(SCOPE, state="switching", next_primary="eu-west-1", switch_id="sw1", version=2, updated_by="ann@ops",
                  switch_started_at=NOW_MS - 3_200))
    progress = {"scope": SCOPE, "from_region": "us-east-1", "to_region": "eu-west-1", "switch_id": "sw1", "by": "ann@ops",
                "started_at_ms": NOW_MS - 3_200, "step": "verify", "elapsed": 3.0, "gateways_answered": 1,
                "gateways_total": 1, "keys_verified": 120, "keys_total": 300, "outcome": "", "detail": ""}
    ctl.store.put(RULES, {"pk": {"S": "switch#" + SCOPE}, "progress": {"S": json.dumps(progress)}})
    fleet(ctl)
    ctl.peers = FleetPeers(held=4, down=("ap-southeast-1",))
    assert ctl("switch", "status", SCOPE) == 0
    assert capsys.readouterr().out.splitlines() == [
        "view#items: switching us-east-1 -> eu-west-1 (switch_id sw1, by ann@ops), 3.2 s elapsed",
        "step: verify (reported at 3.0 s); fence: 1/1 gateway(s) of us-east-1 answered; 120/300 key(s) verified in "
        "eu-west-1",
        "buffered writes per gateway:",
        "region          instance  held  outstanding",
        "ap-southeast-1  apse1     -     unreachable",
        "eu-west-1       euw1      4     0",
        "us-east-1       use1      4     0",
    ]


def test_status_watch_ends_when_the_switch_does(ctl: Ctl, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.ctl import switch

    monkeypatch.setattr(switch, "WATCH_INTERVAL", 0.0)
    ctl.seed(rule(SCOPE, state="switching", next_primary="eu-west-1", switch_id="sw1", version=2))
    fleet(ctl)

    class EndsAfterOneLook(FleetPeers):
        async def call_address(self, address, path, body, **kw):
            ctl.seed(rule(SCOPE, "eu-west-1", epoch=1, version=3))  # the switch commits meanwhile
            return await super().call_address(address, path, body, **kw)

    ctl.peers = EndsAfterOneLook()
    assert ctl("switch", "status", SCOPE, "--watch") == 0
    out = capsys.readouterr().out
    assert out.startswith("view#items: switching us-east-1 -> eu-west-1")
    assert "\nview#items is not switching: active, eu-west-1 primary at epoch 1 (version 3)\n" in out


# -- abort -------------------------------------------------------------------------------------


def test_abort_needs_yes_has_a_dry_run_and_says_what_stays(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule(SCOPE, state="switching", next_primary="eu-west-1", switch_id="sw1", version=2, epoch=3))
    fleet(ctl)
    ctl.peers = FleetPeers()
    assert ctl("switch", "abort", SCOPE) == 1
    assert "pass --yes to apply without asking" in capsys.readouterr().err
    assert ctl("switch", "abort", SCOPE, "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        "abort the switch of view#items to eu-west-1 (switch_id sw1): us-east-1 stays primary at epoch 4; held "
        "writes drain to it",
        "dry run: nothing was written (without --dry-run, this applies)",
    ]
    assert rule_writes(ctl) == []
    assert ctl("switch", "abort", SCOPE, "--yes", "--by", "bob@ops") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "aborted: view#items is active with us-east-1 primary at epoch 4; a `gatewayctl switch` still running says "
        "so and stops"
    )


# -- failover ----------------------------------------------------------------------------------


def test_failover_of_a_primary_that_answers_points_to_switch(cluster: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster("failover", SCOPE, "--to", "eu-west-1", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: us-east-1, the primary of view#items, is alive and answering (1 of 1 gateway(s) answered): a "
        "failover would lose the writes it acknowledged and had not replicated; use `gatewayctl switch view#items "
        "--to eu-west-1` (fenced, loses nothing), or pass --force to fail over anyway\n"
    )
    assert rule_writes(cluster) == []
    assert cluster("failover", SCOPE, "--to", "eu-west-1", "--yes", "--force") == 0
    assert "note: us-east-1 still answers (1 of 1 gateway(s)); --force fails over anyway" in capsys.readouterr().out


def test_failover_reports_the_lag_sampled_before_the_primary_stopped(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule(SCOPE, updated_at=NOW_MS - 3_600_000))
    fleet(ctl, lag=42.0, sampled=0.35)  # the primary went quiet 42 s ago; at its last heartbeat the lag was 0.35 s
    ctl.peers = FleetPeers(down=("us-east-1",))
    assert ctl("failover", SCOPE, "--to", "eu-west-1", "--dry-run") == 0
    assert rule_writes(ctl) == []
    capsys.readouterr()
    assert ctl("failover", SCOPE, "--to", "eu-west-1", "--yes") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "eu-west-1 is primary of view#items at epoch 1; possible loss window: 0.350s (the replication lag from "
        "us-east-1 to eu-west-1 measured at us-east-1's last heartbeat, just before it stopped answering)"
    )


# -- every refusal names what to do next -------------------------------------------------------


def _switching(ctl: Ctl) -> None:
    ctl.seed(rule(SCOPE, state="switching", next_primary="eu-west-1", switch_id="sw1", version=2))


def _recent(ctl: Ctl) -> None:
    ctl.seed(rule(SCOPE, updated_at=NOW_MS - 49_000))


def _lagging(ctl: Ctl) -> None:
    ctl.store.put(MEMBERS, member("euw1", "eu-west-1", lag={"us-east-1": 3.0}))


def _no_target(ctl: Ctl) -> None:
    del ctl.store.tables[MEMBERS]["euw1"]


def _no_primary(ctl: Ctl) -> None:
    del ctl.store.tables[MEMBERS]["use1"]


def _any_region(ctl: Ctl) -> None:
    ctl.seed(rule(SCOPE, None, mode="any_region", updated_at=1))


REFUSALS = [
    (None, ["rules", "set", "view#users", "--primary", "eu-west-1"], "pass --yes to apply without asking"),
    (None, ["rules", "get", "view#users"], "`gatewayctl rules list` shows them"),
    (None, ["rules", "delete", "view#users", "--yes"], "(`gatewayctl rules list` shows the rules)"),
    (None, ["rules", "set", "view#users"], "--primary REGION is required to create it"),
    (None, ["rules", "set", "view#users", "--primary", "mars", "--yes"], "use one of them"),
    (None, ["rules", "set", "view#orders", "--primary", "eu-west-1", "--yes"], "use one of them, or add [views.orders]"),
    (None, ["rules", "set", SCOPE, "--primary", "eu-west-1", "--expect-version", "3", "--yes"],
     "expected version 3, found version 1 (by ann@ops); nothing was written — `gatewayctl rules get view#items` "
     "shows it; edit again with --expect-version 1"),
    (_switching, ["rules", "set", SCOPE, "--primary", "ap-southeast-1", "--yes"], "`gatewayctl switch abort view#items`"),
    (None, ["switch", SCOPE], "a switch needs --to REGION: gatewayctl switch view#items --to REGION"),
    (None, ["switch", "view#users", "--to", "eu-west-1", "--yes"], "create one with `gatewayctl rules set view#users"),
    (None, ["switch", SCOPE, "--to", "us-east-1", "--yes"], "nothing to switch (pick another region with --to)"),
    (None, ["switch", SCOPE, "--to", "mars", "--yes"], "pick one of them with --to"),
    (_recent, ["switch", SCOPE, "--to", "eu-west-1", "--yes"], "retry in 11 s (or pass --force to switch anyway)"),
    (_lagging, ["switch", SCOPE, "--to", "eu-west-1", "--yes"], "retry when it has caught up"),
    (_no_target, ["switch", SCOPE, "--to", "eu-west-1", "--yes"], "start them, or pick another --to"),
    (_no_primary, ["switch", SCOPE, "--to", "eu-west-1", "--yes"], "use `gatewayctl failover view#items --to eu-west-1`"),
    (_switching, ["switch", SCOPE, "--to", "ap-southeast-1", "--yes"], "run `gatewayctl switch abort view#items`"),
    (None, ["switch", "abort", SCOPE, "--yes"], "(`gatewayctl switch status view#items` shows its last switch)"),
    (None, ["switch", "status", "view#users"], "(`gatewayctl rules list` shows the rules)"),
    (None, ["failover", SCOPE, "--to", "eu-west-1", "--yes"], "use `gatewayctl switch view#items --to eu-west-1`"),
    (None, ["failover", SCOPE, "--to", "us-east-1", "--yes"], "nothing to fail over"),
    (_any_region, ["failover", SCOPE, "--to", "eu-west-1", "--yes"], "every region takes its writes"),
]


@pytest.mark.parametrize(("setup", "argv", "next_step"), REFUSALS, ids=[" ".join(r[1]) for r in REFUSALS])
def test_every_refusal_is_one_line_that_names_what_to_do_next(
    cluster: Ctl, setup, argv: list[str], next_step: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if setup is not None:
        setup(cluster)
    before = rule_writes(cluster)
    assert cluster(*argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("gatewayctl: ") and err.count("\n") == 1 and next_step in err, err
    assert rule_writes(cluster) == before


def test_without_a_peer_secret_switches_are_refused_with_where_to_set_it(ctl: Ctl, capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FGW_PEER_SECRET", raising=False)
    ctl.seed(rule(SCOPE))
    assert ctl("switch", SCOPE, "--to", "eu-west-1", "--yes") == 1
    assert "no peer secret: switches talk to the gateways' peer API; set FGW_PEER_SECRET" in capsys.readouterr().err
