"""Keep one live change-notification subscription per ETG in use, and none for others."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitors.graph import permissions
from monitors.graph.delta import member_delta
from monitors.graph.errors import GRAPH_ERRORS, attempt, unverified
from monitors.graph.subscriptions import (
    CREATE_SOURCE,
    DELETE_SOURCE,
    LIST_SOURCE,
    PERMISSION,
    QUOTA,
    RENEW_SOURCE,
    create_subscription,
    delete_subscription,
    list_subscriptions,
    renew_subscription,
)
from monitors.jobs.context import JobContext, recorded_run
from monitors.jobs.scan import policies_with_etgs
from monitors.models import Unverified, UnverifiedReason
from monitors.store.notifications import NotificationStore, SubscriptionState

JOB = "subscriptions"
RENEW_WITHIN = timedelta(days=1)
DELTA_SOURCE = "GET /v1.0/groups/delta"


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unverified: list[Unverified] = field(default_factory=list)
    configured: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "created": self.created,
            "renewed": self.renewed,
            "deleted": self.deleted,
            "kept": self.kept,
            "unverified": [u.to_json() for u in self.unverified],
        }


async def sync_subscriptions(ctx: JobContext) -> SyncReport:
    async def body() -> SyncReport:
        report = SyncReport()
        settings = ctx.settings
        if not settings.notification_url or not settings.client_state:
            report.configured = False
            return report
        now = ctx.clock.now()
        notes = NotificationStore(ctx.store)
        policy_list = await policies_with_etgs(ctx.graph, settings.policy_groups)
        live = await attempt(list_subscriptions(ctx.graph), LIST_SOURCE, PERMISSION)
        if isinstance(policy_list, Unverified) or isinstance(live, Unverified):
            report.unverified += [x for x in (policy_list, live) if isinstance(x, Unverified)]
            return report
        wanted: dict[str, list[str]] = {}
        for policy, etgs in policy_list:
            if isinstance(etgs, Unverified):
                report.unverified.append(etgs)
                continue
            for group_id in etgs.group_ids:
                wanted.setdefault(group_id, []).append(policy.name)
        # An ETG whose policy could not be read is neither added nor removed this run.
        unsure = bool(report.unverified)
        stored = await notes.subscriptions()
        by_group = {s.group_id: s for s in live if s.group_id}
        count = len(live)
        for group_id, names in sorted(wanted.items()):
            current = by_group.get(group_id)
            state = stored.get(group_id)
            try:
                if current is None:
                    if count >= QUOTA:
                        report.unverified.append(
                            Unverified(
                                CREATE_SOURCE,
                                UnverifiedReason.REJECTED,
                                f"subscription quota of {QUOTA} reached; ETG {group_id} is watched "
                                "through the audit log only",
                            )
                        )
                        continue
                    created = await create_subscription(
                        ctx.graph, group_id, settings.notification_url, settings.client_state, now
                    )
                    count += 1
                    state = SubscriptionState(
                        group_id, created.id, created.expires_at, now, policy_names=", ".join(names)
                    )
                    report.created.append(group_id)
                elif current.expires_at - now < RENEW_WITHIN:
                    expires = await renew_subscription(ctx.graph, current.id, now)
                    state = SubscriptionState(
                        group_id,
                        current.id,
                        expires,
                        state.created_at if state else now,
                        renewed_at=now,
                        last_notification_at=state.last_notification_at if state else None,
                        policy_names=", ".join(names),
                    )
                    report.renewed.append(group_id)
                else:
                    state = SubscriptionState(
                        group_id,
                        current.id,
                        current.expires_at,
                        state.created_at if state else now,
                        renewed_at=state.renewed_at if state else None,
                        last_notification_at=state.last_notification_at if state else None,
                        policy_names=", ".join(names),
                    )
                    report.kept.append(group_id)
            except GRAPH_ERRORS as exc:
                source = CREATE_SOURCE if current is None else RENEW_SOURCE
                report.unverified.append(unverified(exc, source, PERMISSION))
                continue
            await notes.save_subscription(state)
            if await notes.delta_link(group_id) is None:
                try:
                    # Baseline now, so the first change after subscribing is seen as a change.
                    baseline = await member_delta(ctx.graph, group_id, None)
                except GRAPH_ERRORS as exc:
                    report.unverified.append(unverified(exc, DELTA_SOURCE, permissions.GROUP_READ))
                    continue
                await notes.save_delta_link(group_id, baseline.delta_link)
        for group_id, current in by_group.items():
            if group_id in wanted or unsure:
                continue
            try:
                await delete_subscription(ctx.graph, current.id)
                report.deleted.append(group_id)
            except GRAPH_ERRORS as exc:
                report.unverified.append(unverified(exc, DELETE_SOURCE, PERMISSION))
        live_now = (set(by_group) - set(report.deleted)) | set(report.created)
        for group_id in set(stored) - live_now:
            await notes.forget_subscription(group_id)
        return report

    def summarize(r: SyncReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        outcome = "not configured" if not r.configured else ("unverified" if r.unverified else "ok")
        return outcome, r.to_json(), r.unverified

    return await recorded_run(ctx, JOB, body, summarize)


def subscription_rows(states: dict[str, SubscriptionState], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for state in sorted(states.values(), key=lambda s: s.expires_at):
        row = state.to_json()
        row["expires_in_hours"] = round((state.expires_at - now).total_seconds() / 3600, 1)
        rows.append(row)
    return rows
