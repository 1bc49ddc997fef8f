"""How far back the scan reads, and what it has read for each deployment. Pure.

Report rows and audit events can surface after the scan that should have seen them, so every
scan re-reads ``OVERLAP`` before its checkpoints and de-duplicates what it sees twice. Audit
coverage is kept per ETG on each deployment record (``audit_from``): an ETG whose audit read
failed holds back only the deployments of its policy, and is read again from its own checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitors.graph.policies import PolicyWithEtg
from monitors.models import MembershipEvent, Unverified
from monitors.settings import Settings
from monitors.store.scan_state import AUDIT_CHECKPOINT, DeploymentRecord

OVERLAP = timedelta(hours=2)
# Audit events are read from a little before enrollment: the join can precede the report's time.
BEFORE_ENROLLMENT = timedelta(minutes=10)
DEPLOYMENTS_CHECKPOINT = "deployments"
LEGACY_AUDIT_CHECKPOINT = "audit"  # one mark for every ETG, from before it was kept per ETG


@dataclass(frozen=True, slots=True)
class Window:
    now: datetime
    lookback_start: datetime  # no read reaches further back than this
    start: datetime  # deployments enrolled since then are judged (unless already settled)

    @classmethod
    def of(cls, now: datetime, settings: Settings, checkpoints: Mapping[str, datetime]) -> Window:
        lookback_start = now - timedelta(hours=settings.scan_lookback_hours)
        mark = checkpoints.get(DEPLOYMENTS_CHECKPOINT)
        start = lookback_start if mark is None else max(mark - OVERLAP, lookback_start)
        return cls(now, lookback_start, start)


def etg_ids_of(policy_list: Sequence[PolicyWithEtg]) -> list[str]:
    return sorted(
        {g for _, etg in policy_list if not isinstance(etg, Unverified) for g in etg.group_ids}
    )


def audit_needed_from(record: DeploymentRecord, floor: datetime) -> datetime:
    """Where this device's audit events must be read from: a little before enrollment, but
    never before ``floor`` (the scan's look-back), which no read can reach past."""
    return max(record.deployment.enrolled_at - BEFORE_ENROLLMENT, floor)


def covered(record: DeploymentRecord, group_ids: Iterable[str], floor: datetime) -> bool:
    """The audit log of every one of these ETGs was read back to this device's enrollment."""
    needed = audit_needed_from(record, floor)
    return all(
        (start := record.audit_from.get(g)) is not None and start <= needed for g in group_ids
    )


def marked_read(
    audit_from: Mapping[str, datetime], read_from: Mapping[str, datetime]
) -> dict[str, datetime]:
    """Coverage once these ETGs' audit logs were read from these times: the earliest wins."""
    out = dict(audit_from)
    for group_id, since in read_from.items():
        known = out.get(group_id)
        out[group_id] = since if known is None else min(known, since)
    return out


def merged_events(
    known: Sequence[MembershipEvent], seen: Iterable[MembershipEvent]
) -> list[MembershipEvent]:
    """Known events and those seen now, each once (by event id), oldest first."""
    events = list(known)
    ids = {e.event_id for e in events}
    for event in seen:
        if event.event_id not in ids:
            events.append(event)
            ids.add(event.event_id)
    events.sort(key=lambda e: (e.at, e.event_id))
    return events


def audit_mark(checkpoints: Mapping[str, datetime], group_id: str) -> datetime | None:
    """How far the scan has read this ETG's audit log: its own checkpoint, or the one mark
    older installations kept for every ETG."""
    return checkpoints.get(AUDIT_CHECKPOINT + group_id, checkpoints.get(LEGACY_AUDIT_CHECKPOINT))


def audit_since(
    records: Mapping[str, DeploymentRecord],
    policy_list: Sequence[PolicyWithEtg],
    window: Window,
    checkpoints: Mapping[str, datetime],
    *,
    unread_devices: bool = False,
) -> dict[str, datetime]:
    """Where each ETG's audit log is read from: its own checkpoint less the overlap, widened
    for any judged device not yet covered back to its enrollment, never before the look-back.
    ``unread_devices``: also for deployments whose Entra device is not known yet, as if each
    had one: a start no later than what reading their devices first could call for."""
    etg_ids = etg_ids_of(policy_list)
    policy_etgs = {p.id: etg for p, etg in policy_list}
    since: dict[str, datetime] = {}
    for g in etg_ids:
        mark = audit_mark(checkpoints, g)
        since[g] = (mark - OVERLAP) if mark is not None else window.start
    for r in records.values():
        if not r.object_id and not unread_devices:
            continue
        needed = audit_needed_from(r, window.lookback_start)
        etg = policy_etgs.get(r.policy.policy.id) if r.policy is not None else None
        # Policy not known yet: any ETG may hold its events.
        groups = etg.group_ids if etg is not None and not isinstance(etg, Unverified) else etg_ids
        for g in groups:
            # Coverage asked only where it could move the start: most devices enrolled after it.
            if g in since and needed < since[g] and not covered(r, (g,), window.lookback_start):
                since[g] = needed
    return {g: max(t, window.lookback_start) for g, t in since.items()}
