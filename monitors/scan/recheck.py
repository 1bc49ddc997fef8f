"""Targeted re-checks: between two scans, judge again only the pending deployments something
has just changed for, with the scan's facts and rules, so an alert need not wait for the scan.

Run by the notifications job every minute, after its delta catch-up:

1. the pending set and its records, once (``ScanState``);
2. ``select`` (pure): completed deployments whose device has a join or removal observed in a
   group caught up by this run that its record does not hold yet, and successful deployments
   whose completion plus the membership grace has passed since they were last judged; at most
   ``RECHECK_LIMIT``, oldest completion first;
3. the stored events with the change-notification observations, the policy the scan resolved,
   and the audit log as far as the scan read it (its audit checkpoints): no report, no audit
   read, no policy read; one live ``checkMemberGroups`` pass where only it can decide;
4. ``judge_all`` with the scan's rules, then anomaly changes (each with its alerts), records
   and the pending set, in the scan's order. The scan's checkpoints never move: a re-check
   read neither the report nor the audit log.

Steps 1 and 2 only read. When something is chosen, the scan's lease is taken without waiting
for steps 3 and 4: while the scan holds it the scan is judging every pending deployment anyway,
and the two never write the same record at once; a scan that finished in between makes what
was read stale, and the re-check gives way to the next run. A quiet minute takes no lease.
The scan's full pass stays the safety net for whatever a re-check skips or leaves waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from monitors.graph.policies import PolicyWithEtg
from monitors.jobs.context import BRIEF_HOLDER, JobContext
from monitors.models import (
    DeploymentStatus,
    EtgLookup,
    MembershipEvent,
    NotEvaluated,
    PolicyMatch,
    Unverified,
)
from monitors.rules.enrollment import Judgement, JudgementState, needs_membership_check
from monitors.rules.kinds import DEVICE_KINDS, PAYLOAD_INCOMPLETE
from monitors.rules.lifecycle import Transition, reconcile
from monitors.rules.suppression import checker
from monitors.scan.coverage import Window, audit_mark
from monitors.scan.facts import (
    Evidence,
    Prepared,
    judge_all,
    membership_grace,
    prepare,
    scan_rules,
)
from monitors.scan.reads import Membership, UserReads, read_current_membership
from monitors.scan.write import judged_record, save_anomaly_changes, save_deployments
from monitors.store.notifications import NotificationStore
from monitors.store.scan_state import DeploymentRecord, ScanState
from monitors.store.tables import LeaseHeld

# A minute's re-check stays a few $batch requests (directoryobject-checkmembergroups.md, 20
# requests to a $batch: json-batching.md) and a few record transactions, however many
# notifications arrived.
RECHECK_LIMIT = 200
SCAN_LEASE = "scan"
# Shorter than a job's lease: a re-check that died must not keep the next scan out for long.
LEASE_SECONDS = 5 * 60
# An observation is stamped when its notifications run started and stored a little later, so
# one stored while a scan was reading can be older than that scan's records.
OBSERVATION_MARGIN = timedelta(minutes=15)
# The audit log of an ETG the scan never read has settled nothing.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
SKIPPED_SCAN_RUNNING = "the scan is running: it judges every pending deployment now"
SKIPPED_SCAN_RAN = "a scan finished while the deployments were chosen: chosen again next run"


@dataclass(frozen=True, slots=True)
class Selection:
    keys: tuple[str, ...]  # to re-check now, oldest completion first
    waiting: tuple[str, ...]  # affected too, beyond the limit: the next run or the scan
    deferred_groups: frozenset[str]  # caught-up groups with a changed deployment waiting


@dataclass
class Recheck:
    """What one re-check did, for the notifications run's summary."""

    rechecked: int = 0
    waiting: int = 0
    limit: int = field(default_factory=lambda: RECHECK_LIMIT)
    skipped: str | None = None
    alerts: int = 0
    deferred_groups: set[str] = field(default_factory=set)
    unverified: list[Unverified] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


def _etgs(record: DeploymentRecord) -> tuple[str, ...]:
    return record.policy.etg_group_ids if record.policy is not None else ()


def _decidable(record: DeploymentRecord) -> bool:
    """Only a completed, successful deployment with a known device and ETG can be decided
    without the scan's reads; the others wait for it."""
    d = record.deployment
    return (
        d.status is DeploymentStatus.SUCCESS
        and d.completed_at is not None
        and bool(record.object_id)
        and bool(_etgs(record))
    )


def changed_groups(
    record: DeploymentRecord,
    observed: Mapping[str, Sequence[MembershipEvent]],
    notified: Iterable[str],
) -> set[str]:
    """The caught-up ETGs of this deployment in which its device was seen joining or leaving
    and its record does not hold that observation yet."""
    groups = set(_etgs(record)) & set(notified)
    known = {e.event_id for e in record.events}
    return {
        e.group_id
        for e in observed.get(record.object_id or "", ())
        if e.group_id in groups and e.event_id not in known
    }


def grace_passed_unjudged(record: DeploymentRecord, now: datetime, grace: timedelta | None) -> bool:
    """Completed plus the grace has passed, and no judgement since then (none asked the live
    membership then). Never with early conclusion off (``grace`` None): then only the audit
    log, which the scan reads, can conclude."""
    completed = record.deployment.completed_at
    if completed is None or grace is None:
        return False
    due = completed + grace
    return due <= now and (record.updated_at is None or record.updated_at < due)


def select(
    records: Mapping[str, DeploymentRecord],
    observed: Mapping[str, Sequence[MembershipEvent]],
    notified: Iterable[str],
    now: datetime,
    grace: timedelta | None,
    limit: int = RECHECK_LIMIT,
) -> Selection:
    """The pending deployments worth judging again now, at most ``limit``, oldest completion
    first; and the caught-up groups whose changed deployments did not all fit."""
    notified = set(notified)
    changes: dict[str, set[str]] = {}
    affected: list[str] = []
    for key, record in records.items():
        if not _decidable(record):
            continue
        groups = changed_groups(record, observed, notified)
        if groups or grace_passed_unjudged(record, now, grace):
            changes[key] = groups
            affected.append(key)

    def age(key: str) -> tuple[datetime, str]:
        return (records[key].deployment.completed_at or now, key)

    affected.sort(key=age)
    chosen, waiting = affected[:limit], affected[limit:]
    deferred = frozenset(g for key in waiting for g in changes[key])
    return Selection(tuple(chosen), tuple(waiting), deferred)


def observation_since(
    records: Mapping[str, DeploymentRecord],
    groups: Iterable[str],
    now: datetime,
    grace: timedelta | None,
    floor: datetime,
) -> dict[str, datetime]:
    """Per group to read: from the oldest last judgement of a deployment that may be re-checked
    in it (less the margin), never before ``floor``. The groups are those caught up now and
    those of deployments whose grace has just passed (their newest observations count too)."""
    wanted = set(groups)
    since: dict[str, datetime] = {}
    for record in records.values():
        if not _decidable(record):
            continue
        etgs = set(_etgs(record))
        mine = etgs & wanted if not grace_passed_unjudged(record, now, grace) else etgs
        judged = record.updated_at or record.deployment.enrolled_at
        for g in mine:
            since[g] = min(since.get(g, judged), judged)
    return {g: max(t - OBSERVATION_MARGIN, floor) for g, t in since.items()}


def audit_settled_until(
    checkpoints: Mapping[str, datetime], group_ids: Iterable[str], latency: timedelta
) -> datetime:
    """What the audit log the scan last read can tell: each ETG's events up to its checkpoint
    less the latency with which events arrive, the least of the ETGs."""
    marks = [audit_mark(checkpoints, g) for g in group_ids]
    if not marks or any(m is None for m in marks):
        return NEVER
    return min(m for m in marks if m is not None) - latency


def without_payload(judgement: Judgement) -> Judgement:
    """The install reports are read by the scan alone: a re-check leaves that kind as it was
    and never settles a deployment the scan has yet to judge it for."""
    verdicts = tuple(
        NotEvaluated(v.kind, v.subject, reason="judged by the scan", pending=True)
        if v.kind == PAYLOAD_INCOMPLETE.name
        else v
        for v in judgement.verdicts
    )
    state = judgement.state
    if state is JudgementState.CONCLUSIVE:
        state = JudgementState.PENDING
    return dataclasses.replace(judgement, verdicts=verdicts, state=state)


def prepare_stored(
    key: str, record: DeploymentRecord, base: Evidence, checkpoints: Mapping[str, datetime]
) -> Prepared:
    """The scan's facts for a stored record, on the policy the scan resolved for it (its
    evidence stays word for word the same) and the audit log as far as the scan read it."""
    match = record.policy
    assert match is not None  # select() takes only deployments with a known ETG
    lookup = EtgLookup(match.etg_group_ids, match.etg_source)
    p = prepare(key, record, dataclasses.replace(base, policies=[(match.policy, lookup)]))
    latency = timedelta(minutes=base.settings.audit_latency_minutes)
    facts = dataclasses.replace(
        p.facts,
        policy=match,
        audit_settled_until=audit_settled_until(checkpoints, match.etg_group_ids, latency),
    )
    return Prepared(dataclasses.replace(p.record, policy=match), facts)


def stored_policies(records: Iterable[DeploymentRecord]) -> list[PolicyWithEtg]:
    """The policies the records name, for the scan's rules (the most patient timeout)."""
    seen: dict[str, PolicyMatch] = {}
    for r in records:
        if r.policy is not None:
            seen.setdefault(r.policy.policy.id, r.policy)
    return [(m.policy, EtgLookup(m.etg_group_ids, m.etg_source)) for m in seen.values()]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the store held when the deployments to re-check were chosen."""

    pending: dict[str, str]
    checkpoints: dict[str, datetime]
    records: dict[str, DeploymentRecord]
    observed: dict[str, list[MembershipEvent]]
    window: Window
    selection: Selection


async def recheck(ctx: JobContext, notified: Iterable[str]) -> Recheck:
    """Re-check the deployments affected by the groups ``notified`` (caught up through delta
    by this run) and those whose grace has passed. Choosing reads only; the scan's lease is
    taken only when there is something to judge, so a quiet minute never keeps a scan out."""
    now, groups = ctx.clock.now(), set(notified)
    plan = await _plan(ctx, groups, now)
    chosen = plan.selection
    if not chosen.keys:
        return Recheck(waiting=len(chosen.waiting), deferred_groups=set(chosen.deferred_groups))
    # Held for seconds: a scan that starts meanwhile waits for it instead of skipping.
    owner = BRIEF_HOLDER + ctx.run_id
    try:
        lease = await ctx.store.leases.acquire(SCAN_LEASE, owner, now, LEASE_SECONDS)
    except LeaseHeld:
        ctx.log.info("recheck.skipped", reason=SKIPPED_SCAN_RUNNING)
        return Recheck(skipped=SKIPPED_SCAN_RUNNING, deferred_groups=groups)
    try:
        # A scan that finished since the records were read has judged them on more than
        # this would: what was read is stale, and the next minute chooses again.
        if await ScanState(ctx.store).checkpoints() != plan.checkpoints:
            ctx.log.info("recheck.skipped", reason=SKIPPED_SCAN_RAN)
            return Recheck(skipped=SKIPPED_SCAN_RAN, deferred_groups=groups)
        return await _judge_and_write(ctx, plan, now)
    finally:
        await ctx.store.leases.release(SCAN_LEASE, owner, lease)


async def _observed(
    ctx: JobContext, since: Mapping[str, datetime]
) -> dict[str, list[MembershipEvent]]:
    notes = NotificationStore(ctx.store)
    groups = sorted(since)
    found = await asyncio.gather(*(notes.observations(g, since[g]) for g in groups))
    by_object: dict[str, list[MembershipEvent]] = {}
    for events in found:
        for event in events:
            by_object.setdefault(event.device_object_id, []).append(event)
    return by_object


async def _plan(ctx: JobContext, notified: set[str], now: datetime) -> Plan:
    settings, state = ctx.settings, ScanState(ctx.store)
    pending, checkpoints = await asyncio.gather(state.pending(), state.checkpoints())
    records = await state.records_by_keys(pending) if pending else {}
    grace = membership_grace(settings)
    window = Window.of(now, settings, checkpoints)
    since = observation_since(records, notified, now, grace, window.lookback_start)
    observed = await _observed(ctx, since)
    chosen = select(records, observed, notified, now, grace, RECHECK_LIMIT)
    return Plan(pending, checkpoints, records, observed, window, chosen)


async def _judge_and_write(ctx: JobContext, plan: Plan, now: datetime) -> Recheck:
    settings, records, chosen = ctx.settings, plan.records, plan.selection
    anomalies, suppressions = await asyncio.gather(
        ctx.store.anomalies.by_key(DEVICE_KINDS), ctx.store.suppressions.all()
    )
    base = Evidence(
        policies=[],
        window=plan.window,
        settings=settings,
        device_problems={},
        users=UserReads({}, {}, {}, []),
        membership=Membership(plan.observed, {}, {}),
        payload=None,
    )
    prepared = {k: prepare_stored(k, records[k], base, plan.checkpoints) for k in chosen.keys}
    undecided = {k: p.record for k, p in prepared.items() if needs_membership_check(p.facts, now)}
    members = await read_current_membership(ctx.graph, undecided)
    rules = scan_rules(settings, stored_policies(records.values()))
    judgements = judge_all(prepared, members, anomalies, rules, now)
    if settings.detailed_reports:
        judgements = {k: without_payload(j) for k, j in judgements.items()}
    verdicts = [v for j in judgements.values() for v in j.verdicts]
    transitions = reconcile(
        anomalies, verdicts, now, checker(suppressions, now), refresh_after=timedelta(hours=1)
    )
    judged = {k: judged_record(prepared[k].record, j, now) for k, j in judgements.items()}
    await _write(ctx, transitions, judged, plan.pending, now)
    gaps = {u.detail: u for u in members.values() if isinstance(u, Unverified)}
    return Recheck(
        rechecked=len(judged),
        waiting=len(chosen.waiting),
        alerts=sum(t.alerts for t in transitions),
        deferred_groups=set(chosen.deferred_groups),
        unverified=list(gaps.values()),
        transitions=transitions,
    )


async def _write(
    ctx: JobContext,
    transitions: Sequence[Transition],
    records: Mapping[str, DeploymentRecord],
    pending: Mapping[str, str],
    now: datetime,
) -> None:
    """The scan's order (monitors.scan.write), without its checkpoints: anomaly changes with
    their alerts, the records, then the pending set. A re-check stopped anywhere is repeated:
    what it already stored turns into updates, never a second alert."""
    await save_anomaly_changes(ctx, transitions, now, via="recheck")
    await save_deployments(ctx, records, pending, now)
