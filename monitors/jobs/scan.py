"""The enrollment scan: judge every new and still-open device preparation deployment.

Order of work, chosen so a crash at any point loses nothing and doubles nothing:
facts are read, verdicts computed, anomaly changes stored, deployment records stored, the
pending set updated, and only then the checkpoints advanced. A rerun after a crash reads the
same window again; reconcile turns repeated findings into updates, never new anomalies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
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
    Deployment,
    DeploymentFacts,
    Finding,
    InstallItem,
    MembershipEvent,
    MembershipOp,
    Policy,
    PolicyMatch,
    Status,
    Unverified,
    UnverifiedReason,
)
from monitors.rules.enrollment import (
    Judgement,
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
from monitors.store.scan_state import DeploymentRecord, ScanState

JOB = "scan"
# Report rows and audit events can surface after the scan that should have seen them:
# every scan re-reads this much before its checkpoint, and de-duplicates what it sees twice.
OVERLAP = timedelta(hours=2)
# A deployment that is still not conclusive after this long is given up (reported, not alerted).
GIVE_UP_AFTER = timedelta(days=30)
REPORT_SOURCE = "POST /beta/deviceManagement/reports/exportJobs (AutopilotV2DeploymentStatus)"
MD_SOURCE = "GET /v1.0/deviceManagement/managedDevices"
DEVICES_SOURCE = "GET /v1.0/devices?$filter=deviceId in (...)"
AUDIT_SOURCE = "GET /v1.0/auditLogs/directoryAudits"
MEMBER_SOURCE = "POST /v1.0/devices/{id}/checkMemberGroups"

PolicyEntry = tuple[Policy, tuple[str, ...] | Unverified]


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


async def policies_with_etgs(graph: GraphClient) -> list[PolicyEntry] | Unverified:
    listed = await attempt(
        policies.list_device_preparation_policies(graph),
        policies.LIST_SOURCE,
        permissions.CONFIGURATION_POLICIES,
    )
    if isinstance(listed, Unverified):
        return listed
    lookups = await policies.retrieve_etgs(graph, [p.id for p in listed])
    return [
        (
            p,
            lookup
            if isinstance(lookup, Unverified)
            else tuple(g.lower() for g in lookup.group_ids),
        )
        for p, lookup in zip(listed, lookups, strict=True)
    ]


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
        policies_with_etgs(graph),
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

    # 2. which deployments need judging -------------------------------------------------------
    candidates = {
        k: d for k, d in deployments.items() if d.enrolled_at >= window_start or k in pending
    }
    stored = await state.records_by_keys(set(candidates) | set(pending))
    records: dict[str, DeploymentRecord] = {}
    for key, deployment in candidates.items():
        record = stored.get(key)
        if record is not None and record.state == "conclusive" and key not in pending:
            continue
        record = record or DeploymentRecord(deployment)
        record.deployment = deployment
        records[key] = record
    for key in pending:
        if key not in records and key in stored:
            records[key] = stored[key]  # aged out of the report: judge on what was stored

    # 3. identities: managed device -> Entra device id -> Entra object id ---------------------
    device_problem: dict[str, Unverified] = {}
    need_md = [r for r in records.values() if r.azure_ad_device_id is None]
    if need_md:
        since = min(r.deployment.enrolled_at for r in need_md) - timedelta(hours=1)
        listed = await attempt(
            devices.managed_devices_since(graph, since), MD_SOURCE, permissions.MANAGED_DEVICES
        )
        if isinstance(listed, Unverified):
            for r in need_md:
                device_problem[r.key] = listed
        else:
            missing = [
                r.deployment.managed_device_id
                for r in need_md
                if r.deployment.managed_device_id not in listed
            ]
            if missing and len(missing) <= 400:
                extra = await attempt(
                    devices.managed_devices_by_id(graph, missing),
                    MD_SOURCE,
                    permissions.MANAGED_DEVICES,
                )
                if isinstance(extra, dict):
                    listed.update(extra)
            for r in need_md:
                md = listed.get(r.deployment.managed_device_id)
                if md is not None:
                    r.azure_ad_device_id = md.azure_ad_device_id
                    r.enrollment_profile_name = md.enrollment_profile_name
    need_obj = [r for r in records.values() if r.azure_ad_device_id and not r.object_id]
    if need_obj:
        mapped = await attempt(
            devices.entra_object_ids(graph, [r.azure_ad_device_id or "" for r in need_obj]),
            DEVICES_SOURCE,
            permissions.DEVICES,
        )
        for r in need_obj:
            if isinstance(mapped, Unverified):
                device_problem[r.key] = mapped
            else:
                r.object_id = mapped.get(r.azure_ad_device_id or "")

    # 4. membership events from the audit log, per ETG ----------------------------------------
    etg_ids = sorted(
        {g for _, etgs in policy_list if not isinstance(etgs, Unverified) for g in etgs}
    )
    # A policy whose ETG could not be read has a group whose events were not read either.
    etg_unknown = any(isinstance(etgs, Unverified) for _, etgs in policy_list)
    audit_since = (checkpoints["audit"] - OVERLAP) if "audit" in checkpoints else window_start
    # Every device judged must have its membership events read back to its enrollment, even
    # when an earlier scan could not map it (its events were never collected then).
    uncovered = [
        r.audit_needed_from(lookback_start)
        for r in records.values()
        if r.object_id and not r.covered(lookback_start)
    ]
    if uncovered:
        audit_since = min(audit_since, min(uncovered))
    audit_since = max(audit_since, lookback_start)
    audit_results = await asyncio.gather(
        *(
            attempt(
                audit.membership_events(graph, g, audit_since), AUDIT_SOURCE, permissions.AUDIT_LOGS
            )
            for g in etg_ids
        )
    )
    events_by_object: dict[str, list[MembershipEvent]] = {}
    audit_gaps: dict[str, Unverified] = {}
    for group_id, result in zip(etg_ids, audit_results, strict=True):
        if isinstance(result, Unverified):
            audit_gaps[group_id] = result
            continue
        for event in result:
            events_by_object.setdefault(event.device_object_id, []).append(event)
    # Joins and removals seen through change notifications: upper bounds of when they happened,
    # known within seconds while the audit log may take an hour.
    notes = NotificationStore(ctx.store)
    for group_id in etg_ids:
        for event in await notes.observations(group_id, audit_since):
            events_by_object.setdefault(event.device_object_id, []).append(event)
    settled_until = now - timedelta(minutes=settings.audit_latency_minutes)

    # A removal can come long after a deployment was judged: bring those records back.
    tracked = {r.object_id for r in records.values() if r.object_id}
    removed_elsewhere = {
        obj
        for obj, evs in events_by_object.items()
        if obj not in tracked and any(e.op is MembershipOp.REMOVE for e in evs)
    }
    if removed_elsewhere:
        for key, removed_record in (await state.deployments_of(removed_elsewhere)).items():
            records.setdefault(key, removed_record)

    # An open etg_missing or etg_removed can still clear (the device is added back): bring
    # back those whose device has membership events in this window.
    existing = await ctx.store.anomalies.by_key(DEVICE_KINDS)
    watched = {
        a.subject.deployment_key
        for a in existing.values()
        if a.kind in (ETG_MISSING.name, ETG_REMOVED.name)
        and a.status is not Status.RESOLVED
        and a.subject.deployment_key
        and a.subject.deployment_key not in records
        and a.evidence.get("device_object_id") in events_by_object
    }
    if watched:
        records.update(await state.records_by_keys(watched))

    # 5. judge --------------------------------------------------------------------------------

    def facts_for(r: DeploymentRecord, member: bool | Unverified | None) -> DeploymentFacts:
        r.merge_events(events_by_object.get(r.object_id or "", ()))
        if r.object_id and not audit_gaps and not etg_unknown:
            # This scan read the audit log from audit_since for every ETG.
            r.audit_from = min(r.audit_from or audit_since, audit_since)
        joined = {e.group_id for e in r.events if e.op is MembershipOp.ADD}
        match = resolve_policy(r.enrollment_profile_name, policy_list, joined)
        if isinstance(match, PolicyMatch):
            r.policy = match
        gaps = [
            audit_gaps[g]
            for g in (match.etg_group_ids if isinstance(match, PolicyMatch) else ())
            if g in audit_gaps
        ]
        object_id: str | Unverified | None = r.object_id
        if r.key in device_problem and not r.object_id:
            object_id = device_problem[r.key]
        items: tuple[InstallItem, ...] | Unverified | None = None
        if isinstance(payload, Unverified):
            items = payload
        elif payload is not None:
            items = payload.get(r.deployment.managed_device_id, ())
        events: tuple[MembershipEvent, ...] | Unverified = tuple(r.events)
        if gaps:
            events = gaps[0]
        elif r.object_id and not r.covered(lookback_start):
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
            audit_settled_until=settled_until,
            is_member_now=member,
            payload=items,
        )

    def judged(r: DeploymentRecord, member: bool | Unverified | None = None) -> Judgement:
        previously = anomaly_key(ETG_MISSING.name, f"device:{r.key}") in existing
        return judge(
            facts_for(r, member), now, rules, previously_missing=previously or r.previously_missing
        )

    judgements = {key: judged(r) for key, r in records.items()}
    to_check = {
        key: records[key]
        for key in judgements
        if needs_membership_check(facts_for(records[key], None))
    }
    if to_check:
        groups = {g for r in to_check.values() if r.policy for g in r.policy.etg_group_ids}
        members = await attempt(
            devices.member_groups(graph, [r.object_id or "" for r in to_check.values()], groups),
            MEMBER_SOURCE,
            permissions.GROUP_READ,
        )
        for key, r in to_check.items():
            member: bool | Unverified
            if isinstance(members, Unverified):
                member = members
            else:
                etgs = set(r.policy.etg_group_ids) if r.policy else set()
                member = bool(members.get(r.object_id or "", set()) & etgs)
            judgements[key] = judged(r, member)

    # 6. store: anomalies, then records, then the pending set, then checkpoints ---------------
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
    await state.save_records(list(records.values()), now)
    await state.set_pending(
        [r for r in records.values() if r.state not in ("conclusive", "expired")],
        [k for k in done if k in pending],
    )
    advance = {"deployments": now}
    if not audit_gaps and not etg_unknown:
        advance["audit"] = now
    await state.advance(advance)

    report.judgements = list(judgements.values())
    report.transitions = transitions
    report.checkpoint_advanced = True
    report.graph_requests = dict(graph.counts)
    return report
