"""The dispatcher: sends pending outbox items to their channels and records what happened.

Each row belongs to one channel (teams, pagerduty, webhook) and each channel is a round of its
own: Teams gets cards and digests, PagerDuty and the webhook one event per row. A channel that
fails or is throttled delays only its own rows; the others' delivery state never depends on it.

Delivery is at-least-once: an item is marked sent only after Teams answered 2xx, so a crash
between the two can repeat that one message, and nothing else can. Each message's items are
claimed (an ETag-conditional update) just before the post, so dispatchers that overlap never
send the same item twice. 429 honours Retry-After and
stops the round (hammering a throttled webhook only prolongs it); other failures back off
exponentially; items older than the configured age are given up and recorded as failed.

A registry tenant's dispatch names the tenant on everything it sends (its label on every card,
in PagerDuty's summary and details, in the webhook's event): a provider's channels receive
many tenants' alerts. A single-tenant install's messages carry nothing new.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from monitors.alerts.cards import (
    TenantLabel,
    anomaly_card,
    digest_card,
    fit,
    message,
    reminder_card,
)
from monitors.alerts.pagerduty import PERMANENT_STATUSES, PagerDutyTarget, pagerduty_event
from monitors.alerts.routing import Channel
from monitors.alerts.webhook import WebhookTarget, signed, webhook_event
from monitors.models import JSON, fields_json, json_object
from monitors.retry import retry_after_seconds
from monitors.rules.kinds import severity_rank
from monitors.store.outbox import OutboxItem, OutboxRepository, OutboxStatus, payload_key
from monitors.store.tables import TableStore

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
    # Items another dispatcher had claimed first: it sends them, this run does not.
    claimed_elsewhere: int = 0
    errors: list[str] = field(default_factory=list)
    configured: bool = True
    # Items delivered, by channel.
    by_channel: dict[str, int] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if not self.configured:
            return "not configured"
        return "ok" if not self.errors and not self.gave_up else "degraded"

    def to_json(self) -> dict[str, JSON]:
        return fields_json(self, omit=["configured"])


@dataclass
class Outgoing:
    items: list[OutboxItem]
    payload: dict[str, Any]
    label: str
    # Where and how it is posted; empty: the Teams webhook, as JSON.
    url: str = ""
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Answers that mean the message itself is wrong: recorded as failed, never retried.
    permanent: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Targets:
    """Where each channel delivers; None: that channel is not configured."""

    teams_url: str | None = None
    pagerduty: PagerDutyTarget | None = None
    webhook: WebhookTarget | None = None

    def configured(self) -> set[str]:
        targets: Mapping[Channel, object] = {
            Channel.TEAMS: self.teams_url,
            Channel.PAGERDUTY: self.pagerduty,
            Channel.WEBHOOK: self.webhook,
        }
        return {channel.value for channel, target in targets.items() if target}


def _urgency(item: OutboxItem) -> tuple[int, bool, str]:
    """Most severe first; then policy-level before device-level; then oldest first."""
    kind = str(item.payload.get("kind") or "")
    return severity_rank(kind), item.payload.get("scope") == "device", item.row_key


def plan_messages(
    items: list[OutboxItem],
    threshold: int,
    graph_endpoint: str,
    public_base_url: str | None = None,
    tenant: TenantLabel | None = None,
) -> list[Outgoing]:
    """Pure: pending items -> messages. A run that opens (or resolves) more than ``threshold``
    anomalies becomes one digest; the most severe go first, policy-level before device-level.
    ``tenant``: the registry tenant every card names; the weekly summary's card was labelled
    when it was queued."""
    groups: dict[tuple[str, str], list[OutboxItem]] = defaultdict(list)
    out: list[Outgoing] = []
    for item in items:
        if item.change == "summary":
            card = json_object(item.payload.get("card"))
            out.append(Outgoing([item], message(fit(card)), "weekly summary"))
            continue
        if item.change == "reminder":
            card = reminder_card(
                item.payload, item.created_at, graph_endpoint, public_base_url, tenant
            )
            out.append(Outgoing([item], message(card), f"reminder {item.payload.get('kind')}"))
            continue
        direction = "resolved" if item.change == "resolved" else "opened"
        groups[(item.run_id, direction)].append(item)
    for (_run, direction), group in groups.items():
        group.sort(key=_urgency)
        if len(group) > threshold:
            card = digest_card([i.payload for i in group], direction, graph_endpoint, tenant)
            out.append(Outgoing(group, message(card), f"digest of {len(group)} {direction}"))
        else:
            out.extend(
                Outgoing(
                    [i],
                    message(
                        anomaly_card(i.payload, i.change, graph_endpoint, public_base_url, tenant)
                    ),
                    f"{i.change} {i.payload.get('kind')}",
                )
                for i in group
            )
    out.sort(key=lambda m: _urgency(m.items[0]))
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


def plan_pagerduty(
    items: list[OutboxItem],
    target: PagerDutyTarget,
    now: datetime,
    tenant: TenantLabel | None = None,
) -> list[Outgoing]:
    """Pure: one Events API v2 event per row, most severe first. A row PagerDuty has no event
    for (a reminder routed there before the route changed) is planned with no payload."""
    out: list[Outgoing] = []
    for item in sorted(items, key=_urgency):
        key = payload_key(item.payload) or item.id
        event = pagerduty_event(item.payload, key, item.change, target.routing_key, now, tenant)
        action = event.get("event_action") if event else "none"
        out.append(
            Outgoing(
                [item],
                event or {},
                f"pagerduty {action} {item.payload.get('kind')}",
                url=target.events_url,
                permanent=PERMANENT_STATUSES,
            )
        )
    return out


def plan_webhook(
    items: list[OutboxItem],
    target: WebhookTarget,
    now: datetime,
    tenant: TenantLabel | None = None,
) -> list[Outgoing]:
    """Pure: one signed event per row, most severe first."""
    out: list[Outgoing] = []
    for item in sorted(items, key=_urgency):
        event = webhook_event(item.id, item.change, item.payload, now, tenant)
        content, headers = signed(target, event, now)
        label = f"webhook {event['event']} {item.payload.get('kind') or item.change}"
        out.append(Outgoing([item], event, label, url=target.url, content=content, headers=headers))
    return out


def _plan(
    channel: str,
    items: list[OutboxItem],
    targets: Targets,
    now: datetime,
    threshold: int,
    graph_endpoint: str,
    public_base_url: str | None = None,
    tenant: TenantLabel | None = None,
) -> list[Outgoing]:
    if channel == Channel.PAGERDUTY and targets.pagerduty:
        return plan_pagerduty(items, targets.pagerduty, now, tenant)
    if channel == Channel.WEBHOOK and targets.webhook:
        return plan_webhook(items, targets.webhook, now, tenant)
    if channel == Channel.TEAMS and targets.teams_url:
        planned = plan_messages(items, threshold, graph_endpoint, public_base_url, tenant)
        for outgoing in planned:
            outgoing.url = targets.teams_url
        return planned
    return []


async def dispatch(
    store: TableStore,
    webhook_url: str | None,
    now: datetime,
    *,
    owner: str,
    graph_endpoint: str,
    threshold: int = 5,
    max_age: timedelta = timedelta(hours=24),
    http: httpx.AsyncClient | None = None,
    timeout_seconds: float = 15.0,
    pagerduty: PagerDutyTarget | None = None,
    webhook: WebhookTarget | None = None,
    public_base_url: str | None = None,
    tenant: TenantLabel | None = None,
) -> DispatchResult:
    """Deliver what is due. ``webhook_url`` is Teams'. ``owner`` (the run id) claims each
    message's items just before its post, so two dispatchers that overlap despite the job lease
    still send it once. Rows of a channel not configured wait (and are given up in time).
    ``tenant``: the registry tenant whose outbox this is; None for a single-tenant install."""
    targets = Targets(webhook_url, pagerduty, webhook)
    outbox = OutboxRepository(store)
    result = DispatchResult(configured=bool(targets.configured()))
    waiting = await outbox.waiting()
    due = await _give_up_stale(outbox, waiting, now, max_age, result)
    result.pending = len(waiting) - result.gave_up
    by_channel: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in due:
        by_channel[item.channel].append(item)
    rounds = [
        planned
        for channel in Channel
        if (
            planned := _plan(
                channel,
                by_channel[channel],
                targets,
                now,
                threshold,
                graph_endpoint,
                public_base_url,
                tenant,
            )
        )
    ]
    if not rounds:
        return result
    client = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds, connect=5.0))
    # A claim outlives the longest a post can take, so it never lapses while its owner waits.
    hold = timedelta(seconds=2 * timeout_seconds + 60)
    try:
        for planned in rounds:
            await _round(client, outbox, planned, owner, now, hold, result)
    finally:
        if http is None:
            await client.aclose()
    return result


async def _round(
    client: httpx.AsyncClient,
    outbox: OutboxRepository,
    planned: list[Outgoing],
    owner: str,
    now: datetime,
    hold: timedelta,
    result: DispatchResult,
) -> None:
    """One channel's messages in order; a throttled or unreachable channel stops its round."""
    for index, outgoing in enumerate(planned):
        if not await _claim(outbox, outgoing, owner, now, hold):
            result.claimed_elsewhere += len(outgoing.items)
            continue
        stop = await _deliver(client, outbox, outgoing, now, result)
        if stop is not None:
            wait, error = stop
            for later in planned[index + 1 :]:
                await _schedule(outbox, later, now, wait, error, result, attempted=False)
            return


async def _give_up_stale(
    outbox: OutboxRepository,
    waiting: list[OutboxItem],
    now: datetime,
    max_age: timedelta,
    result: DispatchResult,
) -> list[OutboxItem]:
    """Items too old to be worth sending are recorded as failed; the rest that are due now."""
    due: list[OutboxItem] = []
    for item in waiting:
        if item.status is OutboxStatus.SENDING and not item.due(now):
            continue  # another dispatcher is delivering it right now
        if now - item.created_at > max_age:
            item.status = OutboxStatus.FAILED
            item.last_error = f"gave up after {max_age} without delivery"
            if await outbox.update(item):
                result.gave_up += 1
                log.error(
                    "alert.gave_up",
                    item=item.id,
                    kind=item.payload.get("kind"),
                    attempts=item.attempts,
                )
        elif item.due(now):
            due.append(item)
    return due


async def _claim(
    outbox: OutboxRepository, outgoing: Outgoing, owner: str, now: datetime, hold: timedelta
) -> bool:
    """Claim every item of one message, or none: a message is sent only by the dispatcher that
    holds all its items."""
    claimed: list[OutboxItem] = []
    for item in outgoing.items:
        if not await outbox.claim(item, owner, now, hold):
            for mine in claimed:
                mine.status, mine.claimed_by, mine.claimed_until = OutboxStatus.PENDING, "", None
                await outbox.update(mine)
            log.info("alert.claimed_elsewhere", what=outgoing.label)
            return False
        claimed.append(item)
    return True


async def _post(client: httpx.AsyncClient, outgoing: Outgoing) -> httpx.Response:
    if outgoing.content is None:
        return await client.post(outgoing.url, json=outgoing.payload)
    return await client.post(outgoing.url, content=outgoing.content, headers=outgoing.headers)


async def _deliver(
    client: httpx.AsyncClient,
    outbox: OutboxRepository,
    outgoing: Outgoing,
    now: datetime,
    result: DispatchResult,
) -> tuple[timedelta, str] | None:
    """Post one claimed message and record the outcome. Returns (wait, error) when the rest
    of this round must wait too."""
    if not outgoing.payload:
        await _record_sent(outbox, outgoing, now, result, "alert.skipped")
        return None
    try:
        response = await _post(client, outgoing)
    except httpx.HTTPError as exc:
        # Unreachable or timing out: the next message would wait just as long, so the rest of
        # this run's messages wait with it. A timed-out post may still have been delivered;
        # retrying it can repeat that one message, never drop it.
        wait = _backoff(outgoing.items[0].attempts + 1)
        await _schedule(outbox, outgoing, now, wait, type(exc).__name__, result)
        return wait, type(exc).__name__
    if 200 <= response.status_code < 300:
        await _record_sent(outbox, outgoing, now, result, "alert.sent")
        return None
    if response.status_code in outgoing.permanent:
        await _record_failed(outbox, outgoing, f"HTTP {response.status_code}", result)
        return None
    if response.status_code == 429:
        # The webhook as a whole is throttled: everything still queued waits too.
        wait = timedelta(seconds=_retry_after(response))
        await _schedule(outbox, outgoing, now, wait, "429", result)
        result.throttled = True
        return wait, "429"
    wait = _backoff(outgoing.items[0].attempts + 1)
    await _schedule(outbox, outgoing, now, wait, f"HTTP {response.status_code}", result)
    return None


async def _record_sent(
    outbox: OutboxRepository, outgoing: Outgoing, now: datetime, result: DispatchResult, event: str
) -> None:
    for item in outgoing.items:
        item.status, item.sent_at, item.last_error = OutboxStatus.SENT, now, ""
        item.claimed_until = None
        item.attempts += 1
        await outbox.update(item)
        result.by_channel[item.channel] = result.by_channel.get(item.channel, 0) + 1
    result.messages_sent += 1
    result.items_sent += len(outgoing.items)
    result.pending -= len(outgoing.items)
    log.info(event, what=outgoing.label, items=len(outgoing.items))


async def _record_failed(
    outbox: OutboxRepository, outgoing: Outgoing, error: str, result: DispatchResult
) -> None:
    """The receiver refused the message itself: sending it again would be refused again."""
    for item in outgoing.items:
        item.status, item.claimed_by, item.claimed_until = OutboxStatus.FAILED, "", None
        item.attempts += 1
        item.last_error = f"refused: {error}"
        await outbox.update(item)
    result.gave_up += len(outgoing.items)
    result.pending -= len(outgoing.items)
    result.errors.append(f"{outgoing.label}: refused ({error})")
    log.error("alert.refused", what=outgoing.label, error=error)


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
        item.status, item.claimed_by, item.claimed_until = OutboxStatus.PENDING, "", None
        item.next_attempt_at = now + delay
        item.last_error = error
        await outbox.update(item)
    result.retry_scheduled += len(outgoing.items)
    result.errors.append(f"{outgoing.label}: {error}")
    log.warning(
        "alert.retry_scheduled", what=outgoing.label, error=error, retry_in_s=delay.total_seconds()
    )
