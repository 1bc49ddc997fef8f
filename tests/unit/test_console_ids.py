"""Anomaly ids in console URLs and the card's console buttons."""

import pytest

from monitors.alerts.cards import anomaly_card
from monitors.alerts.samples import sample_anomaly
from monitors.console.ids import anomaly_id, console_url, parse_id, payload_id
from monitors.rules.kinds import KINDS

GLOBAL = "https://graph.microsoft.com"
BASE = "https://func-x.azurewebsites.net"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_sample_anomalys_id_round_trips_and_matches_its_payload(kind):
    anomaly = sample_anomaly(kind)
    aid = anomaly_id(anomaly.kind, anomaly.subject.key)
    assert parse_id(aid) == (anomaly.kind, anomaly.subject.key)
    assert payload_id(anomaly.to_json()) == aid


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "etg_missing",
        "etg_missing.",
        "ETG_MISSING.dGVuYW50",
        "etg_missing.dGVuYW50=",  # padding is never part of an id
        "etg_missing.dGVuYW50/x",
        "../etc.dGVuYW50",
        "etg_missing.PHNjcmlwdD4",  # "<script>": not a subject key
        "etg_missing." + "A" * 500,
        "etg_missing.dGVuYW50\n",
    ],
)
def test_anything_but_an_id_this_module_made_is_refused(text):
    assert parse_id(text) is None


def test_card_opens_the_console_without_a_function_key_when_the_base_url_is_set():
    anomaly = sample_anomaly("etg_missing")
    card = anomaly_card(anomaly.to_json(), "opened", GLOBAL, BASE)
    urls = {a["title"]: a["url"] for a in card["actions"]}
    page = f"{BASE}/api/console/anomalies/{anomaly_id(anomaly.kind, anomaly.subject.key)}"
    assert urls["Open in console"] == page and urls["Acknowledge"] == page
    assert all("code=" not in u for u in urls.values())


def test_card_has_no_console_buttons_without_a_base_url():
    card = anomaly_card(sample_anomaly("etg_missing").to_json(), "opened", GLOBAL)
    titles = [a["title"] for a in card["actions"]]
    assert "Open in console" not in titles and "Acknowledge" not in titles
    assert console_url(None, sample_anomaly("etg_missing").to_json()) is None


def test_acknowledged_anomalys_card_only_opens_the_console():
    payload = {**sample_anomaly("etg_late").to_json(), "acknowledged_by": "megan@contoso.com"}
    titles = [a["title"] for a in anomaly_card(payload, "opened", GLOBAL, BASE)["actions"]]
    assert "Open in console" in titles and "Acknowledge" not in titles


def test_dispatcher_plans_cards_with_console_buttons_under_the_base_url():
    from datetime import UTC, datetime

    from monitors.alerts.dispatch import plan_messages
    from monitors.store.outbox import OutboxItem

    payload = sample_anomaly("etg_late").to_json()
    at = datetime(2026, 11, 20, tzinfo=UTC)
    item = OutboxItem("etg_late", "opened", "r1", at, payload, id="i1")
    [planned] = plan_messages([item], 5, GLOBAL, BASE)
    card = planned.payload["attachments"][0]["content"]
    assert any(a["url"].startswith(f"{BASE}/api/console/anomalies/") for a in card["actions"])
