"""`make demo` tells the story in order: prevention before any deployment is judged, a dry-run
plan, the automatic fixes and their verification, then the console and the PagerDuty incident.
Then the provider's part: three simulated tenants registered, their scans fanned out on the
queue, each tenant's alerts in its own Teams channel, and one roll-up, worst first."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from devtools.demo import DEMO_TENANTS, run_demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def out() -> str:
    """What `make demo` prints (the demo runs once for every test here: it takes a while)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert run_demo(tenants=3) == 0
    return buffer.getvalue()


def _after(text: str, needle: str, start: int) -> int:
    at = text.find(needle, start)
    assert at >= 0, f"{needle!r} missing after position {start}"
    return at


def test_demo_shows_prevention_then_a_dry_run_plan_then_remediation_verified(out):
    first_check = _after(out, "etg-monitor check-config, before any deployment is judged", 0)
    first_scan = _after(out, "=== etg-monitor scan", first_check)
    # The unassigned app is caught by the configuration check, before the first scan.
    assert "[payload_not_ready]" in out[first_check:first_scan]
    assert "Contoso VPN Client" in out[first_check:first_scan]

    plan = _after(out, "Remediation plan (nothing is written), mode dry-run", first_scan)
    _after(out, "to apply: etg-monitor remediate --apply --device", plan)

    auto = _after(out, "ETG_REMEDIATION=auto: etg-monitor scan", plan)
    done = _after(out, "DONE      CTSO-", auto)
    _after(out, "DONE      Intune Provisioning Client (owner)", auto)
    verified = _after(out, "an hour later: etg-monitor scan verifies the additions", done)
    _after(out, "remediated: added to its ETG by etg-monitor at", verified)
    owner = _after(out, "etg-monitor check-config confirms the restored ETG owner", verified)
    _after(out, "resolved etg_owner_missing", owner)
    # The dynamic Engineering ETG is never written to.
    assert "DONE      ENG-" not in out

    console = _after(out, "the operator console, served by the function app", owner)
    _after(out, "/api/console/anomalies -> 200", console)
    _after(out, "/api/console/anomalies/", console)
    pagerduty = _after(out, "what PagerDuty received", console)
    # One incident, opened by the owner anomaly and closed when remediation restored it.
    incidents = out[pagerduty : out.index("what on-call received in Teams")]
    assert incidents.count("[resolved ] critical ETG owner missing: Contoso - Finance") == 1
    assert "[triggered" not in incidents


def _rollup_lines(out: str) -> list[str]:
    start = _after(out, "=== etg-monitor summary --all-tenants", 0)
    end = _after(out, "report written to", start)
    return [line for line in out[start:end].splitlines() if line.startswith("  ") and line.strip()]


def test_demo_fans_three_tenants_out_on_the_queue_and_each_one_alerts_in_its_own_channel(out):
    names = [name for name, _ in DEMO_TENANTS]
    provider = _after(out, "many tenants: one deployment watching 3 customer tenants", 0)
    for name in names:
        _after(out, f"tenant {name} (", provider)  # `etg-monitor tenants add` said it added it
    fanned = _after(out, "the scan timer enqueued 3 messages", provider)
    # Every tenant's scan ran from the queue and judged its own deployments.
    for name in names:
        line = re.search(rf"^  {name}: scan ok, (\d+) deployments judged", out[fanned:], re.M)
        assert line is not None and int(line.group(1)) > 0, name
    channels = out[_after(out, "in that tenant's own Teams channel", fanned) :]
    received = 0
    for name in names:
        # A tenant's channel carries only cards naming that tenant.
        shown = re.search(rf"^  {name}'s channel: (\d+) cards?\n((?:    .*\n)*)", channels, re.M)
        assert shown is not None, name
        cards = [line for line in shown.group(2).splitlines() if "Tenant:" in line]
        received += int(shown.group(1))
        assert all(f"Tenant: {name} (" in line for line in cards), cards
        others = [other for other in names if other != name]
        assert not any(f"Tenant: {other} (" in shown.group(2) for other in others)
    assert received > 0  # the tenants with findings were alerted


def test_demo_prints_one_roll_up_naming_every_tenant_worst_first_and_writes_it_as_html(out):
    lines = _rollup_lines(out)
    names = [name for name, _ in DEMO_TENANTS]
    listed = [line.strip().split(" (", 1)[0] for line in lines]
    assert sorted(listed) == sorted(names)
    rates = [float(re.search(r"\): ([0-9.]+)%", line).group(1)) for line in lines]
    assert rates == sorted(rates)  # worst first
    assert rates[0] < rates[-1]  # the tenants' outcome mixes differ
    written = re.search(r"report written to (\S+rollup\S*\.html)", out)
    assert written is not None
    html = Path(written.group(1)).read_text(encoding="utf-8")
    positions = [html.index(f"<td>{name}</td>") for name in listed]
    assert positions == sorted(positions)  # the same order in the HTML report
