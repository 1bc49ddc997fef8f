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
8. ``write_chunk``: anomaly changes, then records; ``finish``: the pending set, then
   checkpoints.

Steps 4 to 8 run a chunk of deployments at a time, the audit log (5) read alongside the first
chunk's devices, and each chunk written while the next one's devices are read. A scan stopped
part way has stored whole chunks (their anomaly changes before their records) and moved no
checkpoint: the next scan reads the same window again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

from monitors.graph.reports import Wanted
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import Unverified
from monitors.rules.enrollment import Judgement, needs_membership_check
from monitors.rules.lifecycle import Transition
from monitors.scan.coverage import Window, audit_since
from monitors.scan.facts import Evidence, judge_all, prepare, scan_rules
from monitors.scan.reads import (
    Intune,
    Membership,
    UserCache,
    UserReads,
    read_current_membership,
    read_devices,
    read_intune,
    read_membership,
    read_users,
)
from monitors.scan.report import ScanReport
from monitors.scan.stored import StoredState, bring_back, load_records, read_stored
from monitors.scan.write import finish, judged_record, write_chunk
from monitors.settings import Settings
from monitors.store.scan_state import DeploymentRecord

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
    # The audit log is read while the devices are: from no later than the devices could ask.
    early = audit_since(records, intune.policies, window, stored.checkpoints, unread_devices=True)
    audit_read = asyncio.ensure_future(read_membership(graph, ctx.store, early))
    run = _Run(ctx, stored, intune, window, UserCache())
    try:
        await run.judge_and_write(records, audit_read, early)
    finally:
        audit_read.cancel()
        await asyncio.wait([audit_read])
    transitions = await finish(ctx, stored, run.judged, run.transitions, run.read_from, now)
    return ScanReport(
        ctx.run_id,
        now,
        judgements=run.judgements,
        transitions=transitions,
        # Reads that failed where other evidence still decided: reported as health.
        unverified=[*intune.report.malformed, *_unique(run.gaps)],
        rows_in_report=intune.report.rows,
        graph_requests=dict(graph.counts),
        checkpoint_advanced=True,
    )


# Deployments judged and written together. The next chunk's devices are read while one is
# written: the scan then costs about its reads or its writes, whichever is more, not both. A
# multiple of 300 (20 device filters of 15 ids in a $batch), so every chunk's requests are full.
CHUNK = 3000


class _Run:
    """One scan's chunks, in order: each is read, judged, then written (anomaly changes, then
    records) while the next is read. Only once every chunk is stored do the pending set and
    the checkpoints move (``finish``): a scan stopped between chunks has changed what it
    judged, each chunk as a whole, and the next scan reads the same window again."""

    def __init__(
        self,
        ctx: JobContext,
        stored: StoredState,
        intune: Intune,
        window: Window,
        users: UserCache,
    ) -> None:
        self.ctx, self.stored, self.intune, self.window, self.users = (
            ctx,
            stored,
            intune,
            window,
            users,
        )
        self.rules = scan_rules(ctx.settings, intune.policies)
        self.judged: dict[str, DeploymentRecord] = {}
        self.judgements: list[Judgement] = []
        self.transitions: list[Transition] = []
        self.gaps: list[Unverified] = []
        self.read_from: dict[str, datetime] = {}
        self._membership: Membership | None = None

    async def judge_and_write(
        self,
        records: dict[str, DeploymentRecord],
        audit_read: asyncio.Future[Membership],
        early: dict[str, datetime],
    ) -> None:
        # By device: deployments of one device (enrolled twice) share a chunk, as they share
        # a look-up.
        keys = sorted(records, key=lambda k: records[k].deployment.managed_device_id)
        chunks = [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]
        writing: asyncio.Future[None] | None = None
        try:
            for chunk in chunks:
                found = await read_devices(self.ctx.graph, {k: records.pop(k) for k in chunk})
                users = await read_users(
                    self.ctx.graph, found.records, self.intune.policies, self.users
                )
                if self._membership is None:
                    self._membership = await self._audit(audit_read, early, users.records)
                judged = await self._judge(found.problems, users, self._membership)
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self._write(judged))
            if writing is not None:
                await writing
                writing = None
            if self._membership is None:  # nothing new: removals may still bring some back
                self._membership = await self._audit(audit_read, early, {})
            await self._brought_back()
        finally:
            if writing is not None:
                writing.cancel()
                await asyncio.wait([writing])

    async def _audit(
        self,
        audit_read: asyncio.Future[Membership],
        early: dict[str, datetime],
        first: dict[str, DeploymentRecord],
    ) -> Membership:
        """The audit log as read from ``early``; an ETG a device of the first chunk needs read
        from further back (a device first seen now, enrolled before the ETG's mark) is read
        again from there."""
        membership = await audit_read
        exact = audit_since(first, self.intune.policies, self.window, self.stored.checkpoints)
        again = {g: t for g, t in exact.items() if g in early and t < early[g]}
        if again:
            more = await read_membership(self.ctx.graph, self.ctx.store, again)
            membership = membership.updated(more)
        self.read_from = dict(membership.read_from)
        return membership

    async def _judge(
        self,
        device_problems: dict[str, Unverified],
        users: UserReads,
        membership: Membership,
    ) -> dict[str, tuple[DeploymentRecord, Judgement]]:
        now = self.window.now
        evidence = Evidence(
            policies=self.intune.policies,
            window=self.window,
            settings=self.ctx.settings,
            device_problems=device_problems,
            users=users,
            membership=membership,
            payload=self.intune.payload,
            anomalies=self.stored.anomalies,
        )
        self.gaps.extend(users.gaps)
        prepared = {key: prepare(key, r, evidence) for key, r in users.records.items()}
        undecided = {
            k: p.record for k, p in prepared.items() if needs_membership_check(p.facts, now)
        }
        members = await read_current_membership(self.ctx.graph, undecided)
        judgements = judge_all(prepared, members, self.stored.anomalies, self.rules, now)
        return {k: (judged_record(prepared[k].record, j, now), j) for k, j in judgements.items()}

    async def _write(self, judged: dict[str, tuple[DeploymentRecord, Judgement]]) -> None:
        records = {k: r for k, (r, _) in judged.items()}
        judgements = [j for _, j in judged.values()]
        self.transitions += await write_chunk(
            self.ctx, self.stored, records, judgements, self.window.now
        )
        self.judged.update(records)
        self.judgements += judgements

    async def _brought_back(self) -> None:
        """Deployments judged in earlier scans that this run's membership events touch again
        (a removal long after, an open anomaly that may clear): known once every chunk's
        devices are, judged and written last."""
        assert self._membership is not None
        every = await bring_back(
            self.ctx.store, self.judged, self._membership.by_object, self.stored.anomalies
        )
        back = {k: r for k, r in every.items() if k not in self.judged}
        if back:
            users = UserReads(back, {}, {}, [])
            await self._write(await self._judge({}, users, self._membership))


def _unique(gaps: list[Unverified]) -> list[Unverified]:
    return list({(g.reason, g.detail): g for g in gaps}.values())


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
