"""``GraphClient.post_json``, the $batch path below the SDK's middleware, keeps what the
middleware gave the SDK path: the bearer token, the request count, retries of a throttled
answer within the retry budget, and Graph's status and error code on a refusal."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AccessToken

from monitors.graph.client import GraphClient
from monitors.graph.errors import GraphCallError, classify
from monitors.models import UnverifiedReason
from tests.helpers import loopback_settings, serving

Answer = tuple[int, dict[str, str], Any]
OK: Answer = (200, {}, {"responses": []})


class Credential:
    """An azure-identity-shaped credential handing out one token."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-1", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


def post(
    answers: list[Answer],
    *,
    retries: int = 3,
    budget: float = 60.0,
    credential: Credential | None = None,
) -> tuple[Any, list[web.Request], GraphClient]:
    """POST one body to a loopback server answering ``answers`` in turn (then 200)."""
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        status, headers, body = answers.pop(0) if answers else OK
        if isinstance(body, bytes):
            return web.Response(status=status, headers=headers, body=body)
        return web.json_response(body, status=status, headers=headers)

    async def main() -> tuple[Any, GraphClient]:
        app = web.Application()
        app.router.add_post("/v1.0/$batch", handle)
        async with serving(app) as base:
            settings = loopback_settings(
                base,
                graph_credential="none" if credential is None else "default",
                graph_max_retries=retries,
            )
            async with GraphClient(
                settings, credential=credential, retry_budget_seconds=budget
            ) as graph:
                try:
                    return await graph.post_json(graph.v1("$batch"), {"requests": []}), graph
                except GraphCallError as exc:
                    return exc, graph

    answer, graph = asyncio.run(main())
    return answer, seen, graph


def throttled(after: str = "0") -> Answer:
    return (429, {"Retry-After": after}, {"error": {"code": "TooManyRequests", "message": "slow"}})


def test_a_throttled_batch_is_sent_again_and_every_attempt_is_counted() -> None:
    answer, seen, graph = post([throttled(), throttled(), (200, {}, {"responses": [{"id": "0"}]})])
    assert answer == {"responses": [{"id": "0"}]}
    assert len(seen) == 3
    assert graph.counts["POST /v1.0/$batch"] == 3
    # each attempt is its own request for Graph's support staff
    assert len({r.headers["client-request-id"] for r in seen}) == 3


def test_throttling_past_the_retries_is_a_throttled_failure() -> None:
    answer, seen, _ = post([throttled()] * 5, retries=2)
    assert isinstance(answer, GraphCallError)
    assert (answer.status, answer.code) == (429, "TooManyRequests")
    assert classify(answer) is UnverifiedReason.THROTTLED
    assert len(seen) == 3  # the first try and two retries


def test_a_wait_longer_than_the_retry_budget_is_not_waited() -> None:
    started = time.monotonic()
    answer, seen, graph = post([throttled("30")], budget=5.0)
    assert isinstance(answer, GraphCallError) and answer.status == 429
    assert len(seen) == 1
    assert time.monotonic() - started < 5.0
    assert graph.budget.remaining == 5.0


def test_a_refusal_keeps_graphs_status_code_and_message() -> None:
    refusal = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient"}}
    answer, seen, _ = post([(403, {}, refusal)])
    assert isinstance(answer, GraphCallError)
    assert (answer.status, answer.code, str(answer)) == (
        403,
        "Authorization_RequestDenied",
        "Insufficient",
    )
    assert classify(answer) is UnverifiedReason.FORBIDDEN
    assert len(seen) == 1  # a refusal is not retried


@pytest.mark.parametrize("body", [b"", b"<html>bad gateway</html>", b'{"error": "text"}'])
def test_a_failure_without_a_graph_error_object_still_names_its_status(body: bytes) -> None:
    answer, _, _ = post([(502, {}, body)])
    assert isinstance(answer, GraphCallError)
    assert (answer.status, answer.code) == (502, None)
    assert "502" in str(answer)


def test_the_credentials_bearer_token_is_sent_for_the_graph_scope() -> None:
    credential = Credential()
    _, seen, graph = post([throttled(), OK], credential=credential)
    assert [r.headers["Authorization"] for r in seen] == ["Bearer token-1"] * 2
    assert credential.scopes and set(credential.scopes) == {(graph.settings.graph_scope,)}


def test_a_success_that_is_not_json_raises_what_callers_report_as_malformed() -> None:
    with pytest.raises(json.JSONDecodeError) as raised:
        post([(200, {}, b"not json")])
    assert classify(raised.value) is UnverifiedReason.MALFORMED
