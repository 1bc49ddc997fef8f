"""Cards are checked structurally: fields on-call needs, size limits, buttons, clouds."""

import json
import re
from pathlib import Path

import pytest

from monitors.alerts.cards import (
    MAX_MESSAGE_BYTES,
    anomaly_card,
    digest_card,
    fit,
    message,
    size_of,
)
from monitors.alerts.dispatch import plan_messages
from monitors.alerts.samples import sample_anomaly
from monitors.rules.kinds import KINDS, Severity, severity_rank
from monitors.store.outbox import OutboxItem

GLOBAL = "https://graph.microsoft.com"


def texts(card):
    return " ".join(b.get("text", "") for b in card["body"] if b["type"] == "TextBlock")


def facts(card):
    return {
        f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_a_valid_card_with_what_where_and_what_to_do(kind):
    card = anomaly_card(sample_anomaly(kind).to_json(), "opened", GLOBAL)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["weight"] == "Bolder"
    assert "What to do:" in texts(card)
    payload = message(card)
    assert payload["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert size_of(payload) < MAX_MESSAGE_BYTES
    json.dumps(payload)  # serialisable


def _runbook_anchors():
    """The anchors a Markdown renderer gives docs/runbook.md's headings."""
    text = (Path(__file__).parents[2] / "docs" / "runbook.md").read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_links_a_runbook_section_that_exists(kind):
    path, _, anchor = KINDS[kind].runbook.partition("#")
    assert path == "docs/runbook.md"
    assert anchor in _runbook_anchors()


def test_severity_ranks_critical_first_and_unknown_kinds_last():
    assert [s.rank for s in Severity] == list(range(len(Severity)))
    assert severity_rank("etg_owner_missing") == Severity.CRITICAL.rank == 0
    assert severity_rank("etg_owner_missing") < severity_rank("etg_missing")
    assert all(severity_rank(k) < severity_rank("no_such_kind") for k in KINDS)
    ordered = sorted(["etg_late", "no_such_kind", "provisioning_client_missing"], key=severity_rank)
    assert ordered == ["provisioning_client_missing", "etg_late", "no_such_kind"]


def test_opened_card_shows_severity_and_names_the_runbook_section():
    card = anomaly_card(sample_anomaly("etg_owner_missing").to_json(), "opened", GLOBAL)
    assert facts(card)["Severity"] == "critical"
    assert "docs/runbook.md#etg_owner_missing" in texts(card)
    device = anomaly_card(sample_anomaly("etg_late").to_json(), "opened", GLOBAL)
    assert facts(device)["Severity"] == "high"


def test_device_card_shows_evidence_and_opens_device_and_group():
    card = anomaly_card(sample_anomaly("etg_missing").to_json(), "opened", GLOBAL)
    f = facts(card)
    assert f["Device"] == "CTSO-J5NB1GX" and f["User"] == "megan.bowen@contoso.com"
    assert f["Joined ETG"] == "never"
    assert f["Enrolled"] and f["Provisioning completed"]
    urls = [a["url"] for a in card["actions"]]
    assert any(u.startswith("https://intune.microsoft.com/") and "mdmDeviceId" in u for u in urls)
    assert any(u.startswith("https://entra.microsoft.com/") and "groupId" in u for u in urls)


def test_late_card_states_the_gap():
    card = anomaly_card(sample_anomaly("etg_late").to_json(), "opened", GLOBAL)
    assert facts(card)["Late by"] == "25 min 0 s"


@pytest.mark.parametrize(
    "endpoint,intune,entra",
    [
        (
            "https://graph.microsoft.us",
            "https://intune.microsoft.us/",
            "https://entra.microsoft.us/",
        ),
        (
            "https://dod-graph.microsoft.us",
            "https://intune.microsoft.us/",
            "https://entra.microsoft.us/",
        ),
        (
            "https://microsoftgraph.chinacloudapi.cn",
            "https://intune.microsoft.cn/",
            "https://entra.microsoft.cn/",
        ),
    ],
)
def test_national_clouds_link_to_their_own_portals(endpoint, intune, entra):
    card = anomaly_card(sample_anomaly("etg_missing").to_json(), "opened", endpoint)
    urls = [a["url"] for a in card["actions"]]
    assert urls[0].startswith(intune) and urls[1].startswith(entra)


def test_policy_level_card_says_every_enrollment_is_affected():
    card = anomaly_card(sample_anomaly("etg_owner_missing").to_json(), "opened", GLOBAL)
    assert "every enrollment" in texts(card)


def test_resolved_card_says_why():
    data = sample_anomaly("etg_missing").to_json()
    data["history"].append({"at": "x", "status": "resolved", "why": "joined the ETG at T"})
    card = anomaly_card(data, "resolved", GLOBAL)
    assert card["body"][0]["text"].startswith("Resolved:")
    assert "joined the ETG at T" in texts(card)


def test_oversized_card_is_trimmed_not_dropped():
    data = sample_anomaly("payload_incomplete").to_json()
    data["explanation"] = "x" * 40000
    card = anomaly_card(data, "opened", GLOBAL)
    assert size_of(message(card)) <= MAX_MESSAGE_BYTES
    assert card["body"][0]["text"].startswith("Apps or scripts")
    huge = fit(
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "actions": [],
            "body": [
                {"type": "TextBlock", "text": "title"},
                *[
                    {
                        "type": "FactSet",
                        "facts": [{"title": f"t{i}", "value": "v" * 150} for i in range(40)],
                    }
                    for _ in range(20)
                ],
            ],
        }
    )
    assert size_of(message(huge)) <= MAX_MESSAGE_BYTES
    assert huge["body"][0]["text"] == "title"


def _incomplete_card(name_chars):
    """The card for a judged deployment whose policy's 25 apps and 10 scripts all failed."""
    from monitors.models import Finding
    from monitors.rules.enrollment import judge
    from tests.unit import test_enrollment_rules as case

    payload = case.full_policy_payload(name_chars=name_chars)
    judged = judge(case.facts([case.add(-10)], payload=payload), case.NOW)
    finding = next(v for v in judged.verdicts if isinstance(v, Finding))
    data = sample_anomaly("payload_incomplete").to_json()
    data["explanation"], data["evidence"] = finding.explanation, finding.evidence
    return anomaly_card(data, "opened", GLOBAL), payload[1:]


def _listed(card):
    return [
        (f["title"], f["value"])
        for b in card["body"]
        if b["type"] == "FactSet"
        for f in b["facts"]
        if f["value"].startswith(("App ·", "Script ·"))
    ]


@pytest.mark.parametrize("name_chars", [60, 250, 1000])
def test_incomplete_payload_card_names_every_item_and_fits(name_chars):
    card, bad = _incomplete_card(name_chars)
    assert size_of(message(card)) <= MAX_MESSAGE_BYTES
    listed = _listed(card)
    assert len(listed) == len(bad) == 35
    # Long names may be shortened to fit, never dropped: each keeps its distinguishing start.
    for (title, value), item in zip(listed, bad, strict=True):
        assert item.name.startswith(title) and len(title) >= min(len(item.name), 80)
        assert value == f"{'App' if item.kind == 'app' else 'Script'} · Failed"
    assert "What to do:" in texts(card)


def test_incomplete_payload_card_lists_only_what_did_not_install():
    data = sample_anomaly("payload_incomplete").to_json()
    data["evidence"]["items"] = [
        {"kind": "app", "id": "a1", "name": "Company Portal", "status": "Installed"},
        {"kind": "app", "id": "a2", "name": "Contoso VPN Client", "status": "Skipped"},
        {"kind": "script", "id": "s1", "name": "Set time zone", "status": "In progress"},
    ]
    card = anomaly_card(data, "opened", GLOBAL)
    assert _listed(card) == [("Contoso VPN Client", "App · Skipped")]


def _item(kind, scope="device", run="r1", change="opened", n=0):
    payload = sample_anomaly(kind).to_json()
    payload["scope"] = scope
    payload["device_name"] = f"PC-{n}"
    from datetime import UTC, datetime

    return OutboxItem(kind, change, run, datetime(2026, 11, 20, tzinfo=UTC), payload, id=f"i{n}")


def test_at_threshold_each_anomaly_gets_its_own_card():
    items = [_item("etg_missing", n=i) for i in range(5)]
    assert len(plan_messages(items, 5, GLOBAL)) == 5


def test_digest_counts_the_most_severe_kind_first_when_counts_tie():
    kinds = ("monitor_job_failing", "provisioning_client_missing")
    card = digest_card([sample_anomaly(k).to_json() for k in kinds], "opened", GLOBAL)
    by_kind = next(b for b in card["body"] if b["type"] == "FactSet")
    assert [f["title"] for f in by_kind["facts"]] == [
        "provisioning_client_missing",
        "monitor_job_failing",
    ]


def test_above_threshold_one_digest_with_policy_level_problems_first():
    items = [_item("etg_missing", n=i) for i in range(6)]
    items.append(_item("etg_owner_missing", scope="policy", n=99))
    [digest] = plan_messages(items, 5, GLOBAL)
    assert len(digest.items) == 7
    card = digest.payload["attachments"][0]["content"]
    text = texts(card)
    assert card["body"][0]["text"] == "7 ETG anomalies opened"
    assert text.index("Policy-level problems first") < text.index("First devices")
    assert facts(card)["etg_missing"] == "6"


def test_openings_and_resolutions_of_one_run_are_planned_separately():
    items = [_item("etg_missing", n=i) for i in range(3)]
    items += [_item("etg_late", change="resolved", n=10 + i) for i in range(3)]
    assert len(plan_messages(items, 2, GLOBAL)) == 2


def test_digest_lists_a_few_devices_and_says_how_to_see_the_rest():
    card = digest_card([sample_anomaly("etg_late").to_json()] * 30, "opened", GLOBAL)
    assert "and 22 more" in texts(card)
    assert size_of(message(card)) <= MAX_MESSAGE_BYTES
