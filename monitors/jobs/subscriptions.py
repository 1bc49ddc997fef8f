"""Keep one live change-notification subscription per ETG in use, and none for others."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitors.graph.delta import member_delta
from monitors.graph.policies import PolicyWithEtg, policies_with_etgs
from monitors.graph.subscriptions import (
    QUOTA,
    GraphSubscription,
    create_subscription,
    delete_subscription,
    list_subscriptions,
    renew_subscription,
)
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import JSON, Unverified, UnverifiedReason, fields_json
from monitors.store.notifications import NotificationStore, SubscriptionState, client_state_mark

JOB = "subscriptions"
RENEW_WITHIN = timedelta(days=1)


@dataclass
class SyncReport:
    configured: bool = True
    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unverified: list[Unverified] = field(default_factory=list)

    def to_json(self) -> dict[str, JSON]:
        return fields_json(self)


async def sync_subscriptions(ctx: JobContext) -> SyncReport:
    async def body() -> SyncReport:
        return await _sync(ctx)

    def summarize(r: SyncReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        outcome = "not configured" if not r.configured else ("unverified" if r.unverified else "ok")
        return outcome, r.to_json(), r.unverified

    return await recorded_run(ctx, JOB, body, summarize)


@dataclass(frozen=True)
class _Target:
    """Where notifications go: both settings, or no subscriptions at all."""

    notification_url: str
    client_state: str


async def _sync(ctx: JobContext) -> SyncReport:
    report = SyncReport()
    settings = ctx.settings
    if not settings.notification_url or not settings.client_state:
        report.configured = False
        return report
    target = _Target(settings.notification_url, settings.client_state)
    now = ctx.clock.now()
    notes = NotificationStore(ctx.store)
    policy_list = await policies_with_etgs(ctx.graph, settings.policy_groups)
    live = await list_subscriptions(ctx.graph)
    if isinstance(policy_list, Unverified) or isinstance(live, Unverified):
        report.unverified += [x for x in (policy_list, live) if isinstance(x, Unverified)]
        return report
    wanted = _wanted_groups(policy_list, report)
    # An ETG whose policy could not be read is neither added nor removed this run.
    unsure = bool(report.unverified)
    stored = await notes.subscriptions()
    by_group = {s.group_id: s for s in live if s.group_id}
    count = len(live)
    changes = {"created": report.created, "renewed": report.renewed, "kept": report.kept}
    for group_id, names in sorted(wanted.items()):
        current, state = by_group.get(group_id), stored.get(group_id)
        kept = await _subscribe(ctx, target, (group_id, names), current, state, count, now)
        if isinstance(kept, Unverified):
            report.unverified.append(kept)
            continue
        change, state = kept
        count += change == "created"
        changes[change].append(group_id)
        await notes.save_subscription(state)
        await _baseline(ctx, notes, group_id, report)
    if not unsure:
        await _unsubscribe(ctx, {g: s for g, s in by_group.items() if g not in wanted}, report)
    live_now = (set(by_group) - set(report.deleted)) | set(report.created)
    for group_id in set(stored) - live_now:
        await notes.forget_subscription(group_id)
    return report


def _wanted_groups(policy_list: list[PolicyWithEtg], report: SyncReport) -> dict[str, list[str]]:
    """Each ETG in use, with the names of the policies that use it."""
    wanted: dict[str, list[str]] = {}
    for policy, etgs in policy_list:
        if isinstance(etgs, Unverified):
            report.unverified.append(etgs)
            continue
        for group_id in etgs.group_ids:
            wanted.setdefault(group_id, []).append(policy.name)
    return wanted


async def _subscribe(
    ctx: JobContext,
    target: _Target,
    group: tuple[str, list[str]],
    current: GraphSubscription | None,
    state: SubscriptionState | None,
    live_count: int,
    now: datetime,
) -> tuple[str, SubscriptionState] | Unverified:
    """The group's subscription, created when there is none and renewed when it is about to
    expire, with which of created, renewed or kept it was; the reason when Graph refused.
    ``group`` is the group id and the names of the policies using it."""
    group_id, names = group
    policy_names = ", ".join(names)
    mark = client_state_mark(target.client_state)
    if current is not None and not _made_with(current, state, mark):
        # Graph never returns a subscription's clientState (subscription-list.md): one this
        # store did not make with today's client state (rotated, or another tenant's
        # deployment made it) would have every notification refused. It is replaced.
        gone = await delete_subscription(ctx.graph, current.id)
        if isinstance(gone, Unverified):
            return gone
        current, state, live_count = None, None, live_count - 1
    if current is None:
        if live_count >= QUOTA:
            return create_subscription.unverified(
                UnverifiedReason.REJECTED,
                f"subscription quota of {QUOTA} reached; ETG {group_id} is watched "
                "through the audit log only",
            )
        created = await create_subscription(
            ctx.graph, group_id, target.notification_url, target.client_state, now
        )
        if isinstance(created, Unverified):
            return created
        return "created", SubscriptionState(
            group_id,
            created.id,
            created.expires_at,
            now,
            policy_names=policy_names,
            client_state_mark=mark,
        )
    change, renewed_at = "kept", state.renewed_at if state else None
    expires: datetime | Unverified = current.expires_at
    if current.expires_at - now < RENEW_WITHIN:
        change, renewed_at = "renewed", now
        expires = await renew_subscription(ctx.graph, current.id, now)
    if isinstance(expires, Unverified):
        return expires
    return change, SubscriptionState(
        group_id,
        current.id,
        expires,
        state.created_at if state else now,
        renewed_at=renewed_at,
        last_notification_at=state.last_notification_at if state else None,
        policy_names=policy_names,
        client_state_mark=mark,
    )


def _made_with(current: GraphSubscription, state: SubscriptionState | None, mark: str) -> bool:
    """Whether this store made the live subscription, with this client state. A row from before
    marks were kept counts as made with the client state of today."""
    if state is None or state.subscription_id.lower() != current.id.lower():
        return False
    return state.client_state_mark in (None, mark)


async def _baseline(
    ctx: JobContext, notes: NotificationStore, group_id: str, report: SyncReport
) -> None:
    """Read the group's delta once when there is no link yet, so the first change after
    subscribing is seen as a change."""
    if await notes.delta_link(group_id) is not None:
        return
    baseline = await member_delta(ctx.graph, group_id, None)
    if isinstance(baseline, Unverified):
        report.unverified.append(baseline)
        return
    await notes.save_delta_link(group_id, baseline.delta_link)


async def _unsubscribe(
    ctx: JobContext, unwanted: dict[str, GraphSubscription], report: SyncReport
) -> None:
    for group_id, current in unwanted.items():
        deleted = await delete_subscription(ctx.graph, current.id)
        if isinstance(deleted, Unverified):
            report.unverified.append(deleted)
        else:
            report.deleted.append(group_id)


def subscription_rows(states: dict[str, SubscriptionState], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for state in sorted(states.values(), key=lambda s: s.expires_at):
        row = state.to_json()
        row["expires_in_hours"] = round((state.expires_at - now).total_seconds() / 3600, 1)
        rows.append(row)
    return rows
