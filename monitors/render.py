"""Human-readable text for the CLI: what an engineer reads at a terminal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from monitors.models import Anomaly, OwnerStatus
from monitors.rules.config import PolicyHealth

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
