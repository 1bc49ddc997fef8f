"""Human-readable text for the CLI: what an engineer reads at a terminal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from monitors.models import Anomaly, OwnerStatus
from monitors.rules.config import PolicyHealth
from monitors.rules.kinds import DEPLOYMENT_FAILED
from monitors.rules.result_codes import describe_failure

# How check-config's text names each policy's configuration.
_HEALTH_LABELS = {
    PolicyHealth.HEALTHY: "OK",
    PolicyHealth.BROKEN: "BROKEN",
    PolicyHealth.UNVERIFIED: "UNKNOWN",
}


def config_report_text(report: dict[str, Any]) -> str:
    lines = [f"ETG configuration check at {report['checked_at']} (run {report['run_id']})"]
    pc = report["provisioning_client"]
    lines.append(f"Intune Provisioning Client service principal: {pc}")
    for finding in report["tenant_findings"]:
        lines += [f"  BROKEN  tenant: {finding['explanation']}", f"          Fix: {finding['fix']}"]
    policies = report["policies"]
    if policies is None:
        lines.append("Device preparation policies: could not be listed (see unverified below)")
    else:
        lines.append(f"Device preparation policies: {len(policies)}")
        width = max((len(p["name"]) for p in policies), default=10)
        for policy in policies:
            names = policy["etg_group_names"] or policy["etg_group_ids"] or ["(none)"]
            label = _HEALTH_LABELS[PolicyHealth(policy["status"])]
            source = policy.get("etg_source")
            where = f"  ({source})" if source else ""
            lines.append(f"  {label:<7} {policy['name']:<{width}}  ETG: {', '.join(names)}{where}")
            for owner in policy.get("etg_owners", []):
                if owner["status"] != OwnerStatus.NOT_APPLICABLE:
                    lines.append(f"          {_owner_text(owner)}")
            if policy.get("payload"):
                lines += [f"          {line}" for line in _payload_text(policy["payload"])]
            for finding in policy["findings"]:
                lines.append(f"          [{finding['kind']}] {finding['explanation']}")
                lines.append(f"          Fix: {finding['fix']}")
            for item in policy["unverified"]:
                lines.append(f"          could not verify: {_unverified_text(item)}")
    if report["unverified"]:
        lines.append(
            "Monitor health: some facts could not be verified (no anomaly raised for them):"
        )
        lines += [f"  - {_unverified_text(u)}" for u in report["unverified"]]
    if report["missing_permissions"]:
        lines.append("Missing Graph permissions: " + ", ".join(report["missing_permissions"]))
    changes = report["changes"]
    if changes:
        lines.append(
            "Changes this run: "
            + ", ".join(f"{c['change']} {c['kind']} ({c['subject']})" for c in changes)
        )
    else:
        lines.append("Changes this run: none")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _payload_text(payload: dict[str, Any]) -> list[str]:
    """The policy's apps and scripts: ready or not, and what is wrong with each one not."""
    counts = f"{_count(payload['apps'], 'app')}, {_count(payload['scripts'], 'script')}"
    head = f"payload: {payload['status'].replace('_', ' ')} ({counts})"
    if payload.get("reason"):
        head += f": {payload['reason']}"
    lines = [head]
    for item in payload.get("items", []):
        if not item.get("ready"):
            name = item.get("display_name") or item["id"]
            problems = "; ".join(item.get("problems") or []) or "could not be read"
            lines.append(f"  {item['kind']} {name}: {problems}")
    return lines


def _owner_text(owner: dict[str, Any]) -> str:
    """Which sources vouched for the provisioning client's ownership of one ETG."""
    group = owner.get("group_name") or owner["group_id"]
    if owner["status"] == OwnerStatus.OWNER:
        return f"owner of {group}: confirmed by {', '.join(owner['confirmed_by'])}"
    if owner["status"] == OwnerStatus.MISSING:
        return f"owner of {group}: MISSING ({owner['detail']})"
    return f"owner of {group}: unverified ({owner['detail']})"


def _unverified_text(item: dict[str, Any]) -> str:
    text = f"{item['source']}: {item['reason']}"
    if item.get("permission"):
        text += f" (needs {item['permission']})"
    if item.get("detail"):
        text += f" - {item['detail']}"
    return text


def _failure_text(evidence: dict[str, Any]) -> str:
    """A failed deployment's code and phase, decoded from the stored raw values, so that an
    anomaly recorded before the decoder existed reads the same as a new one."""
    code, phase = evidence.get("result_code"), evidence.get("phase")
    failure = describe_failure(
        code if isinstance(code, int | str) else None,
        phase if isinstance(phase, int | str) else None,
    )
    result = failure.result + (f", {failure.meaning}" if failure.name else "")
    return f"Result: {result}; phase: {failure.phase_name or 'not reported'}"


def anomalies_text(anomalies: Iterable[Anomaly]) -> str:
    rows = list(anomalies)
    if not rows:
        return "No anomalies."
    lines = []
    for a in rows:
        s = a.subject
        where = s.device_name or s.policy_name or s.policy_id or "tenant"
        lines.append(f"{a.status.value.upper():<10} {a.kind:<28} {where}")
        lines.append(
            f"           first seen {a.first_seen:%Y-%m-%d %H:%M} UTC, "
            f"last seen {a.last_seen:%Y-%m-%d %H:%M} UTC"
        )
        lines.append(f"           {a.explanation}")
        if a.kind == DEPLOYMENT_FAILED.name:
            lines.append(f"           {_failure_text(a.evidence)}")
        lines.append(f"           Fix: {a.fix}")
    return "\n".join(lines)


def scan_report_text(report: dict[str, Any]) -> str:
    counts = report["deployments"]
    lines = [
        f"Enrollment scan at {report['scanned_at']} (run {report['run_id']})",
        f"Deployments in report: {counts['in_report']}; judged this run: {counts['evaluated']} "
        f"({counts['conclusive']} conclusive, {counts['pending']} pending, "
        f"{counts['unverified']} unverified)",
    ]
    devices = report["devices"]
    if devices:
        w = max(len(d["device_name"] or "?") for d in devices)
        p = max(len(d["policy"] or "(unknown policy)") for d in devices)
        v = max(len(d["verdict"]) for d in devices)
        lines.append("")
        lines.append(f"  {'DEVICE':<{w}}  {'POLICY':<{p}}  {'VERDICT':<{v}}  WHY")
        for d in devices:
            lines.append(
                f"  {d['device_name'] or '?':<{w}}  {d['policy'] or '(unknown policy)':<{p}}  "
                f"{d['verdict']:<{v}}  {d['why']}"
            )
    if report["findings"]:
        lines.append("")
        lines.append("Findings: " + ", ".join(f"{k} {n}" for k, n in report["findings"].items()))
    if report["unverified"]:
        lines.append("Monitor health: could not verify (no anomaly raised for these):")
        lines += [f"  - {text} x{n}" for text, n in report["unverified"].items()]
    if report["missing_permissions"]:
        lines.append("Missing Graph permissions: " + ", ".join(report["missing_permissions"]))
    changes = Counter(c["change"] for c in report["changes"])
    lines.append(
        "Changes this run: " + (", ".join(f"{n} {c}" for c, n in changes.items()) or "none")
    )
    return "\n".join(lines)


# --- remediation ----------------------------------------------------------------------------

_PLAN_WORDS = {
    "write": "WILL ADD",
    "present": "ALREADY",
    "verified": "DONE",
    "refused": "REFUSED",
    "deferred": "DEFERRED",
    "unverified": "UNKNOWN",
}


def remediation_plan_text(report: dict[str, Any]) -> str:
    """The plan (and, when written, what each write answered), one item per block."""
    mode = report["mode"]
    writes = report["writes"]
    title = "Remediation" if writes else "Remediation plan (nothing is written)"
    lines = [f"{title}, mode {mode}, at {report['checked_at']} (run {report['run_id']})"]
    for item in report["items"]:
        decision = item["result"] or item["decision"]
        word = _PLAN_WORDS.get(decision, decision.upper())
        if decision == "write" and not writes:
            word = "WOULD ADD"
        who = item["device_name"] or item["object_id"] or "?"
        if item["action"] == "add_owner":
            who = "Intune Provisioning Client (owner)"
        group = item["group_name"] or item["group_id"] or "?"
        lines.append(f"  {word:<9} {who} -> ETG {group}  [policy {item['policy_name'] or '?'}]")
        lines.append(f"            {item['reason']}")
        if item["result"]:
            lines.append(f"            Graph: {item['result']} (request id {item['request_id']})")
        elif decision == "write" and not writes:
            lines.append(f"            to apply: {item['command']}")
    if not report["items"]:
        lines.append("  Nothing to remediate: no open etg_missing or etg_owner_missing anomaly.")
    lines += [f"  could not verify: {_unverified_text(u)}" for u in report["unverified"]]
    return "\n".join(lines)


def remediation_log_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "The remediation log is empty."
    lines = []
    for r in rows:
        what = r["device_name"] or r["object_id"]
        if r["action"] == "add_owner":
            what = "Intune Provisioning Client"
        lines.append(
            f"{r['started_at'][:19]}  {r['state']:<9} {r['action']:<10} {what} -> "
            f"{r['group_name'] or r['group_id']}  (request id "
            f"{r['request_id'] or r['client_request_id'] or '-'}, {r['mode']})"
        )
    return "\n".join(lines)
