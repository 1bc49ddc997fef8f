"""The remediation job: read stored state once, screen, read Graph live, judge, cap, act, record.

Modes: ``auto`` and ``apply`` (the CLI's ``--apply``) write; ``dry-run`` plans and says so on
the anomaly and its card; ``preview`` (the CLI without ``--apply``) only shows the plan and
changes nothing at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitors.graph import directory
from monitors.graph.client import GraphClient
from monitors.graph.writes import WriteOutcome
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import JSON, Anomaly, ProvisioningClient, Status, Unverified
from monitors.remediation.act import new_entry, read_live, verified, write
from monitors.remediation.plan import KINDS, Decision, PlanItem, cap, judge, matches, screen
from monitors.remediation.record import changed, history_line, record
from monitors.rules.kinds import ETG_OWNER_MISSING
from monitors.rules.lifecycle import note
from monitors.store.outbox import OutboxRepository
from monitors.store.remediations import LogConflict, RemediationEntry
from monitors.store.tables import ConcurrentUpdate

JOB = "remediation"
WRITING_MODES = ("auto", "apply")


def mode_of(configured: str, apply: bool | None) -> str:
    """``apply`` None: the configured mode (the timer's path); True: write now (the CLI's
    --apply, refused by the CLI when remediation is off); False: show the plan only."""
    if apply is None:
        return configured
    return "apply" if apply else "preview"


@dataclass(frozen=True)
class RemediationReport:
    run_id: str
    checked_at: datetime
    mode: str
    items: tuple[PlanItem, ...]
    outcomes: Mapping[str, WriteOutcome] = field(default_factory=dict)
    unverified: tuple[Unverified, ...] = ()

    @property
    def outcome(self) -> str:
        return "unverified" if self.unverified else "ok"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            done = self.outcomes.get(item.target.anomaly_key)
            name = done.result.value if done else item.decision.value
            out[name] = out.get(name, 0) + 1
        return out

    def to_json(self) -> dict[str, JSON]:
        items: list[JSON] = []
        for item in self.items:
            done = self.outcomes.get(item.target.anomaly_key)
            items.append(
                {
                    **item.to_json(),
                    "result": done.result.value if done else None,
                    "request_id": done.trace_id if done else None,
                    "detail": done.detail if done else None,
                }
            )
        return {
            "run_id": self.run_id,
            "checked_at": self.checked_at.isoformat(),
            "mode": self.mode,
            "writes": self.mode in WRITING_MODES,
            "outcome": self.outcome,
            "counts": dict(self.counts()),
            "items": items,
            "unverified": [u.to_json() for u in self.unverified],
        }


async def run_remediation(
    ctx: JobContext,
    *,
    apply: bool | None = None,
    device: str | None = None,
    policy: str | None = None,
) -> RemediationReport:
    mode = mode_of(ctx.settings.remediation, apply)

    async def body() -> RemediationReport:
        return await _remediate(ctx, mode, device, policy)

    def summarize(report: RemediationReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        return report.outcome, {"mode": mode, **report.counts()}, list(report.unverified)

    return await recorded_run(ctx, JOB, body, summarize)


async def _remediate(
    ctx: JobContext, mode: str, device: str | None, policy: str | None
) -> RemediationReport:
    now = ctx.clock.now()
    wanted = (Status.OPEN, Status.SUPPRESSED)
    anomalies = [a async for a in ctx.store.anomalies.iter(KINDS) if a.status in wanted]
    log = await ctx.store.remediations.by_anomaly()
    client = await _provisioning_client(ctx.graph, anomalies)
    targets, refused = screen(anomalies, log, client if isinstance(client, str) else None)
    targets = [t for t in targets if matches(t, device, policy)]
    refused = [i for i in refused if matches(i.target, device, policy)]
    live = await read_live(ctx.graph, targets)
    judged = [judge(t, live[t.anomaly_key], log.get(t.anomaly_key, ())) for t in targets]
    items = cap(judged + refused, ctx.settings.remediation_max_per_run)
    outcomes = await _act(ctx, items, mode, log) if mode in WRITING_MODES else {}
    if mode != "preview":
        await _keep(ctx, anomalies, items, outcomes, mode, now)
    unverified = [u for i in items for u in i.unverified]
    unverified += [o.unverified for o in outcomes.values() if o.unverified is not None]
    if isinstance(client, Unverified):
        unverified.append(client)
    return RemediationReport(ctx.run_id, now, mode, tuple(items), outcomes, tuple(unverified))


async def _provisioning_client(
    graph: GraphClient, anomalies: Sequence[Anomaly]
) -> str | Unverified | None:
    """Read only when an owner anomaly's evidence does not carry the client's object id."""
    needed = any(
        a.kind == ETG_OWNER_MISSING.name and not a.evidence.get("provisioning_client_object_id")
        for a in anomalies
    )
    if not needed:
        return None
    found = await directory.find_provisioning_client(graph)
    if isinstance(found, ProvisioningClient):
        return found.object_id.lower() if found.object_id else None
    return found


async def _act(
    ctx: JobContext,
    items: Sequence[PlanItem],
    mode: str,
    log: Mapping[str, Sequence[RemediationEntry]],
) -> dict[str, WriteOutcome]:
    """The writes, through a client of their own: in Azure the write identity is a second
    managed identity (ETG_REMEDIATION_CLIENT_ID), so the read identity stays read-only."""
    repo = ctx.store.remediations
    outcomes: dict[str, WriteOutcome] = {}
    for item in items:
        if item.decision is Decision.VERIFIED and item.interrupted is not None:
            await verified(repo, item.interrupted, ctx.clock.now())
    writes = [i for i in items if i.decision is Decision.WRITE]
    if not writes:
        return outcomes
    settings = ctx.settings
    async with GraphClient(
        settings,
        retry_budget_seconds=settings.graph_retry_budget_seconds,
        managed_identity_client_id=settings.remediation_client_id,
    ) as graph:
        for item in writes:
            key = item.target.anomaly_key
            entry = item.interrupted or new_entry(item, mode, ctx.clock.now(), log.get(key, ()))
            try:
                outcomes[key] = await write(graph, repo, item, entry, ctx.clock)
            except LogConflict:
                ctx.log.info("remediation.skipped", anomaly=key, reason="another run wrote it")
    return outcomes


async def _keep(
    ctx: JobContext,
    anomalies: Sequence[Anomaly],
    items: Sequence[PlanItem],
    outcomes: Mapping[str, WriteOutcome],
    mode: str,
    now: datetime,
) -> None:
    """The anomaly records what was planned or done, with a history line when that changed,
    and its queued cards are refreshed to say it."""
    by_key = {a.key: a for a in anomalies}
    outbox = OutboxRepository(ctx.store)
    for item in items:
        anomaly = by_key.get(item.target.anomaly_key)
        new = record(item, mode, now, outcomes.get(item.target.anomaly_key))
        if anomaly is None or new is None or not changed(anomaly.remediation, new):
            continue
        anomaly.remediation = new
        note(anomaly, now, anomaly.status, history_line(new))
        try:
            await ctx.store.anomalies.save(anomaly)
        except ConcurrentUpdate:
            # The scan changed it meanwhile; the next run records it on the fresh copy.
            ctx.log.info("remediation.record_deferred", anomaly=anomaly.key)
            continue
        await outbox.refresh_remediation(anomaly)
