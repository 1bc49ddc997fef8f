"""Receiving change notifications (fast, then 202) and processing them (delta -> observations,
then a targeted re-check of the deployments they affect)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

from monitors.graph.delta import DeltaExpired, member_delta
from monitors.graph.subscriptions import keep_authorized
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import JSON, Unverified, fields_json
from monitors.notifications.webhook import (
    Notification,
    Rejected,
    authentic_tenants,
    parse_notifications,
    request_items,
    route_notifications,
    validation_token,
)
from monitors.scan.recheck import RECHECK_LIMIT, recheck
from monitors.settings import Settings
from monitors.store.notifications import InboxItem, NotificationStore, SubscriptionState
from monitors.store.tables import TableStore
from monitors.tenants.webhook import TenantRoute, client_states, routes_cache, tenant_stores

JOB = "notifications"
log = structlog.get_logger("etg_monitor.webhook")


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: str
    mimetype: str = "text/plain"


async def receive(
    store: TableStore,
    settings: Settings,
    params: Mapping[str, str],
    content_type: str | None,
    body: bytes,
    now: datetime,
) -> WebhookAnswer:
    """Validate, record durably, answer. Does nothing else: Graph wants an answer within 3 s.
    With tenants in the registry, each item goes to the tenant it names (``_receive_routed``)."""
    try:
        token = validation_token(params)
        if token is not None:
            return WebhookAnswer(200, token)
        routes = await routes_cache.get(store, settings)
        if routes:
            return await _receive_routed(settings, routes, content_type, body, now)
        notifications = NotificationStore(store)
        accepted, refused = await _parse_retrying(
            store.prefix,
            lambda refresh: _parse_single(
                notifications, store.prefix, settings, body, content_type, refresh
            ),
        )
    except Rejected as exc:
        log.warning("webhook.rejected", status=exc.status, reason=exc.reason, size=len(body))
        return WebhookAnswer(exc.status, exc.reason)
    await notifications.record(accepted, now)
    if refused:
        log.warning("webhook.items_refused", refused=refused, accepted=len(accepted))
    return WebhookAnswer(202, "")


_T = TypeVar("_T")


async def _parse_retrying(
    prefixes: str | Collection[str], parse: Callable[[bool], Awaitable[_T]]
) -> _T:
    """``parse(refresh=False)``; when nothing was acceptable, once more with the subscription
    ids read afresh: a subscription created moments ago may be missing from the cache."""
    try:
        return await parse(False)
    except Rejected as exc:
        names = [prefixes] if isinstance(prefixes, str) else list(prefixes)
        if exc.status != 403 or not any(_known.may_refresh(p) for p in names):
            raise
        return await parse(True)


async def _parse_single(
    notifications: NotificationStore,
    prefix: str,
    settings: Settings,
    body: bytes,
    content_type: str | None,
    refresh: bool,
) -> tuple[list[Notification], int]:
    known = await _known.get(notifications, prefix, refresh=refresh)
    return parse_notifications(
        body,
        content_type,
        client_state=settings.client_state,
        known_subscriptions=known,
        tenant_id=settings.tenant_id,
    )


async def _receive_routed(
    settings: Settings,
    routes: Mapping[str, TenantRoute],
    content_type: str | None,
    body: bytes,
    now: datetime,
) -> WebhookAnswer:
    """Each item stored in the inbox of the tenant it names, when it carries that tenant's
    client state and names one of its subscriptions; refused otherwise, with the answers and
    log lines of the single-tenant webhook. Only the tables of tenants named by an item with
    their own client state are read or written. Raises Rejected."""
    items = request_items(body, content_type)
    states = client_states(routes)
    named = authentic_tenants(items, states)
    stores = {
        t: NotificationStore(tenant_stores.get(settings, routes[t].table_prefix)) for t in named
    }
    prefixes = {t: routes[t].table_prefix for t in named}

    async def parse(refresh: bool) -> tuple[dict[str, list[Notification]], int]:
        known = {
            t: await _known.get(
                stores[t], prefixes[t], refresh=refresh and _known.may_refresh(prefixes[t])
            )
            for t in sorted(named)
        }
        return route_notifications(items, states, known)

    accepted, refused = await _parse_retrying(prefixes.values(), parse)
    # One tenant after the other: a failure raises before the answer, Graph redelivers the
    # whole request, and the rows already written are rewritten unchanged (content-hash keys).
    for tenant in sorted(accepted):
        await stores[tenant].record(accepted[tenant], now)
    if refused:
        total = sum(len(found) for found in accepted.values())
        log.warning("webhook.items_refused", refused=refused, accepted=total)
    return WebhookAnswer(202, "")


class _KnownSubscriptions:
    """Subscription ids per installation, cached briefly: the webhook must not query a table
    per request. Timed with the process's monotonic clock: this is caching, not a decision."""

    TTL = 30.0
    MIN_REFRESH = 2.0

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = {}
        self.loaded_at: dict[str, float] = {}

    def may_refresh(self, prefix: str) -> bool:
        return time.monotonic() - self.loaded_at.get(prefix, -1e9) >= self.MIN_REFRESH

    async def get(self, notes: NotificationStore, prefix: str, refresh: bool) -> set[str]:
        if refresh or time.monotonic() - self.loaded_at.get(prefix, -1e9) > self.TTL:
            self.ids[prefix] = await notes.known_subscription_ids()
            self.loaded_at[prefix] = time.monotonic()
        return self.ids[prefix]


_known = _KnownSubscriptions()


@dataclass
class ProcessReport:
    processed: int = 0
    groups: list[str] = field(default_factory=list)
    observations: int = 0
    resynced: list[str] = field(default_factory=list)
    lifecycle: list[str] = field(default_factory=list)
    unverified: list[Unverified] = field(default_factory=list)
    # The targeted re-check that followed (monitors.scan.recheck): deployments judged again,
    # those left for the next run or the scan by its bound, why it did not run, alerts queued.
    rechecked: int = 0
    recheck_waiting: int = 0
    recheck_limit: int = RECHECK_LIMIT
    recheck_skipped: str | None = None
    recheck_alerts: int = 0

    def to_json(self) -> dict[str, JSON]:
        return fields_json(self)


def _group_of(state: SubscriptionState | None) -> str | None:
    return state.group_id if state is not None else None


def _page_key(link: str | None) -> str:
    return hashlib.sha256((link or "initial").encode()).hexdigest()[:16]


async def process_inbox(ctx: JobContext) -> ProcessReport:
    """For each group named by a recorded notification, read delta from the saved link and
    record what joined and left; then re-check the deployments that affects and those whose
    membership grace has passed (monitors.scan.recheck), one bounded batch whatever the number
    of notifications. Order: observations, then the new link, then the re-check, then the inbox
    rows are removed, so a crash at any point only repeats work whose results are idempotent."""

    async def body() -> ProcessReport:
        now = ctx.clock.now()
        notes = NotificationStore(ctx.store)
        report = ProcessReport()
        items = await notes.inbox()
        subscriptions = await notes.subscriptions()
        by_sub = {s.subscription_id.lower(): s for s in subscriptions.values()}
        groups: set[str] = set()
        handled: set[str] = set()
        # A lifecycle notification names no resource: its group is its subscription's.
        group_of = {i.id: i.group_id or _group_of(by_sub.get(i.subscription_id)) for i in items}
        # Graph batches and redelivers: act once per subscription and event, whatever the rows.
        lifecycle_done: dict[tuple[str, str], bool] = {}
        for item in items:
            if item.lifecycle_event:
                key = (item.subscription_id, item.lifecycle_event)
                if key not in lifecycle_done:
                    lifecycle_done[key] = await _lifecycle(
                        ctx, notes, item.lifecycle_event, item.subscription_id, by_sub, now, report
                    )
                if not lifecycle_done[key]:
                    continue
            group_id = group_of[item.id]
            if group_id:
                groups.add(group_id)  # for lifecycle: reauthorization or missed, catch up
            handled.add(item.id)
        failed_groups: set[str] = set()
        for group_id in sorted(groups):
            added = await _catch_up(ctx, notes, group_id, now, report)
            if isinstance(added, Unverified):
                report.unverified.append(added)
                failed_groups.add(group_id)
                continue
            report.observations += added
            await notes.touch(group_id, now)
            report.groups.append(group_id)
        # Before the rows go: a crash here leaves them, and the next run catches up and
        # re-checks again (delta then has nothing new; the observations are stored).
        checked = await recheck(ctx, report.groups)
        report.rechecked, report.recheck_waiting = checked.rechecked, checked.waiting
        report.recheck_skipped, report.recheck_alerts = checked.skipped, checked.alerts
        report.recheck_limit = checked.limit
        report.unverified += checked.unverified

        def kept(item: InboxItem) -> bool:
            # Rows for groups whose delta failed stay and are retried next run; so do the
            # change rows of groups whose changed deployments the re-check left waiting.
            group = group_of[item.id]
            deferred = not item.lifecycle_event and group in checked.deferred_groups
            return group in failed_groups or deferred

        done = [i.id for i in items if i.id in handled and not kept(i)]
        await notes.done(done)
        report.processed = len(done)
        return report

    def summarize(r: ProcessReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        return ("unverified" if r.unverified else "ok"), r.to_json(), r.unverified

    return await recorded_run(ctx, JOB, body, summarize)


async def _catch_up(
    ctx: JobContext, notes: NotificationStore, group_id: str, now: datetime, report: ProcessReport
) -> int | Unverified:
    """Record what joined and left the group since its saved link; how many were new."""
    link = await notes.delta_link(group_id)
    try:
        result = await member_delta(ctx.graph, group_id, link)
    except DeltaExpired:
        # The token expired: start over. Joins recorded so far stay; the audit log covers
        # whatever happened while the link was stale.
        ctx.log.warning("delta.resync", group=group_id)
        report.resynced.append(group_id)
        link = None
        result = await member_delta(ctx.graph, group_id, None)
    if isinstance(result, Unverified):
        return result
    added = 0
    if result.changes:
        added = await notes.observe(group_id, result.changes, _page_key(link), now)
    await notes.save_delta_link(group_id, result.delta_link)
    return added


async def _lifecycle(
    ctx: JobContext,
    notes: NotificationStore,
    event: str,
    subscription_id: str,
    by_sub: Mapping[str, Any],
    now: datetime,
    report: ProcessReport,
) -> bool:
    state = by_sub.get(subscription_id)
    report.lifecycle.append(event)
    ctx.log.info("subscription.lifecycle", lifecycle_event=event, subscription=subscription_id)
    if event == "subscriptionRemoved":
        if state is not None:
            await notes.forget_subscription(state.group_id)  # the sync job recreates it
        return True
    if event != "reauthorizationRequired":
        return True
    expires = await keep_authorized(ctx.graph, subscription_id, now)
    if isinstance(expires, Unverified):
        report.unverified.append(expires)
        return False
    if expires is not None and state is not None:
        state.expires_at, state.renewed_at = expires, now
        await notes.save_subscription(state)
    return True
