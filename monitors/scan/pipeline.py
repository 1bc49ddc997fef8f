"""The enrollment scan: judge every new and still-open device preparation deployment.

Each step is a function of what the steps before it returned:

1. ``read_stored``: checkpoints, the pending set, device anomalies and suppressions, once.
2. ``read_intune``: the policies with their ETGs, the deployment report, the install reports.
3. ``load_records``: the stored records of the deployments the report and the pending set name.
4. ``read_devices``, ``read_users``: managed devices, Entra ids, the users' assigned policies.
5. ``read_membership``: each ETG's audit log and what change notifications observed, from
   where ``audit_since`` says; ``bring_back``: earlier deployments those events touch again.
6. ``prepare`` (pure): each deployment's facts; ``read_current_membership`` only where nothing
   else can decide.
7. ``judge_all`` (pure): the rules' verdicts.
8. ``write``: anomaly changes, records, the pending set, then checkpoints. Nothing is written
   before this step: a scan stopped earlier has changed no anomaly, record or checkpoint.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

from monitors.graph.reports import Wanted
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import Unverified
from monitors.rules.enrollment import needs_membership_check
from monitors.scan.coverage import Window, audit_since
from monitors.scan.facts import Evidence, judge_all, prepare, scan_rules
from monitors.scan.reads import (
    Intune,
    read_current_membership,
    read_devices,
    read_intune,
    read_membership,
    read_users,
)
from monitors.scan.report import ScanReport
from monitors.scan.stored import StoredState, bring_back, load_records, read_stored
from monitors.scan.write import judged_record, write
from monitors.settings import Settings

JOB = "scan"


async def run_scan(ctx: JobContext) -> ScanReport:
    async def body() -> ScanReport:
        return await scan(ctx)

    def summarize(report: ScanReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        data = report.to_json(devices_limit=0)
        summary = {
            "deployments": data["deployments"],
            "findings": data["findings"],
            "changes": Counter(t.change.value for t in report.transitions),
            "checkpoint_advanced": report.checkpoint_advanced,
        }
        return report.outcome, summary, report.all_unverified()[:50]

    return await recorded_run(ctx, JOB, body, summarize)


async def scan(ctx: JobContext) -> ScanReport:
    graph, settings, now = ctx.graph, ctx.settings, ctx.clock.now()
    # The stored state is read while the report export is created and polled, which is mostly
    # waiting; the report's rows are read once it is known which of them will be judged.
    reading = asyncio.ensure_future(read_stored(ctx.store))
    try:
        intune = await read_intune(graph, settings, lambda: _judged_rows(reading, now, settings))
    except BaseException:
        reading.cancel()
        await asyncio.wait([reading])
        raise
    stored = await reading
    window = Window.of(now, settings, stored.checkpoints)
    if not isinstance(intune, Intune):
        return _nothing_judged(ctx, now, intune)
    records = await load_records(ctx.store, intune.report.deployments, stored.pending, window.start)
    found = await read_devices(graph, records)
    users = await read_users(graph, found.records, intune.policies)
    since = audit_since(users.records, intune.policies, window, stored.checkpoints)
    membership = await read_membership(graph, ctx.store, since)
    records = await bring_back(ctx.store, users.records, membership.by_object, stored.anomalies)

    evidence = Evidence(
        policies=intune.policies,
        window=window,
        settings=settings,
        device_problems=found.problems,
        users=users,
        membership=membership,
        payload=intune.payload,
        anomalies=stored.anomalies,
    )
    prepared = {key: prepare(key, r, evidence) for key, r in records.items()}
    # Each step lets go of what it no longer needs: the records as read (now prepared) are
    # freed before judging, the prepared ones before the write, which needs memory of its own.
    gaps, read_from = users.gaps, membership.read_from
    del evidence, found, users, records, membership
    undecided = {k: p.record for k, p in prepared.items() if needs_membership_check(p.facts, now)}
    members = await read_current_membership(graph, undecided)
    rules = scan_rules(settings, intune.policies)
    judgements = judge_all(prepared, members, stored.anomalies, rules, now)

    judged = {k: judged_record(prepared[k].record, j, now) for k, j in judgements.items()}
    del prepared, undecided
    transitions = await write(ctx, stored, judged, judgements, read_from, now)
    return ScanReport(
        ctx.run_id,
        now,
        judgements=list(judgements.values()),
        transitions=transitions,
        # Reads that failed where other evidence still decided: reported as health.
        unverified=[*intune.report.malformed, *gaps],
        rows_in_report=intune.report.rows,
        graph_requests=dict(graph.counts),
        checkpoint_advanced=True,
    )


async def _judged_rows(
    reading: asyncio.Future[StoredState], now: datetime, settings: Settings
) -> Wanted | None:
    """Which report rows the scan will judge: those enrolled in its window, and the pending.
    None (every row) when the stored state could not be read: the scan raises that failure
    itself, outside the Graph call."""
    try:
        stored = await asyncio.shield(reading)
    except Exception:
        return None
    window = Window.of(now, settings, stored.checkpoints)
    return lambda key, enrolled: enrolled >= window.start or key in stored.pending


def _nothing_judged(ctx: JobContext, now: datetime, unread: list[Unverified]) -> ScanReport:
    """Without the policies or the deployment report nothing can be judged, and no checkpoint
    moves: the next scan reads the same window again."""
    return ScanReport(ctx.run_id, now, unverified=unread, graph_requests=dict(ctx.graph.counts))
