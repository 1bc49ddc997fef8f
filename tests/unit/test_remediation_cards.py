"""Cards say what remediation did: added automatically, would add (with the command), refused or
deferred with the reason, and resolved as remediated."""

from __future__ import annotations

from datetime import timedelta

from monitors.alerts.cards import anomaly_card
from monitors.alerts.samples import sample_anomaly
from monitors.models import Clear
from monitors.remediation.plan import Decision, Live, cap, judge, screen
from monitors.remediation.record import record
from monitors.rules.lifecycle import reconcile
from tests.unit.test_remediation_plan import T0, group, missing, owner_missing

GLOBAL = "https://graph.microsoft.com"


def texts(card):
    return [b.get("text", "") for b in card["body"] if b["type"] == "TextBlock"]


def card_after(anomaly, mode, outcome=None, *, change="opened", limit=20):
    targets, refused = screen([anomaly], {})
    items = cap([judge(t, Live(group(), False)) for t in targets] + refused, limit)
    anomaly.remediation = record(items[0], mode, T0, outcome)
    return anomaly_card(anomaly.to_json(), change, GLOBAL)


def test_an_automatic_addition_says_added_to_the_etg_automatically_at_the_time():
    from monitors.graph.writes import WriteOutcome, WriteResult

    card = card_after(missing(), "auto", WriteOutcome(WriteResult.DONE, "c-1", "r-1"))
    assert f"Added to the ETG automatically at {T0.isoformat()}." in texts(card)


def test_a_restored_owner_says_so():
    from monitors.graph.writes import WriteOutcome, WriteResult

    card = card_after(owner_missing(), "auto", WriteOutcome(WriteResult.ALREADY, "c-1", "r-1"))
    assert f"Restored the ETG owner automatically at {T0.isoformat()}." in texts(card)


def test_a_dry_run_card_says_what_would_be_done_and_the_command_that_does_it():
    card = card_after(missing("PC-42"), "dry-run")
    assert (
        "etg-monitor would add PC-42 to ETG Sales ETG: run "
        "`etg-monitor remediate --apply --device PC-42`"
    ) in texts(card)


def test_a_refused_item_shows_the_reason():
    from monitors.models import ETG_SOURCE_SETTINGS

    card = card_after(missing(source=ETG_SOURCE_SETTINGS), "auto")
    [line] = [t for t in texts(card) if t.startswith("Remediation refused")]
    assert "known only from the policy's settings" in line


def test_a_deferred_item_shows_the_cap():
    anomalies = [missing(f"PC-{i}", first_seen=T0 + timedelta(minutes=i)) for i in range(2)]
    targets, _ = screen(anomalies, {})
    items = cap([judge(t, Live(group(), False)) for t in targets], 1)
    assert [i.decision for i in items] == [Decision.WRITE, Decision.DEFERRED]
    late = anomalies[1]
    late.remediation = record(items[1], "auto", T0)
    card = anomaly_card(late.to_json(), "opened", GLOBAL)
    assert (
        "Remediation deferred: waits for the next run: the cap of 1 per run was reached"
        in texts(card)
    )


def test_a_resolved_card_says_resolved_as_remediated():
    from monitors.graph.writes import WriteOutcome, WriteResult

    anomaly = missing()
    card_after(anomaly, "auto", WriteOutcome(WriteResult.DONE, "c-1", "r-1"))
    [t] = reconcile({anomaly.key: anomaly}, [Clear(anomaly.kind, anomaly.subject, "late join")], T0)
    card = anomaly_card(t.anomaly.to_json(), "resolved", GLOBAL)
    lines = texts(card)
    assert f"Resolved as remediated: etg-monitor made the change at {T0.isoformat()}." in lines
    assert any(line.startswith("Why it resolved: remediated: added to its ETG") for line in lines)


def test_a_card_without_remediation_has_no_remediation_line():
    card = anomaly_card(sample_anomaly("etg_missing").to_json(), "opened", GLOBAL)
    assert not any(
        "etg-monitor would" in t or "automatically" in t or t.startswith("Remediation")
        for t in texts(card)
    )
