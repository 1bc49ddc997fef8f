"""The ETG configuration check: is every device preparation policy's ETG usable by Intune?"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitors.graph import directory, payload, policies
from monitors.graph.client import GraphClient
from monitors.jobs.alerting import save_transitions
from monitors.jobs.context import JobContext, missing_permissions, recorded_run
from monitors.jobs.suppressions import settle_suppressions
from monitors.models import (
    JSON,
    Clear,
    EtgFacts,
    EtgLookup,
    Finding,
    Group,
    NotEvaluated,
    PolicyConfigFacts,
    ProvisioningClient,
    Scope,
    Status,
    TenantConfigFacts,
    Unverified,
)
from monitors.rules.config import (
    ConfigEvaluation,
    evaluate_config,
    needs_second_owner_source,
    owner_checks,
)
from monitors.rules.kinds import CONFIG_KINDS, PAYLOAD_NOT_READY
from monitors.rules.lifecycle import Transition, reconcile
from monitors.rules.payload import check_item  # importing it registers payload_not_ready
from monitors.rules.suppression import checker

JOB = "config_check"


@dataclass(frozen=True)
class ConfigCheckReport:
    run_id: str
    checked_at: datetime
    facts: TenantConfigFacts
    evaluation: ConfigEvaluation
    transitions: tuple[Transition, ...]
    # Requests on the wire per endpoint, retries included, as the scan report counts them.
    graph_requests: Mapping[str, int] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return "unverified" if self.evaluation.unverified else "ok"

    def to_json(self) -> dict[str, JSON]:
        return config_report_json(self)


async def gather_config_facts(
    graph: GraphClient, now: datetime, operator_map: Mapping[str, str] | None = None
) -> TenantConfigFacts:
    listed, pc = await asyncio.gather(
        policies.list_device_preparation_policies(graph), directory.find_provisioning_client(graph)
    )
    if isinstance(listed, Unverified):
        return TenantConfigFacts(now, listed, pc)

    # Several policies may share an ETG: read each group once.
    group_reads: dict[str, asyncio.Task[EtgFacts]] = {}

    async def read_etg(group_id: str) -> EtgFacts:
        group = await directory.read_group(graph, group_id)
        owners = await directory.read_owners(graph, group_id) if isinstance(group, Group) else None
        return EtgFacts(group_id, group, owners)

    async def policy_facts(policy: Any, lookup: EtgLookup | Unverified) -> PolicyConfigFacts:
        if isinstance(lookup, Unverified):
            return PolicyConfigFacts(policy, lookup)
        for gid in lookup.group_ids:
            if gid not in group_reads:
                group_reads[gid] = asyncio.ensure_future(read_etg(gid))
        groups = await asyncio.gather(*(group_reads[g] for g in lookup.group_ids))
        return PolicyConfigFacts(policy, lookup, tuple(groups))

    lookups = await policies.retrieve_etgs(graph, listed, operator_map)
    # Only a policy with a known ETG can be judged on what is assigned to it.
    judged = [
        p
        for p, lu in zip(listed, lookups, strict=True)
        if isinstance(lu, EtgLookup) and lu.group_ids
    ]
    per_policy, read = await asyncio.gather(
        asyncio.gather(
            *(policy_facts(p, lookup) for p, lookup in zip(listed, lookups, strict=True))
        ),
        payload.read_payloads(graph, judged),
    )
    confirmed = await _confirm_owners({g: t.result() for g, t in group_reads.items()}, graph, pc)
    judged_ids = {p.id for p in judged}
    return TenantConfigFacts(
        now,
        tuple(
            dataclasses.replace(
                pf,
                groups=tuple(confirmed[g.group_id] for g in pf.groups),
                payload=payload.policy_payload(pf.policy, read)
                if pf.policy.id in judged_ids
                else None,
            )
            for pf in per_policy
        ),
        pc,
    )


async def _confirm_owners(
    etgs: dict[str, EtgFacts], graph: GraphClient, pc: ProvisioningClient | Unverified
) -> dict[str, EtgFacts]:
    """Ask the other ownership sources about each ETG whose v1.0 owners list does not show the
    provisioning client: ownedObjects once for all of them, then beta owners only for groups
    ownedObjects did not settle."""
    doubtful = [g for g, etg in etgs.items() if needs_second_owner_source(etg, pc)]
    if not doubtful:
        return etgs
    held: frozenset[str] | Unverified
    if isinstance(pc, Unverified):
        held = pc  # ownedObjects is addressed by the client's object id
    else:
        held = await directory.read_owned_object_ids(graph, str(pc.object_id))

    def in_owned(group_id: str) -> bool | Unverified:
        return held if isinstance(held, Unverified) else group_id.lower() in held

    unsettled = [g for g in doubtful if in_owned(g) is not True]
    beta = await asyncio.gather(*(directory.read_beta_owners(graph, g) for g in unsettled))
    beta_by_group = dict(zip(unsettled, beta, strict=True))
    out = dict(etgs)
    for g in doubtful:
        out[g] = dataclasses.replace(
            etgs[g], in_owned_objects=in_owned(g), beta_owners=beta_by_group.get(g)
        )
    return out


async def check_config(ctx: JobContext) -> ConfigCheckReport:
    async def body() -> ConfigCheckReport:
        now = ctx.clock.now()
        facts = await gather_config_facts(ctx.graph, now, ctx.settings.policy_groups)
        existing = await ctx.store.anomalies.by_key(CONFIG_KINDS)
        open_subjects = [
            a.subject
            for a in existing.values()
            if a.subject.scope is Scope.POLICY and a.status is not Status.RESOLVED
        ]
        evaluation = evaluate_config(facts, open_subjects)
        suppressions = await ctx.store.suppressions.all()
        transitions = reconcile(existing, evaluation.verdicts, now, checker(suppressions, now))
        routes = ctx.settings.alert_routes
        await save_transitions(ctx.store, transitions, ctx.run_id, now, routes)
        transitions += await settle_suppressions(ctx.store, now, routes, CONFIG_KINDS, ctx.run_id)
        for t in transitions:
            if t.change.value != "updated":
                ctx.log.info(
                    "anomaly." + t.change.value,
                    kind=t.anomaly.kind,
                    policy_id=t.anomaly.subject.policy_id,
                )
        return ConfigCheckReport(
            ctx.run_id, now, facts, evaluation, tuple(transitions), dict(ctx.graph.counts)
        )

    def summarize(report: ConfigCheckReport) -> tuple[str, dict[str, Any], list[Unverified]]:
        findings = [v for v in report.evaluation.verdicts if isinstance(v, Finding)]
        policies_checked = (
            len(report.facts.policies) if isinstance(report.facts.policies, tuple) else 0
        )
        summary = {
            "policies": policies_checked,
            "healthy_policies": len(report.evaluation.healthy_policies),
            "findings": len(findings),
            "changes": {
                t.change.value: sum(1 for x in report.transitions if x.change is t.change)
                for t in report.transitions
            },
        }
        return report.outcome, summary, list(report.evaluation.unverified)

    return await recorded_run(ctx, JOB, body, summarize)


def config_report_json(report: ConfigCheckReport) -> dict[str, JSON]:
    """The machine-readable form of a run, shared by the CLI's --json and the HTTP API."""
    by_policy: dict[str | None, list[Any]] = {}
    for verdict in report.evaluation.verdicts:
        by_policy.setdefault(verdict.subject.policy_id, []).append(verdict)

    pc = report.facts.provisioning_client

    def policy_entry(pf: PolicyConfigFacts) -> dict[str, JSON]:
        verdicts = by_policy.get(pf.policy.id, [])
        names = {g.group_id: g.group.display_name for g in pf.groups if isinstance(g.group, Group)}
        findings = [v for v in verdicts if isinstance(v, Finding)]
        unknown = [u for v in verdicts if isinstance(v, NotEvaluated) for u in v.unverified]
        status = (
            "broken"
            if findings
            else "unverified"
            if unknown
            else ("healthy" if all(isinstance(v, Clear) for v in verdicts) else "unverified")
        )
        return {
            "id": pf.policy.id,
            "name": pf.policy.name,
            "etg_group_ids": list(pf.etg.group_ids) if isinstance(pf.etg, EtgLookup) else None,
            "etg_source": pf.etg.source if isinstance(pf.etg, EtgLookup) else None,
            "etg_group_names": [
                g.group.display_name for g in pf.groups if isinstance(g.group, Group)
            ],
            "timeout_minutes": pf.policy.timeout_minutes,
            "etg_owners": [
                {**c.to_json(), "group_name": names.get(c.group_id)} for c in owner_checks(pf, pc)
            ],
            "status": status,
            "payload": payload_readiness_json(pf, verdicts),
            "findings": [
                {"kind": f.kind, "explanation": f.explanation, "fix": f.fix} for f in findings
            ],
            "unverified": [u.to_json() for u in unknown],
        }

    pc_state = (
        "unverified"
        if isinstance(pc, Unverified)
        else ("present" if isinstance(pc, ProvisioningClient) and pc.present else "missing")
    )
    tenant_findings = [v for v in by_policy.get(None, []) if isinstance(v, Finding)]
    return {
        "run_id": report.run_id,
        "checked_at": report.checked_at.isoformat(),
        "outcome": report.outcome,
        "provisioning_client": pc_state,
        "tenant_findings": [
            {"kind": f.kind, "explanation": f.explanation, "fix": f.fix} for f in tenant_findings
        ],
        "policies": [policy_entry(p) for p in report.facts.policies]
        if isinstance(report.facts.policies, tuple)
        else None,
        "unverified": [u.to_json() for u in report.evaluation.unverified],
        "missing_permissions": missing_permissions(list(report.evaluation.unverified)),
        "changes": [
            {"kind": t.anomaly.kind, "subject": t.anomaly.subject.key, "change": t.change.value}
            for t in report.transitions
            if t.change.value != "updated"
        ],
        "graph_requests": dict(report.graph_requests),
    }


def payload_readiness_json(pf: PolicyConfigFacts, verdicts: list[Any]) -> dict[str, JSON]:
    """Whether the apps and scripts a policy selects can install, item by item, as the
    payload_not_ready rule judged them."""
    verdict = next((v for v in verdicts if v.kind == PAYLOAD_NOT_READY.name), None)
    status = {Finding: "not_ready", Clear: "ready", NotEvaluated: "unverified"}.get(
        type(verdict), "unverified"
    )
    selects = pf.policy.allowed_app_ids or pf.policy.allowed_script_ids
    if status == "ready" and pf.payload is None and selects:
        status = "not_checked"  # no ETG to check the assignments against
    items: list[JSON] = []
    if pf.payload is not None and isinstance(pf.etg, EtgLookup):
        etg = frozenset(g.lower() for g in pf.etg.group_ids)
        for facts in pf.payload:
            check = check_item(facts, etg)
            ready = not check.problems and not check.unverified
            items.append({**check.to_json(), "ready": ready})
    return {
        "status": status,
        "reason": verdict.reason if isinstance(verdict, Clear | NotEvaluated) else None,
        "apps": len(pf.policy.allowed_app_ids),
        "scripts": len(pf.policy.allowed_script_ids),
        "items": items,
    }
