"""JSON $batch: up to 20 requests per round trip, each throttled and retried on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monitors.graph.client import GraphClient
from monitors.graph.errors import GraphCallError, MalformedResponse
from monitors.retry import retry_after_seconds

BATCH_LIMIT = 20
# Graph asks for seconds to minutes; anything longer is capped by the retry budget anyway.
MAX_RETRY_AFTER = 3600.0
RETRYABLE = {429, 503, 504}
WRITE_METHODS = {"POST", "PATCH", "PUT"}


@dataclass(frozen=True, slots=True)
class BatchItem:
    method: str
    url: str  # relative to the version root, e.g. "/devices?$filter=..."
    body: Any = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    status: int
    body: Any

    def json(self) -> dict[str, Any]:
        if 200 <= self.status < 300 and isinstance(self.body, dict):
            return self.body
        code = None
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
        raise GraphCallError(self.status, code, f"batched request failed with {self.status}")


def _retry_after(headers: Any) -> float:
    if isinstance(headers, dict):
        for key, value in headers.items():
            if str(key).lower() == "retry-after":
                return retry_after_seconds(value, default=1.0, floor=0.0, cap=MAX_RETRY_AFTER)
    return 1.0


async def send_batch(
    graph: GraphClient, items: Sequence[BatchItem], *, max_rounds: int = 6, beta: bool = False
) -> list[BatchResult]:
    """Send items in $batch requests of 20, concurrently; retry throttled items only. A batch
    runs against one API version, so beta items go to the beta $batch."""
    results: list[BatchResult | None] = [None] * len(items)
    todo = list(range(len(items)))
    for round_no in range(max_rounds):
        if not todo:
            break
        chunks = [todo[i : i + BATCH_LIMIT] for i in range(0, len(todo), BATCH_LIMIT)]
        answers = await asyncio.gather(*(_one_batch(graph, items, chunk, beta) for chunk in chunks))
        retry: list[int] = []
        wait = 0.0
        for chunk_answer in answers:
            for index, result, after in chunk_answer:
                results[index] = result
                if result.status in RETRYABLE and round_no + 1 < max_rounds:
                    retry.append(index)
                    wait = max(wait, after)
        todo = retry
        if todo:
            wait = min(wait, graph.budget.max_single_wait)
            if wait > graph.budget.remaining:
                break
            graph.budget.remaining -= wait
            await asyncio.sleep(wait)
    return [r if r is not None else BatchResult(599, None) for r in results]


async def _one_batch(
    graph: GraphClient, items: Sequence[BatchItem], indexes: list[int], beta: bool
) -> list[tuple[int, BatchResult, float]]:
    requests = []
    for n, index in enumerate(indexes):
        item = items[index]
        request: dict[str, Any] = {"id": str(n), "method": item.method, "url": item.url}
        # Graph refuses a write sub-request without both ("Write request id : N does not
        # contain Content-Type header or body."), even for an action that takes no body.
        if item.body is not None or item.method.upper() in WRITE_METHODS:
            request["body"] = {} if item.body is None else item.body
            request["headers"] = {"Content-Type": "application/json"}
        requests.append(request)
    endpoint = graph.beta("$batch") if beta else graph.v1("$batch")
    answer = await graph.post_json(endpoint, {"requests": requests})
    responses = answer.get("responses") if isinstance(answer, dict) else None
    if not isinstance(responses, list):
        raise MalformedResponse("$batch answer without responses")
    out: list[tuple[int, BatchResult, float]] = []
    seen: set[int] = set()
    for response in responses:
        if not isinstance(response, dict):
            continue
        try:
            n = int(response.get("id", -1))
        except (TypeError, ValueError):
            continue
        if not 0 <= n < len(indexes) or n in seen:
            continue
        seen.add(n)
        status = response.get("status")
        status = status if isinstance(status, int) else 599
        out.append(
            (
                indexes[n],
                BatchResult(status, response.get("body")),
                _retry_after(response.get("headers")),
            )
        )
    for n, index in enumerate(indexes):
        if n not in seen:
            out.append((index, BatchResult(599, None), 1.0))
    return out
