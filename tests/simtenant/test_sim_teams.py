from __future__ import annotations

import json
from typing import Any

import httpx

from devtools.simtenant import FaultRule, SimulatedTenant


def card_message(text: str = "ETG anomaly") -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "TextBlock", "text": text}],
                },
            }
        ],
    }


def test_teams_webhook_accepts_and_records_a_card(tenant: SimulatedTenant) -> None:
    assert "sig=" in tenant.teams_url and tenant.teams_url.startswith(tenant.base_url + "/teams/")
    payload = json.dumps(card_message()).encode()
    response = httpx.post(
        tenant.teams_url, content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202
    [message] = tenant.teams_messages()
    assert message.card is not None and message.card["type"] == "AdaptiveCard"
    assert message.size == len(payload)
    assert message.received_at == tenant.clock.now()
    recorded = httpx.get(f"{tenant.base_url}/_sim/teams").json()["messages"]
    assert recorded[0]["body"] == card_message()


def test_teams_webhook_requires_the_signature(tenant: SimulatedTenant) -> None:
    unsigned = tenant.teams_url.split("?")[0]
    assert httpx.post(unsigned, json=card_message()).status_code == 401
    assert httpx.post(unsigned + "?sig=wrong", json=card_message()).status_code == 401
    assert tenant.teams_messages() == []


def test_teams_webhook_rejects_oversized_cards(tenant: SimulatedTenant) -> None:
    big = card_message("x" * 28_700)
    response = httpx.post(tenant.teams_url, json=big)
    assert response.status_code == 413
    fits = card_message("x" * 20_000)
    assert httpx.post(tenant.teams_url, json=fits).status_code == 202


def test_teams_webhook_rejects_malformed_json(tenant: SimulatedTenant) -> None:
    response = httpx.post(
        tenant.teams_url, content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_teams_throttling_answers_429_with_retry_after(tenant: SimulatedTenant) -> None:
    tenant.faults.add(FaultRule("teams", status=429, retry_after=2, first_n=1))
    throttled = httpx.post(tenant.teams_url, json=card_message())
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert httpx.post(tenant.teams_url, json=card_message()).status_code == 202
    assert len(tenant.teams_messages()) == 1
    assert tenant.stats()["teams"] == 2


def test_teams_server_error_rule(tenant: SimulatedTenant) -> None:
    tenant.faults.add(FaultRule("teams", status=500, retry_after=None))
    assert httpx.post(tenant.teams_url, json=card_message()).status_code == 500
    assert tenant.teams_messages() == []
