"""The status page in a real headless browser (chromium), on the three-region cluster, before and during a switch.

The cluster's page (``local up``'s control endpoint, ``/status``) gathers every region's gateway's
report (its admin listener's ``/status.json``). The test reads the page as the browser renders it and
holds it to what the gateways answer themselves (``/v1/routing``, ``/v1/members``), then starts a planned
switch with ``gatewayctl`` whose fence cannot verify (replication from the old primary to the new one is
paused) and waits for the page, refreshing by itself, to show the switch at its ``verify`` step; then
replication resumes, the switch commits, and the page shows the new primary. A rule scope that is markup
shows as text. The screenshot taken during the switch is kept at ``test-artifacts/status-page.png``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.local.cluster import LocalCluster
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from tests.support.browser import Browser, Page
from tests.support.cluster_http import REGIONS, clear_faults, obeyed_everywhere, put, url

ARTIFACT = Path(__file__).resolve().parents[3] / "test-artifacts" / "status-page.png"
HOSTILE_SCOPE = 'view#items#prefix#<script>document.title="owned"</script>'
#: The scope the test switches, of its own on the session's cluster: the keys it writes start with ``status-``.
SCOPE = "view#items#prefix#status-"

#: The rules table as text: {scope: {region: cell}}.
RULES_JS = """(() => {
  const table = document.querySelector('#rules'); if (!table) return null;
  const regions = [...table.querySelectorAll('thead th')].slice(1).map(th => th.textContent.split(' ')[1]);
  const out = {};
  for (const row of table.querySelectorAll('tbody tr')) {
    const cells = [...row.querySelectorAll('td')].map(td => td.textContent);
    out[cells[0]] = Object.fromEntries(regions.map((r, i) => [r, cells[i + 1]]));
  }
  return out;
})()"""


def rows(table: str) -> str:
    return f"[...document.querySelectorAll('#{table} tbody tr')].map(r => [...r.cells].map(c => c.textContent))"



@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    browser = await Browser.start(tmp_path_factory.mktemp("browser"))
    try:
        yield browser
    finally:
        await browser.stop()


def cell(rule: dict) -> str:
    """A rule as the page shows it: its primary ("any region" for an any_region rule, with its mode) at its epoch."""
    text = f"{rule['primary'] or 'any region'} @ epoch {rule['epoch']}, {rule['state']}"
    text += f" -> {rule['next_primary']}" if rule.get("next_primary") else ""
    return text + (f" ({rule['mode']})" if rule["mode"] != "single_primary" else "")


async def routing(http: aiohttp.ClientSession, cluster: LocalCluster) -> dict[str, dict[str, str]]:
    """{scope: {region: cell}} as every gateway answers ``/v1/routing``."""
    seen: dict[str, dict[str, str]] = {}
    for region in REGIONS:
        async with http.get(f"{url(cluster, region)}/v1/routing") as resp:
            for rule in (await resp.json())["rules"]:
                seen.setdefault(rule["scope"], {})[region] = cell(rule)
    return seen


async def agree_with_gateways(page: Page, http: aiohttp.ClientSession, cluster: LocalCluster) -> None:
    """The page's rules, gateways and lag matrix are the cluster's, as its gateways answer for themselves."""
    # The page was rendered a moment ago and the gateways answer now: poll (bounded) until a refresh agrees.
    deadline = time.monotonic() + 10
    while (shown := await page.evaluate(RULES_JS)) != (expected := await routing(http, cluster)):
        assert time.monotonic() < deadline, f"the page shows rules {shown}, the gateways route by {expected}"
        await asyncio.sleep(0.2)
    instances = set()
    for region in REGIONS:
        async with http.get(f"{url(cluster, region)}/v1/members") as resp:
            instances |= {m["instance"] for m in (await resp.json())["members"]}
    shown = {row[1] for row in await page.evaluate(rows("gateways"))}
    assert shown == instances
    health = {row[0]: row[1] for row in await page.evaluate(rows("regions"))}
    assert health == dict.fromkeys(REGIONS, "ready")
    matrix = await page.evaluate(rows("lag"))
    assert [row[0] for row in matrix] == sorted(REGIONS)
    values = [float(v) for row in matrix for v in row[1:] if v]
    assert len(values) == 6 and all(0 <= v < 5 for v in values), matrix


async def test_the_cluster_page_shows_every_region_and_a_switch_at_its_step(cluster, browser, capsys):
    async with aiohttp.ClientSession() as http:
        rules = [Rule(scope, SINGLE_PRIMARY, "us-east-1", epoch=0, version=1) for scope in (HOSTILE_SCOPE, SCOPE)]
        await cluster.put_rules(rules)
        for rule in rules:
            await obeyed_everywhere(http, cluster, rule, 10)
        async with browser.page() as page:
            await page.goto(f"{cluster.control_url}/status")
            await agree_with_gateways(page, http, cluster)
            # Markup in a rule scope is text: no script element, the scope shown as written, the title untouched.
            assert await page.evaluate("document.querySelectorAll('script').length") == 0
            assert await page.evaluate(f"[...document.querySelectorAll('#rules td')].some(td => "
                                       f"td.textContent === {HOSTILE_SCOPE!r})")
            assert await page.evaluate("document.title") == "Feature Gateway local cluster"
            assert await page.evaluate("document.querySelector('#switches').textContent") == "none"
            # It refreshes by itself.
            loaded = await page.evaluate("performance.timeOrigin")
            await page.wait_for(f"performance.timeOrigin > {loaded}", 10, "the page reloading itself")

            # A switch whose fence waits: what us-east-1 acknowledged cannot reach eu-west-1 until replication resumes.
            # The preflight's lag limit is lifted for it, since the pause makes the measured lag grow.
            assert cluster.emulator is not None
            cluster.emulator.pause("us-east-1", "eu-west-1")
            for i in range(5):  # writes us-east-1 acknowledges: the switch's fence must find them in eu-west-1
                await put(http, cluster, "us-east-1", f"status-{i}", {"n": i})
            switch = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.ctl.main", "--local", "--state-dir", str(cluster.state_dir),
                "switch", SCOPE, "--to", "eu-west-1", "--yes", "--force", "--max-duration", "60",
                env={**os.environ, "FGW_SWITCH__MAX_REPLICATION_LAG": "600"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            try:
                switches = ("[...document.querySelectorAll('#switches tbody tr')].map(r => "
                            "[...r.cells].map(c => c.textContent))")
                shown = await page.wait_for(
                    f"(() => {{ const s = {switches}; return s.length === 1 && s[0][5] === 'verify' && s; }})()",
                    30, f"{SCOPE} switching at its verify step",
                )
                scope, primary, switch_id, _, _, step, fence = shown[0]
                assert (scope, primary, step) == (SCOPE, "us-east-1 -> eu-west-1", "verify")
                assert fence.endswith("key(s) verified"), fence
                # The page's switch is the one the gateways route by: same switch_id, every region switching.
                async with http.get(f"{url(cluster, 'us-east-1')}/v1/routing") as resp:
                    rule = next(r for r in (await resp.json())["rules"] if r["scope"] == SCOPE)
                assert (rule["state"], rule["switch_id"]) == ("switching", switch_id)
                await page.wait_for(
                    f"Object.values({RULES_JS}[{SCOPE!r}]).every(c => c === 'us-east-1 @ epoch 0, switching -> eu-west-1')",
                    10, f"every region holding {SCOPE}'s writes for eu-west-1",
                )
                path = await page.screenshot(ARTIFACT)
                with capsys.disabled():
                    print(f"\nstatus page screenshot (a switch at its verify step): {path}")
            finally:
                cluster.emulator.resume("us-east-1", "eu-west-1")
                output, _ = await asyncio.wait_for(switch.communicate(), 90)
            assert switch.returncode == 0, output.decode()
            await page.wait_for(
                f"Object.values({RULES_JS}[{SCOPE!r}]).every(c => c === 'eu-west-1 @ epoch 1, active') && "
                "document.querySelector('#switches').textContent === 'none'",
                15, f"{SCOPE} active with eu-west-1 primary everywhere, no switch in progress",
            )
            await agree_with_gateways(page, http, cluster)

            # A gateway's own page, on its admin listener: its region, the same rules as it routes by them.
            admin = cluster.regions["eu-west-1"].config.admin_listen
            await page.goto(f"http://{admin}/status")
            assert await page.evaluate("document.querySelector('h1').textContent") == "Feature Gateway eu-west-1"
            assert (await page.evaluate(RULES_JS))[SCOPE] == {"eu-west-1": "eu-west-1 @ epoch 1, active"}
    await clear_faults(cluster)
