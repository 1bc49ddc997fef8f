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
import contextlib
import gc
import itertools
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from monitors.aio import between_turns
from monitors.graph.reports import Wanted
from monitors.graph.slots import ranked
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import Unverified
from monitors.rules.enrollment import Judgement, needs_membership_check
from monitors.rules.lifecycle import Transition
from monitors.scan.coverage import Window, audit_since
from monitors.scan.facts import Evidence, Prepared, judge_all, prepare, scan_rules
from monitors.scan.reads import (
    DeviceReads,
    Intune,
    Membership,
    PolicyRead,
    UserCache,
    UserReads,
    read_current_membership,
    read_devices,
    read_intune,
    read_membership,
    read_policies,
    read_users,
)
from monitors.scan.report import ScanReport
from monitors.scan.stored import StoredState, bring_back, load_records, read_stored
from monitors.scan.write import finish, judged_record, write_chunk
from monitors.settings import Settings
from monitors.store.scan_state import DeploymentRecord

JOB = "scan"


# Allocations between young-generation collections while a scan runs (CPython's default is
# 700). A first scan keeps tens of thousands of records alive, and the full collections the
# default brings about walk them all: a sixth of its CPU at 20,000 deployments. Young garbage
# is still collected, a fraction as often; reference counting frees the rest as always.
SCAN_GC_THRESHOLD = 50_000
_scans_running = 0
_threshold_before: tuple[int, int, int] | None = None


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    global _scans_running, _threshold_before
    if _scans_running == 0:
        _threshold_before = gc.get_threshold()
        first, *rest = _threshold_before
        gc.set_threshold(max(first, SCAN_GC_THRESHOLD), *rest)
    _scans_running += 1
    try:
        yield
    finally:
        _scans_running -= 1
        if _scans_running == 0 and _threshold_before is not None:
            gc.set_threshold(*_threshold_before)


async def run_scan(ctx: JobContext) -> ScanReport:
    async def body() -> ScanReport:
        with _fewer_collections():
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
    policy_read = read_policies(graph, settings)
    # The audit log is read from each ETG's checkpoint while the export is polled, which is
    # mostly waiting; what the report's deployments need from further back is read after.
    audit_read = asyncio.ensure_future(_audit_early(ctx, policy_read, reading, now))
    try:
        try:
            wanted = lambda: _judged_rows(reading, now, settings)  # noqa: E731
            intune = await read_intune(graph, settings, wanted, policy_read)
        except BaseException:
            reading.cancel()
            await asyncio.wait([reading])
            raise
        stored = await reading
        window = Window.of(now, settings, stored.checkpoints)
        if not isinstance(intune, Intune):
            return _nothing_judged(ctx, now, intune)
        records = await load_records(
            ctx.store, intune.report.deployments, stored.pending, window.start
        )
        # From no later than any of these deployments could need, their devices not yet read.
        needed = audit_since(
            records, intune.policies, window, stored.checkpoints, unread_devices=True
        )
        run = _Run(ctx, stored, intune, window, UserCache())
        await run.judge_and_write(records, audit_read, needed)
    finally:
        started: list[asyncio.Future[Any]] = [audit_read, policy_read]
        for read in started:
            read.cancel()
        await asyncio.wait(started)
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
# The last chunks, smallest last: once the last devices are read, only the last chunk is
# still to be judged and written, and the one before it to be written. With chunks of 3000
# throughout, that was a second of a first scan's end; tapering, a few tenths.
TAPER = (2400, 1200, 600, 300)
# Chunks whose devices are being read while one is judged.
READ_AHEAD = 2


# Deployments judged between two turns of the event loop (about 5 ms): judging a whole chunk
# at once would hold back, for a quarter of a second, the answers of the device look-ups and
# writes in flight, and 250 at a time still held them for 13 ms.
JUDGE_SLICE = 100


def chunked(keys: list[str]) -> list[list[str]]:
    """The keys in order, in chunks of CHUNK but for the TAPER at the end; what is left over
    makes the first chunk."""
    taper, sizes, left = list(TAPER), [], len(keys)
    while left > 0:
        size = min(taper.pop() if taper else CHUNK, left)
        sizes.append(size)
        left -= size
    bounds = itertools.accumulate(reversed(sizes), initial=0)
    return [keys[a:b] for a, b in itertools.pairwise(bounds)]


def _in_time_order(records: Mapping[str, DeploymentRecord]) -> list[str]:
    """Keys by enrollment time, so a chunk's records fill few hour partitions and their
    transactions are full; the deployments of one device (enrolled twice) stay together, at
    its first, as they share a look-up."""
    first: dict[str, datetime] = {}
    for r in records.values():
        d = r.deployment
        if d.managed_device_id not in first or d.enrolled_at < first[d.managed_device_id]:
            first[d.managed_device_id] = d.enrolled_at
    return sorted(
        records,
        key=lambda k: (
            first[records[k].deployment.managed_device_id],
            records[k].deployment.managed_device_id,
            k,
        ),
    )


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
        audit_read: asyncio.Future[tuple[dict[str, datetime], Membership] | None],
        needed: dict[str, datetime],
    ) -> None:
        keys = _in_time_order(records)
        chunks = chunked(keys)

        async def devices_of(n: int, chunk: dict[str, DeploymentRecord]) -> DeviceReads:
            # Ranked by chunk: a later chunk's look-ups take only the Graph slots that this
            # chunk's own requests (its judging included, rank 0) and earlier chunks' leave.
            with ranked(n + 1):
                return await read_devices(self.ctx.graph, chunk)

        def read(n: int) -> asyncio.Future[DeviceReads] | None:
            if n >= len(chunks):
                return None
            return asyncio.ensure_future(devices_of(n, {k: records.pop(k) for k in chunks[n]}))

        # The devices of the next READ_AHEAD chunks are read while one is judged and the one
        # before it written: the device look-ups, most of a first scan's round trips, never
        # wait, and the Graph slots stay full between one chunk's look-ups and the next's.
        reads = [read(n) for n in range(READ_AHEAD)]
        writing: asyncio.Future[None] | None = None
        try:
            for n in range(len(chunks)):
                # Taken out of ``reads`` only once awaited: cancelled with the scan, or done.
                reading = reads.pop(0)
                assert reading is not None
                found = await reading
                reads.append(read(n + READ_AHEAD))
                users = await read_users(
                    self.ctx.graph, found.records, self.intune.policies, self.users
                )
                if self._membership is None:
                    self._membership = await self._audit(audit_read, needed)
                judged = await self._judge(found.problems, users, self._membership)
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self._write(judged))
            if writing is not None:
                await writing
                writing = None
            if self._membership is None:  # nothing new: removals may still bring some back
                self._membership = await self._audit(audit_read, needed)
            await self._brought_back()
        finally:
            running = [f for f in (writing, *reads) if f is not None and not f.done()]
            for future in running:
                future.cancel()
            if running:
                await asyncio.wait(running)

    async def _audit(
        self,
        audit_read: asyncio.Future[tuple[dict[str, datetime], Membership] | None],
        needed: dict[str, datetime],
    ) -> Membership:
        """The audit log as read early, and any ETG the deployments need read from further
        back (a device first seen now, enrolled before the ETG's mark) read again from there."""
        early = await audit_read
        if early is None:
            membership = await read_membership(self.ctx.graph, self.ctx.store, needed)
        else:
            since, membership = early
            again = {g: t for g, t in needed.items() if g not in since or t < since[g]}
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
        prepared: dict[str, Prepared] = {}
        async for records in between_turns(list(users.records.items()), JUDGE_SLICE):
            prepared.update((key, prepare(key, r, evidence)) for key, r in records)
        undecided = {
            k: p.record for k, p in prepared.items() if needs_membership_check(p.facts, now)
        }
        members = await read_current_membership(self.ctx.graph, undecided)
        out: dict[str, tuple[DeploymentRecord, Judgement]] = {}
        async for items in between_turns(list(prepared.items()), JUDGE_SLICE):
            part = dict(items)
            judgements = judge_all(part, members, self.stored.anomalies, self.rules, now)
            out.update(
                (k, (judged_record(part[k].record, j, now), j)) for k, j in judgements.items()
            )
        return out

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


async def _audit_early(
    ctx: JobContext,
    policy_read: asyncio.Future[PolicyRead],
    reading: asyncio.Future[StoredState],
    now: datetime,
) -> tuple[dict[str, datetime], Membership] | None:
    """Each ETG's audit log from its checkpoint (less the overlap), with where each was read
    from; None when the policies or the stored state could not be read (the scan reports
    that itself)."""
    try:
        policy_list = await asyncio.shield(policy_read)
        stored = await asyncio.shield(reading)
    except Exception:
        return None
    if isinstance(policy_list, Unverified):
        return None
    window = Window.of(now, ctx.settings, stored.checkpoints)
    since = audit_since({}, policy_list, window, stored.checkpoints)
    return since, await read_membership(ctx.graph, ctx.store, since)


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
