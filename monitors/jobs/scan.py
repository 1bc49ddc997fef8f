"""The enrollment scan: judge every new and still-open device preparation deployment.

Order of work, chosen so a crash at any point loses nothing and doubles nothing:
facts are read, verdicts computed, anomaly changes stored, deployment records stored, the
pending set updated, and only then the checkpoints advanced. A rerun after a crash reads the
same window again; reconcile turns repeated findings into updates, never new anomalies.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitors.graph import audit, devices, permissions, policies, reports
from monitors.graph.client import GraphClient
from monitors.graph.errors import attempt
from monitors.jobs.alerting import save_transitions
from monitors.jobs.context import JobContext, missing_permissions, recorded_run
from monitors.jobs.suppressions import settle_suppressions
from monitors.models import (
    JSON,
    Anomaly,
    Deployment,
    DeploymentFacts,
    Finding,
    InstallItem,
    MembershipEvent,
    MembershipOp,
    PolicyMatch,
    Status,
    Unverified,
    UnverifiedReason,
    UserPolicies,
)
from monitors.rules.enrollment import (
    Judgement,
    PolicyEntry,
    ScanRules,
    etg_outcome,
    judge,
    needs_membership_check,
    resolve_policy,
)
from monitors.rules.kinds import DEVICE_KINDS, ETG_MISSING, ETG_REMOVED
from monitors.rules.lifecycle import Change, Transition, anomaly_key, reconcile
from monitors.rules.suppression import checker
from monitors.store.notifications import NotificationStore
from monitors.store.scan_state import AUDIT_CHECKPOINT, DeploymentRecord, ScanState

JOB = "scan"
# Report rows and audit events can surface after the scan that should have seen them:
# every scan re-reads this much before its checkpoint, and de-duplicates what it sees twice.
OVERLAP = timedelta(hours=2)
# A deployment that is still not conclusive after this long is given up (reported, not alerted).
GIVE_UP_AFTER = timedelta(days=30)
REPORT_SOURCE = "POST /beta/deviceManagement/reports/exportJobs (AutopilotV2DeploymentStatus)"
MD_SOURCE = "GET /v1.0/deviceManagement/managedDevices/{id}"
DEVICES_SOURCE = "GET /v1.0/devices?$filter=deviceId in (...)"
AUDIT_SOURCE = "GET /v1.0/auditLogs/directoryAudits"
MEMBER_SOURCE = "POST /v1.0/devices/{id}/checkMemberGroups"
USER_SOURCE = "POST /v1.0/users/{upn}/checkMemberGroups"


@dataclass
class ScanReport:
    run_id: str
    scanned_at: datetime
    judgements: list[Judgement] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    unverified: list[Unverified] = field(default_factory=list)
    rows_in_report: int = 0
    graph_requests: dict[str, int] = field(default_factory=dict)
    checkpoint_advanced: bool = False

    @property
    def outcome(self) -> str:
        if self.unverified or any(j.state == "unverified" for j in self.judgements):
            return "unverified"
        return "ok"

    def all_unverified(self) -> list[Unverified]:
        items = list(self.unverified)
        for j in self.judgements:
            items.extend(j.unverified)
        return items

    def to_json(self, devices_limit: int | None = None) -> dict[str, JSON]:
        states = Counter(j.state for j in self.judgements)
        findings = Counter(
            v.kind for j in self.judgements for v in j.verdicts if isinstance(v, Finding)
        )
        reasons = Counter(
            f"{u.source}: {u.reason.value}" + (f" (needs {u.permission})" if u.permission else "")
            for u in self.all_unverified()
        )
        rows = [
            {
                "device_name": j.deployment.device_name,
                "serial_number": j.deployment.serial_number,
                "user_principal_name": j.deployment.user_principal_name,
                "managed_device_id": j.deployment.managed_device_id,
                "policy": j.subject.policy_name,
                "enrolled_at": j.deployment.enrolled_at.isoformat(),
                "deployment_status": j.deployment.status.value,
                "verdict": _verdict_label(j),
                "why": j.summary,
            }
            for j in sorted(self.judgements, key=lambda j: j.deployment.enrolled_at)
        ]
        return {
            "run_id": self.run_id,
            "scanned_at": self.scanned_at.isoformat(),
            "outcome": self.outcome,
            "deployments": {
                "in_report": self.rows_in_report,
                "evaluated": len(self.judgements),
                "conclusive": states["conclusive"],
                "pending": states["pending"],
                "unverified": states["unverified"],
            },
            "findings": dict(sorted(findings.items())),
            "changes": [
                {
                    "kind": t.anomaly.kind,
                    "subject": t.anomaly.subject.key,
                    "device_name": t.anomaly.subject.device_name,
                    "change": t.change.value,
                }
                for t in self.transitions
                if t.change is not Change.UPDATED
            ],
            "unverified": dict(reasons.most_common()),
            "missing_permissions": missing_permissions(self.all_unverified()),
            "graph_requests": self.graph_requests,
            "checkpoint_advanced": self.checkpoint_advanced,
            "devices": rows if devices_limit is None else rows[:devices_limit],
        }


def _verdict_label(j: Judgement) -> str:
    found = [v.kind for v in j.verdicts if isinstance(v, Finding)]
    if found:
        return ",".join(found)
    if j.state == "conclusive" and j.subject.policy_id and not j.subject.group_id:
        return "no ETG"
    return "ok" if j.state == "conclusive" else j.state


async def policies_with_etgs(
    graph: GraphClient, operator_map: Mapping[str, str] | None = None
) -> list[PolicyEntry] | Unverified:
    """Every device preparation policy with its ETG lookup (group ids in lower case) or the
    reason it could not be read: one policy's failure stays with that policy."""
    listed = await attempt(
        policies.list_device_preparation_policies(graph),
        policies.LIST_SOURCE,
        permissions.CONFIGURATION_POLICIES,
    )
    if isinstance(listed, Unverified):
        return listed
    lookups = await policies.retrieve_etgs(graph, listed, operator_map)
    return [
        (
            p,
            lookup
            if isinstance(lookup, Unverified)
            else dataclasses.replace(lookup, group_ids=tuple(g.lower() for g in lookup.group_ids)),
        )
        for p, lookup in zip(listed, lookups, strict=True)
    ]


def etg_ids_of(policy_list: Sequence[PolicyEntry]) -> list[str]:
    return sorted(
        {g for _, etg in policy_list if not isinstance(etg, Unverified) for g in etg.group_ids}
    )


def _parse_rows(rows: list[dict[str, str]]) -> tuple[dict[str, Deployment], list[Unverified]]:
    out: dict[str, Deployment] = {}
    bad: list[Unverified] = []
    for row in rows:
        try:
            deployment = reports.parse_deployment_row(row)
        except ValueError as exc:  # MalformedResponse included
            bad.append(
                Unverified(
                    "AutopilotV2DeploymentStatus row", UnverifiedReason.MALFORMED, str(exc)[:200]
                )
            )
            continue
        out[deployment.key] = deployment
    return out, bad


async def _payload(graph: GraphClient) -> dict[str, tuple[InstallItem, ...]] | Unverified:
    async def read() -> dict[str, tuple[InstallItem, ...]]:
        app_rows, script_rows = await asyncio.gather(
            reports.export_report(graph, reports.APP_REPORT),
            reports.export_report(graph, reports.SCRIPT_REPORT),
        )
        merged: dict[str, list[InstallItem]] = {}
        for source in (
            reports.parse_install_rows(app_rows, "app"),
            reports.parse_install_rows(script_rows, "script"),
        ):
            for device, items in source.items():
                merged.setdefault(device, []).extend(items)
        return {k: tuple(v) for k, v in merged.items()}

    return await attempt(
        read(), "POST exportJobs (detailed app and script reports)", permissions.REPORT_EXPORT
    )


async def run_scan(ctx: JobContext) -> ScanReport:
    async def body() -> ScanReport:
        return await _scan(ctx)

    def summarize(report: ScanReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        data = report.to_json(devices_limit=0)
        summary = {
            "deployments": data["deployments"],
            "findings": data["findings"],
            "changes": Counter(c["change"] for c in data["changes"]),
            "checkpoint_advanced": report.checkpoint_advanced,
        }
        return report.outcome, summary, report.all_unverified()[:50]

    return await recorded_run(ctx, JOB, body, summarize)


@dataclass
class _Run:
    """What one scan has read so far; each step below adds to it."""

    ctx: JobContext
    state: ScanState
    now: datetime
    lookback_start: datetime
    checkpoints: dict[str, datetime]
    policy_list: list[PolicyEntry]
    records: dict[str, DeploymentRecord] = field(default_factory=dict)
    device_problem: dict[str, Unverified] = field(default_factory=dict)
    user_problem: dict[str, Unverified] = field(default_factory=dict)
    partial_users: dict[str, UserPolicies] = field(default_factory=dict)
    # Reads that failed even where other evidence still decided: reported as health.
    gaps: list[Unverified] = field(default_factory=list)
    events_by_object: dict[str, list[MembershipEvent]] = field(default_factory=dict)
    audit_gaps: dict[str, Unverified] = field(default_factory=dict)
    audit_read_from: dict[str, datetime] = field(default_factory=dict)

    @property
    def graph(self) -> GraphClient:
        return self.ctx.graph


async def _scan(ctx: JobContext) -> ScanReport:
    graph, settings = ctx.graph, ctx.settings
    state = ScanState(ctx.store)
    now = ctx.clock.now()
    report = ScanReport(ctx.run_id, now)
    rules = ScanRules(
        stuck_grace=timedelta(minutes=settings.stuck_grace_minutes),
        default_timeout_minutes=60,
    )
    checkpoints = await state.checkpoints()
    lookback_start = now - timedelta(hours=settings.scan_lookback_hours)
    window_start = (
        max(checkpoints["deployments"] - OVERLAP, lookback_start)
        if ("deployments" in checkpoints)
        else lookback_start
    )

    # 1. what Intune says: policies with their ETGs, the deployment report, open work -----------
    payload_task = asyncio.ensure_future(_payload(graph)) if settings.detailed_reports else None
    policy_list, rows, pending = await asyncio.gather(
        policies_with_etgs(graph, settings.policy_groups),
        attempt(
            reports.export_report(graph, reports.DEPLOYMENT_REPORT, reports.DEPLOYMENT_COLUMNS),
            REPORT_SOURCE,
            permissions.REPORT_EXPORT,
        ),
        state.pending(),
    )
    payload = await payload_task if payload_task else None
    if isinstance(policy_list, Unverified) or isinstance(rows, Unverified):
        report.unverified.extend(x for x in (policy_list, rows) if isinstance(x, Unverified))
        report.graph_requests = dict(graph.counts)
        return report
    report.rows_in_report = len(rows)
    known_timeouts = [p.timeout_minutes for p, _ in policy_list if p.timeout_minutes]
    if known_timeouts:
        # A device whose policy is unknown gets the most patient timeout: no false "stuck".
        rules = ScanRules(rules.stuck_grace, max(known_timeouts))
    deployments, bad_rows = _parse_rows(rows)
    report.unverified.extend(bad_rows)
    run = _Run(ctx, state, now, lookback_start, checkpoints, policy_list)

    # 2. which deployments need judging -------------------------------------------------------
    await _select_records(run, deployments, pending, window_start)
    # 3. identities and who enrolled: managed device -> Entra ids; the user's assigned policies
    await _read_identities(run)
    await _read_user_policies(run)
    # 4. membership events: the audit log per ETG, and what change notifications saw ---------
    await _read_membership_events(run)
    existing = await _bring_back_affected(run)
    # 5. judge --------------------------------------------------------------------------------
    judgements = await _judge_all(run, existing, rules, payload)
    # 6. store: anomalies, then records, then the pending set, then checkpoints ---------------
    transitions = await _store(run, existing, judgements, pending)
    report.unverified.extend(run.gaps)
    report.judgements = list(judgements.values())
    report.transitions = transitions
    report.checkpoint_advanced = True
    report.graph_requests = dict(graph.counts)
    return report


async def _select_records(
    run: _Run, deployments: dict[str, Deployment], pending: dict[str, str], window_start: datetime
) -> None:
    candidates = {
        k: d for k, d in deployments.items() if d.enrolled_at >= window_start or k in pending
    }
    stored = await run.state.records_by_keys(set(candidates) | set(pending))
    for key, deployment in candidates.items():
        record = stored.get(key)
        if record is not None and record.state == "conclusive" and key not in pending:
            continue
        record = record or DeploymentRecord(deployment)
        record.deployment = deployment
        run.records[key] = record
    for key in pending:
        if key not in run.records and key in stored:
            run.records[key] = stored[key]  # aged out of the report: judge on what was stored


def _named_policy(run: _Run, r: DeploymentRecord) -> bool:
    """The enrollment profile name names exactly one policy (resolution needs nothing else)."""
    name = (r.enrollment_profile_name or "").strip().casefold()
    return bool(name) and sum(p.name.strip().casefold() == name for p, _ in run.policy_list) == 1


async def _read_identities(run: _Run) -> None:
    """Managed devices by id (only that read carries enrollmentProfileName: list answers leave
    it null), 20 to a $batch; then Entra object ids, 15 to a filter."""
    need_md = [
        r
        for r in run.records.values()
        if r.azure_ad_device_id is None
        or (r.enrollment_profile_name is None and not r.profile_read)
    ]
    if need_md:
        read = await attempt(
            devices.managed_devices_by_id(
                run.graph, [r.deployment.managed_device_id for r in need_md]
            ),
            MD_SOURCE,
            permissions.MANAGED_DEVICES,
        )
        for r in need_md:
            if isinstance(read, Unverified):
                run.device_problem[r.key] = read
                continue
            md = read.get(r.deployment.managed_device_id)
            r.profile_read = True
            if md is not None:
                r.azure_ad_device_id = md.azure_ad_device_id or r.azure_ad_device_id
                r.enrollment_profile_name = md.enrollment_profile_name
    need_obj = [r for r in run.records.values() if r.azure_ad_device_id and not r.object_id]
    if need_obj:
        mapped = await attempt(
            devices.entra_object_ids(run.graph, [r.azure_ad_device_id or "" for r in need_obj]),
            DEVICES_SOURCE,
            permissions.DEVICES,
        )
        for r in need_obj:
            if isinstance(mapped, Unverified):
                run.device_problem[r.key] = mapped
            else:
                r.object_id = mapped.get(r.azure_ad_device_id or "")


async def _read_user_policies(run: _Run) -> None:
    """For deployments the profile name does not settle: which policies are assigned to the
    enrolling user, as Intune decides (assignments to user groups, transitive membership)."""
    need = [
        r
        for r in run.records.values()
        if r.user_policies is None
        and r.deployment.user_principal_name
        and not _named_policy(run, r)
        and len(run.policy_list) > 1
    ]
    if not need:
        return
    assignments = await policies.policy_assignments(run.graph, [p.id for p, _ in run.policy_list])
    run.gaps.extend(
        {g.detail: g for g in assignments.values() if isinstance(g, Unverified)}.values()
    )
    readable = {p: g for p, g in assignments.items() if not isinstance(g, Unverified)}
    unreadable = tuple(p for p, g in assignments.items() if isinstance(g, Unverified))
    groups = sorted({g for a in readable.values() for g in (*a.include_groups, *a.exclude_groups)})
    users = sorted({(r.deployment.user_principal_name or "").lower() for r in need})
    found = await attempt(
        devices.check_member_groups(run.graph, "users", {u: groups for u in users}),
        USER_SOURCE,
        f"{permissions.USERS} and {permissions.GROUP_READ}",
    )
    if isinstance(found, Unverified):
        run.gaps.append(found)
    for r in need:
        upn = (r.deployment.user_principal_name or "").lower()
        if isinstance(found, Unverified):
            run.user_problem[r.key] = found
            continue
        member_of = found.get(upn) or set()
        assigned = tuple(p for p, a in readable.items() if a.includes(member_of))
        facts = UserPolicies(r.deployment.user_principal_name or upn, assigned, unreadable)
        if unreadable:
            run.user_problem[r.key] = Unverified(
                policies.ASSIGNMENTS_SOURCE,
                UnverifiedReason.UNAVAILABLE,
                f"assignments of {len(unreadable)} policies could not be read",
            )
            r.user_policies = None
            run.partial_users[r.key] = facts
        else:
            r.user_policies = facts


async def _read_membership_events(run: _Run) -> None:
    """The audit log of each ETG from its own checkpoint, widened for any judged device not yet
    covered back to its enrollment; then the joins and removals change notifications saw."""
    etg_ids = etg_ids_of(run.policy_list)
    default_since = run.lookback_start
    if "deployments" in run.checkpoints:
        default_since = max(run.checkpoints["deployments"] - OVERLAP, run.lookback_start)
    legacy = run.checkpoints.get("audit")
    policy_of = {p.id: etg for p, etg in run.policy_list}

    def groups_for(r: DeploymentRecord) -> Sequence[str]:
        if r.policy is not None:
            etg = policy_of.get(r.policy.policy.id)
            if etg is not None and not isinstance(etg, Unverified):
                return etg.group_ids
        return etg_ids  # policy not known yet: any ETG may hold its events

    since: dict[str, datetime] = {}
    for g in etg_ids:
        mark = run.checkpoints.get(AUDIT_CHECKPOINT + g, legacy)
        since[g] = (mark - OVERLAP) if mark is not None else default_since
    for r in run.records.values():
        if not r.object_id:
            continue
        needed = r.audit_needed_from(run.lookback_start)
        for g in groups_for(r):
            if g in since and not r.covered((g,), run.lookback_start):
                since[g] = min(since[g], needed)
    since = {g: max(t, run.lookback_start) for g, t in since.items()}
    results = await asyncio.gather(
        *(
            attempt(
                audit.membership_events(run.graph, g, since[g]),
                AUDIT_SOURCE,
                permissions.AUDIT_LOGS,
            )
            for g in etg_ids
        )
    )
    for group_id, result in zip(etg_ids, results, strict=True):
        if isinstance(result, Unverified):
            run.audit_gaps[group_id] = result
            continue
        run.audit_read_from[group_id] = since[group_id]
        for event in result:
            run.events_by_object.setdefault(event.device_object_id, []).append(event)
    # Joins and removals seen through change notifications: upper bounds of when they happened,
    # known within seconds while the audit log may take an hour.
    notes = NotificationStore(run.ctx.store)
    for group_id in etg_ids:
        for event in await notes.observations(group_id, since[group_id]):
            run.events_by_object.setdefault(event.device_object_id, []).append(event)


async def _bring_back_affected(run: _Run) -> dict[str, Anomaly]:
    """Deployments judged in earlier scans that this scan's events touch again."""
    # A removal can come long after a deployment was judged: bring those records back.
    tracked = {r.object_id for r in run.records.values() if r.object_id}
    removed_elsewhere = {
        obj
        for obj, evs in run.events_by_object.items()
        if obj not in tracked and any(e.op is MembershipOp.REMOVE for e in evs)
    }
    if removed_elsewhere:
        for key, removed_record in (await run.state.deployments_of(removed_elsewhere)).items():
            run.records.setdefault(key, removed_record)
    # An open etg_missing or etg_removed can still clear (the device is added back): bring
    # back those whose device has membership events in this window.
    existing = await run.ctx.store.anomalies.by_key(DEVICE_KINDS)
    watched = {
        a.subject.deployment_key
        for a in existing.values()
        if a.kind in (ETG_MISSING.name, ETG_REMOVED.name)
        and a.status is not Status.RESOLVED
        and a.subject.deployment_key
        and a.subject.deployment_key not in run.records
        and a.evidence.get("device_object_id") in run.events_by_object
    }
    if watched:
        run.records.update(await run.state.records_by_keys(watched))
    return existing


def _facts_for(
    run: _Run,
    r: DeploymentRecord,
    payload: dict[str, tuple[InstallItem, ...]] | Unverified | None,
    member: bool | Unverified | None,
) -> DeploymentFacts:
    settings = run.ctx.settings
    r.merge_events(run.events_by_object.get(r.object_id or "", ()))
    if r.object_id:
        for g, since in run.audit_read_from.items():
            r.mark_read(g, since)
    joined = {e.group_id for e in r.events if e.op is MembershipOp.ADD}
    assigned: UserPolicies | Unverified | None = r.user_policies or run.partial_users.get(r.key)
    if assigned is None and r.key in run.user_problem:
        assigned = run.user_problem[r.key]
    match = resolve_policy(r.enrollment_profile_name, run.policy_list, joined, assigned)
    if match is None and r.key in run.device_problem:
        match = run.device_problem[r.key]  # the profile name could not be read
    if isinstance(match, PolicyMatch):
        r.policy = match
    object_id: str | Unverified | None = r.object_id
    if r.key in run.device_problem and not r.object_id:
        object_id = run.device_problem[r.key]
    items: tuple[InstallItem, ...] | Unverified | None = None
    if isinstance(payload, Unverified):
        items = payload
    elif payload is not None:
        items = payload.get(r.deployment.managed_device_id, ())
    events: tuple[MembershipEvent, ...] | Unverified = tuple(r.events)
    etgs = match.etg_group_ids if isinstance(match, PolicyMatch) else ()
    gaps = [run.audit_gaps[g] for g in etgs if g in run.audit_gaps]
    if gaps:
        events = gaps[0]
    elif r.object_id and not r.covered(etgs, run.lookback_start):
        events = Unverified(
            AUDIT_SOURCE,
            UnverifiedReason.RETENTION,
            "audit events from before this device's enrollment were not read "
            f"(scan lookback {settings.scan_lookback_hours} h)",
        )
    return DeploymentFacts(
        deployment=r.deployment,
        policy=match,
        device_object_id=object_id,
        events=events,
        audit_settled_until=run.now - timedelta(minutes=settings.audit_latency_minutes),
        is_member_now=member,
        payload=items,
    )


async def _judge_all(
    run: _Run,
    existing: dict[str, Anomaly],
    rules: ScanRules,
    payload: dict[str, tuple[InstallItem, ...]] | Unverified | None,
) -> dict[str, Judgement]:
    def judged(r: DeploymentRecord, member: bool | Unverified | None = None) -> Judgement:
        previously = anomaly_key(ETG_MISSING.name, f"device:{r.key}") in existing
        return judge(
            _facts_for(run, r, payload, member),
            run.now,
            rules,
            previously_missing=previously or r.previously_missing,
        )

    records = run.records
    judgements = {key: judged(r) for key, r in records.items()}
    to_check = {
        key: records[key]
        for key in judgements
        if needs_membership_check(_facts_for(run, records[key], payload, None))
    }
    if to_check:
        # Each device is asked only about its own policy's ETGs.
        asks: dict[str, set[str]] = {}
        for r in to_check.values():
            if r.object_id and r.policy:
                asks.setdefault(r.object_id, set()).update(r.policy.etg_group_ids)
        members = await attempt(
            devices.member_groups(run.graph, asks), MEMBER_SOURCE, permissions.GROUP_READ
        )
        for key, r in to_check.items():
            member: bool | Unverified
            if isinstance(members, Unverified):
                member = members
            else:
                etgs = set(r.policy.etg_group_ids) if r.policy else set()
                member = bool(members.get(r.object_id or "", set()) & etgs)
            judgements[key] = judged(r, member)
    return judgements


async def _store(
    run: _Run,
    existing: dict[str, Anomaly],
    judgements: dict[str, Judgement],
    pending: dict[str, str],
) -> list[Transition]:
    ctx, now, records = run.ctx, run.now, run.records
    verdicts = [v for j in judgements.values() for v in j.verdicts]
    suppressions = await ctx.store.suppressions.all()
    transitions = reconcile(
        existing, verdicts, now, checker(suppressions, now), refresh_after=timedelta(hours=1)
    )
    await save_transitions(ctx.store, transitions, ctx.run_id, now)
    for transition in transitions:
        if transition.change is not Change.UPDATED:
            ctx.log.info(
                "anomaly." + transition.change.value,
                kind=transition.anomaly.kind,
                device=transition.anomaly.subject.device_name,
                deployment=transition.anomaly.subject.deployment_key,
            )
    # Expired or lifted suppressions also touch anomalies this run did not judge.
    transitions += await settle_suppressions(ctx.store, now, DEVICE_KINDS, ctx.run_id)
    done: list[str] = []
    for key, j in judgements.items():
        r = records[key]
        r.state = j.state
        r.summary = j.summary
        r.outcome = etg_outcome(j)
        r.joined_at = j.joined_at
        r.findings = tuple(sorted({v.kind for v in j.verdicts if isinstance(v, Finding)}))
        r.previously_missing = r.previously_missing or any(
            isinstance(v, Finding) and v.kind == ETG_MISSING.name for v in j.verdicts
        )
        if j.state != "conclusive" and now - r.deployment.enrolled_at > GIVE_UP_AFTER:
            r.state = "expired"
        if r.state in ("conclusive", "expired"):
            done.append(key)
    await run.state.save_records(list(records.values()), now)
    await run.state.set_pending(
        [r for r in records.values() if r.state not in ("conclusive", "expired")],
        [k for k in done if k in pending],
    )
    # Each ETG's audit checkpoint moves only when that ETG's audit log was read.
    advance = {"deployments": now} | {AUDIT_CHECKPOINT + g: now for g in run.audit_read_from}
    await run.state.advance(advance)
    return transitions
