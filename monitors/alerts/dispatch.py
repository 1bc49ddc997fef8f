"""The dispatcher: sends pending outbox items to Teams and records what happened.

Delivery is at-least-once: an item is marked sent only after Teams answered 2xx, so a crash
between the two can repeat that one message, and nothing else can. 429 honours Retry-After and
stops the round (hammering a throttled webhook only prolongs it); other failures back off
exponentially; items older than the configured age are given up and recorded as failed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from monitors.alerts.cards import anomaly_card, digest_card, fit, message
from monitors.retry import retry_after_seconds
from monitors.store.outbox import OutboxItem, OutboxRepository
from monitors.store.tables import TableStore

OPENING = ("opened", "reopened", "unsuppressed")
MAX_BACKOFF = timedelta(hours=1)
log = structlog.get_logger("etg_monitor.alerts")


@dataclass
class DispatchResult:
    messages_sent: int = 0
    items_sent: int = 0
    retry_scheduled: int = 0
    gave_up: int = 0
    pending: int = 0
    throttled: bool = False
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "messages_sent": self.messages_sent,
            "items_sent": self.items_sent,
            "retry_scheduled": self.retry_scheduled,
            "gave_up": self.gave_up,
            "pending": self.pending,
            "throttled": self.throttled,
            "errors": self.errors,
        }


@dataclass
class Outgoing:
    items: list[OutboxItem]
    payload: dict[str, Any]
    label: str


def plan_messages(items: list[OutboxItem], threshold: int, graph_endpoint: str) -> list[Outgoing]:
    """Pure: pending items -> messages. A run that opens (or resolves) more than ``threshold``
    anomalies becomes one digest; policy-level anomalies go first."""
    groups: dict[tuple[str, str], list[OutboxItem]] = defaultdict(list)
    out: list[Outgoing] = []
    for item in items:
        if item.change == "summary":
            out.append(Outgoing([item], message(fit(item.payload["card"])), "weekly summary"))
            continue
        direction = "resolved" if item.change == "resolved" else "opened"
        groups[(item.run_id, direction)].append(item)
    for (_run, direction), group in groups.items():
        group.sort(key=lambda i: (i.payload.get("scope") == "device", i.row_key))
        if len(group) > threshold:
            card = digest_card([i.payload for i in group], direction, graph_endpoint)
            out.append(Outgoing(group, message(card), f"digest of {len(group)} {direction}"))
        else:
            out.extend(
                Outgoing(
                    [i],
                    message(anomaly_card(i.payload, i.change, graph_endpoint)),
                    f"{i.change} {i.payload.get('kind')}",
                )
                for i in group
            )
    out.sort(key=lambda m: (m.items[0].payload.get("scope") == "device", m.items[0].row_key))
    return out


def _retry_after(response: httpx.Response) -> float:
    return retry_after_seconds(
        response.headers.get("retry-after"),
        default=30.0,
        floor=1.0,
        cap=MAX_BACKOFF.total_seconds(),
    )


def _backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** max(0, attempts - 1)), MAX_BACKOFF)


async def dispatch(
    store: TableStore,
    webhook_url: str | None,
    now: datetime,
    *,
    graph_endpoint: str,
    threshold: int = 5,
    max_age: timedelta = timedelta(hours=24),
    http: httpx.AsyncClient | None = None,
    timeout_seconds: float = 15.0,
) -> DispatchResult:
    outbox = OutboxRepository(store)
    result = DispatchResult()
    pending = await outbox.items("pending")
    due: list[OutboxItem] = []
    for item in pending:
        if now - item.created_at > max_age:
            item.status, item.last_error = "failed", f"gave up after {max_age} without delivery"
            if await outbox.update(item):
                result.gave_up += 1
                log.error(
                    "alert.gave_up",
                    item=item.id,
                    kind=item.payload.get("kind"),
                    attempts=item.attempts,
                )
        elif item.next_attempt_at is None or item.next_attempt_at <= now:
            due.append(item)
    result.pending = len(pending) - result.gave_up
    if not webhook_url or not due:
        return result

    client = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds, connect=5.0))
    planned = plan_messages(due, threshold, graph_endpoint)
    try:
        for index, outgoing in enumerate(planned):
            try:
                response = await client.post(webhook_url, json=outgoing.payload)
            except httpx.HTTPError as exc:
                # Unreachable or timing out: the next message would wait just as long, so the
                # rest of this run's messages wait with it. A timed-out post may still have
                # been delivered; retrying it can repeat that one message, never drop it.
                wait = _backoff(outgoing.items[0].attempts + 1)
                error = type(exc).__name__
                await _schedule(outbox, outgoing, now, wait, error, result)
                for later in planned[index + 1 :]:
                    await _schedule(outbox, later, now, wait, error, result, attempted=False)
                break
            if 200 <= response.status_code < 300:
                for item in outgoing.items:
                    item.status, item.sent_at, item.last_error = "sent", now, ""
                    item.attempts += 1
                    await outbox.update(item)
                result.messages_sent += 1
                result.items_sent += len(outgoing.items)
                result.pending -= len(outgoing.items)
                log.info("alert.sent", what=outgoing.label, items=len(outgoing.items))
            elif response.status_code == 429:
                # The webhook as a whole is throttled: everything still queued waits too.
                wait = timedelta(seconds=_retry_after(response))
                await _schedule(outbox, outgoing, now, wait, "429", result)
                for later in planned[index + 1 :]:
                    await _schedule(outbox, later, now, wait, "429", result, attempted=False)
                result.throttled = True
                break
            else:
                await _schedule(
                    outbox,
                    outgoing,
                    now,
                    _backoff(outgoing.items[0].attempts + 1),
                    f"HTTP {response.status_code}",
                    result,
                )
    finally:
        if http is None:
            await client.aclose()
    return result


async def _schedule(
    outbox: OutboxRepository,
    outgoing: Outgoing,
    now: datetime,
    delay: timedelta,
    error: str,
    result: DispatchResult,
    *,
    attempted: bool = True,
) -> None:
    for item in outgoing.items:
        item.attempts += 1 if attempted else 0
        item.next_attempt_at = now + delay
        item.last_error = error
        await outbox.update(item)
    result.retry_scheduled += len(outgoing.items)
    result.errors.append(f"{outgoing.label}: {error}")
    log.warning(
        "alert.retry_scheduled", what=outgoing.label, error=error, retry_in_s=delay.total_seconds()
    )
