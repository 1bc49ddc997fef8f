"""`make demo` tells the story in order: prevention before any deployment is judged, a dry-run
plan, the automatic fixes and their verification, then the console and the PagerDuty incident."""

from __future__ import annotations

import pytest

from devtools.demo import run_demo

pytestmark = pytest.mark.integration


def _after(text: str, needle: str, start: int) -> int:
    at = text.find(needle, start)
    assert at >= 0, f"{needle!r} missing after position {start}"
    return at


def test_demo_shows_prevention_then_a_dry_run_plan_then_remediation_verified(capsys):
    assert run_demo() == 0
    out = capsys.readouterr().out

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
