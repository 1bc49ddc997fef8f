"""Storing a scan, in the one order that lets a crash at any point lose and double nothing:
chunk by chunk, anomaly changes (each with its alert), then the deployment records; once all
are stored, the pending set, and only then the checkpoints. A rerun reads the same window
again: reconcile turns findings it repeats into updates, never new anomalies, and a record
stored conclusive already has its anomaly changes stored before it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from monitors.jobs.alerting import save_transitions
from monitors.jobs.context import JobContext
from monitors.jobs.suppressions import settle_suppressions
from monitors.models import Finding
from monitors.rules.enrollment import Judgement, JudgementState, etg_outcome
from monitors.rules.kinds import DEVICE_KINDS, ETG_MISSING
from monitors.rules.lifecycle import Change, Transition, reconcile
from monitors.rules.suppression import checker
from monitors.scan.coverage import DEPLOYMENTS_CHECKPOINT
from monitors.scan.stored import StoredState
from monitors.store.scan_state import AUDIT_CHECKPOINT, DeploymentRecord, ScanState

# A deployment that is still not conclusive after this long is given up (reported, not alerted).
GIVE_UP_AFTER = timedelta(days=30)
SETTLED = ("conclusive", "expired")


def judged_record(record: DeploymentRecord, j: Judgement, now: datetime) -> DeploymentRecord:
    """The record as stored after this judgement."""
    expired = (
        j.state is not JudgementState.CONCLUSIVE
        and now - record.deployment.enrolled_at > GIVE_UP_AFTER
    )
    findings = {v.kind for v in j.verdicts if isinstance(v, Finding)}
    return dataclasses.replace(
        record,
        state="expired" if expired else j.state,
        summary=j.summary,
        outcome=etg_outcome(j),
        joined_at=j.joined_at,
        findings=tuple(sorted(findings)),
        previously_missing=record.previously_missing or ETG_MISSING.name in findings,
    )


def settled_fields(record: DeploymentRecord) -> dict[str, object]:
    """What the workbook charts per settled deployment: its ETG outcome (compliance) and how
    long before provisioning completed the device joined its ETG (lead time)."""
    completed = record.deployment.completed_at
    lead = (
        round((completed - record.joined_at).total_seconds() / 60, 1)
        if completed and record.joined_at
        else None
    )
    return {
        "outcome": record.outcome,
        "policy_id": record.policy.policy.id if record.policy else None,
        "lead_minutes": lead,
    }


async def write_chunk(
    ctx: JobContext,
    stored: StoredState,
    records: Mapping[str, DeploymentRecord],
    judgements: Iterable[Judgement],
    now: datetime,
) -> list[Transition]:
    """One chunk of a scan: its anomaly changes (each with its alert), then its records.
    ``records`` are as judged (see judged_record). Each deployment is in one chunk only, so
    every chunk reconciles against the anomalies as the scan read them."""
    verdicts = [v for j in judgements for v in j.verdicts]
    transitions = reconcile(
        stored.anomalies,
        verdicts,
        now,
        checker(stored.suppressions, now),
        refresh_after=timedelta(hours=1),
    )
    await save_anomaly_changes(ctx, transitions, now)
    await save_records(ctx, records, now)
    return transitions


async def finish(
    ctx: JobContext,
    stored: StoredState,
    records: Mapping[str, DeploymentRecord],
    transitions: list[Transition],
    audit_read: Iterable[str],
    now: datetime,
) -> list[Transition]:
    """After every chunk is stored: suppressions that expired or were lifted, the pending set,
    and only then the checkpoints. ``audit_read``: the ETGs whose audit log this run read,
    the only ones whose checkpoint moves."""
    # Expired or lifted suppressions also touch anomalies this run did not judge.
    routes = ctx.settings.alert_routes
    transitions = transitions + await settle_suppressions(
        ctx.store, now, routes, DEVICE_KINDS, ctx.run_id
    )
    await save_pending(ctx, records, stored.pending)
    await ScanState(ctx.store).advance(
        {DEPLOYMENTS_CHECKPOINT: now} | {AUDIT_CHECKPOINT + g: now for g in audit_read}
    )
    return transitions


# Anomaly lines logged between two turns of the event loop.
LINES_PER_TURN = 50


async def save_anomaly_changes(
    ctx: JobContext, transitions: Sequence[Transition], now: datetime, *, via: str = "scan"
) -> None:
    """Anomaly changes, each with its alerts in the same transaction, and a line for each that
    opens, resolves or reopens (the workbook's anomaly counts)."""
    await save_transitions(ctx.store, transitions, ctx.run_id, now, ctx.settings.alert_routes)
    for n, transition in enumerate(transitions, 1):
        if n % LINES_PER_TURN == 0:
            await asyncio.sleep(0)
        if transition.change is not Change.UPDATED:
            ctx.log.info(
                "anomaly." + transition.change.value,
                kind=transition.anomaly.kind,
                device=transition.anomaly.subject.device_name,
                deployment=transition.anomaly.subject.deployment_key,
                policy_id=transition.anomaly.subject.policy_id,
                via=via,
            )


async def save_deployments(
    ctx: JobContext,
    records: Mapping[str, DeploymentRecord],
    pending: Mapping[str, str],
    now: datetime,
) -> None:
    """The judged records, then the pending set."""
    await save_records(ctx, records, now)
    await save_pending(ctx, records, pending)


# Settled deployments per `deployments.settled` line: a line per deployment was a sixth of a
# first scan's CPU in Azure's JSON logging; a hundred stay well under the 32 KB a trace keeps.
SETTLED_PER_LINE = 100


async def save_records(
    ctx: JobContext, records: Mapping[str, DeploymentRecord], now: datetime
) -> None:
    """The records, and for the workbook each settled one's outcome and lead time, a line per
    hundred (its queries expand ``deployments``)."""
    settled = [
        {"deployment": key, **settled_fields(record)}
        for key, record in records.items()
        if record.state in SETTLED
    ]
    for start in range(0, len(settled), SETTLED_PER_LINE):
        ctx.log.info("deployments.settled", deployments=settled[start : start + SETTLED_PER_LINE])
        # A line is a hundred redacted dicts: the Graph answers in flight go on between lines.
        await asyncio.sleep(0)
    await ScanState(ctx.store).save_records(list(records.values()), now)


async def save_pending(
    ctx: JobContext, records: Mapping[str, DeploymentRecord], pending: Mapping[str, str]
) -> None:
    """Those not settled join the pending set, those settled that were in it (``pending``)
    leave it."""
    await ScanState(ctx.store).set_pending(
        [r for r in records.values() if r.state not in SETTLED],
        [k for k, r in records.items() if r.state in SETTLED and k in pending],
    )
