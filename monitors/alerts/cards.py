"""Adaptive Cards for Teams Workflows webhooks. Pure: anomaly data in, message JSON out.

On-call reads these at 3 a.m. on a phone: the first lines say what broke and where, the facts
give the evidence, and the buttons open the device and the group in the admin centers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from monitors.console.ids import console_url
from monitors.models import JSON, Scope, json_list, json_object
from monitors.rules.enrollment import BAD_PAYLOAD
from monitors.rules.kinds import DEPLOYMENT_FAILED, KINDS, PAYLOAD_INCOMPLETE, Kind, severity_rank
from monitors.rules.lifecycle import Change
from monitors.rules.result_codes import describe_failure

CARD_VERSION = "1.4"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_MESSAGE_BYTES = 24 * 1024  # Teams rejects around 28 KB; stay clear of it
DIGEST_LIST = 8

_PORTALS = {
    "graph.microsoft.com": ("https://intune.microsoft.com", "https://entra.microsoft.com"),
    "graph.microsoft.us": ("https://intune.microsoft.us", "https://entra.microsoft.us"),
    "dod-graph.microsoft.us": ("https://intune.microsoft.us", "https://entra.microsoft.us"),
    "microsoftgraph.chinacloudapi.cn": (
        "https://intune.microsoft.cn",
        "https://entra.microsoft.cn",
    ),
}


def portals(graph_endpoint: str) -> tuple[str, str]:
    """Intune and Entra admin center roots for the cloud the monitor watches."""
    host = urlsplit(graph_endpoint).hostname or ""
    return _PORTALS.get(host, _PORTALS["graph.microsoft.com"])


def device_url(graph_endpoint: str, managed_device_id: str) -> str:
    intune, _ = portals(graph_endpoint)
    return (
        f"{intune}/#view/Microsoft_Intune_Devices/DeviceSettingsMenuBlade/~/overview/"
        f"mdmDeviceId/{managed_device_id}"
    )


def group_url(graph_endpoint: str, group_id: str) -> str:
    _, entra = portals(graph_endpoint)
    return f"{entra}/#view/Microsoft_AAD_IAM/GroupDetailsMenuBlade/~/Overview/groupId/{group_id}"


def policies_url(graph_endpoint: str) -> str:
    intune, _ = portals(graph_endpoint)
    return f"{intune}/#view/Microsoft_Intune_DeviceSettings/DevicesWindowsMenu/~/windowsEnrollment"


def message(card: Mapping[str, JSON]) -> dict[str, JSON]:
    """The envelope a Teams Workflows 'When a Teams webhook request is received' trigger takes."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def size_of(payload: Mapping[str, JSON]) -> int:
    return len(json.dumps(payload, separators=(",", ":")).encode())


def _card(body: list[dict[str, JSON]], actions: list[dict[str, JSON]]) -> dict[str, JSON]:
    return {
        "$schema": SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
        "actions": actions,
    }


def _text(text: str, **style: JSON) -> dict[str, JSON]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _facts(pairs: Sequence[tuple[str, str]]) -> dict[str, JSON]:
    return {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in pairs if v]}


@dataclass(frozen=True, slots=True)
class TenantLabel:
    """A registry tenant as every card, report and console page names it:
    "Contoso (<tenant id>)"; the id also scopes the console links to that tenant."""

    tenant_id: str
    display_name: str

    def __str__(self) -> str:
        return f"{self.display_name} ({self.tenant_id})"


def tenant_label(name: str | None, tenant_id: str | None) -> TenantLabel | None:
    """The label of a registry tenant's settings (``tenant_name``, ``tenant_id``); None for a
    single-tenant install, whose cards, reports and pages stay as they were."""
    if not name or not tenant_id:
        return None
    return TenantLabel(tenant_id, name)


def with_tenant(card: Mapping[str, JSON], tenant: TenantLabel | None) -> dict[str, JSON]:
    """The card with the tenant it speaks of as its first line: an MSP's channel receives many
    tenants' cards, and the first thing on-call needs is whose."""
    if tenant is None:
        return dict(card)
    # Adaptive Cards schema, TextBlock: isSubtle tones the line down (since 1.0), so it names
    # the tenant without competing with the title below it.
    line = _text(f"Tenant: {tenant}", weight="Bolder", isSubtle=True)
    return fit({**card, "body": [line, *json_list(card.get("body"))]})


def _link(title: str, url: str) -> dict[str, JSON]:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def _evidence_time(evidence: Mapping[str, Any], key: str) -> str | None:
    value = evidence.get(key)
    if isinstance(value, Mapping):
        value = value.get("value") or value.get("at")
    return str(value) if value else None


def _incomplete_items(evidence: Mapping[str, Any]) -> list[dict[str, JSON]]:
    """Every app and script that was skipped or failed, one fact each. A policy holds at most
    25 apps and 10 scripts, so the list stays within the card even when fit() trims it."""
    items = evidence.get("items")
    if not isinstance(items, list):
        return []
    facts = [
        (
            str(i.get("name") or i.get("id") or "?"),
            f"{'App' if i.get('kind') == 'app' else 'Script'} · {i.get('status')}",
        )
        for i in items
        if isinstance(i, Mapping) and str(i.get("status") or "").lower() in BAD_PAYLOAD
    ]
    if not facts:
        return []
    return [_text("Did not install", weight="Bolder"), _facts(facts)]


def _not_ready_items(evidence: Mapping[str, Any]) -> list[dict[str, JSON]]:
    """Every selected app and script that would not install, with what is wrong with it: at
    most 25 apps and 10 scripts, so the list stays within the card."""
    items = evidence.get("items")
    facts = [
        (
            str(i.get("display_name") or i.get("id") or "?"),
            f"{'App' if i.get('kind') == 'app' else 'Script'} · "
            + "; ".join(str(p) for p in json_list(i.get("problems")) or ["?"]),
        )
        for i in (items if isinstance(items, list) else [])
        if isinstance(i, Mapping)
    ]
    facts += [("Limit", str(p)) for p in json_list(evidence.get("limits"))]
    if not facts:
        return []
    return [_text("Not ready to install", weight="Bolder"), _facts(facts)]


def _where(anomaly: Mapping[str, Any]) -> Any:
    return (
        anomaly.get("device_name")
        or anomaly.get("policy_name")
        or anomaly.get("job")
        or "the tenant"
    )


def _policy_level(anomaly: Mapping[str, Any]) -> bool:
    return anomaly.get("scope") in (Scope.POLICY, Scope.TENANT)


def _failure_facts(evidence: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The result code with its name and the phase in words, decoded from the report's raw
    values so that anomalies stored before the decoder existed read the same way."""
    code, phase = evidence.get("result_code"), evidence.get("phase")
    failure = describe_failure(
        code if isinstance(code, int | str) else None,
        phase if isinstance(phase, int | str) else None,
    )
    result = failure.result
    if failure.win32 is not None:
        result = f"{failure.hex} ({failure.name}, Win32 error {failure.win32})"
    if failure.name:
        result += f": {failure.meaning}"
    return [("Result", result), ("Phase", failure.phase_name or "not reported")]


def _anomaly_facts(
    anomaly: Mapping[str, Any], evidence: Mapping[str, Any], kind: Kind | None
) -> list[tuple[str, str]]:
    facts = [
        ("Severity", kind.severity.value if kind else ""),
        ("Device", str(anomaly.get("device_name") or "")),
        ("Serial", str(anomaly.get("serial_number") or "")),
        ("User", str(anomaly.get("user_principal_name") or "")),
        ("Policy", str(anomaly.get("policy_name") or anomaly.get("policy_id") or "")),
        ("ETG", str(anomaly.get("group_id") or "")),
    ]
    if anomaly.get("scope") == Scope.DEVICE:
        join = evidence.get("join") or evidence.get("late_join")
        joined_at = join.get("at") if isinstance(join, Mapping) else None
        facts += [
            ("Enrolled", _evidence_time(evidence, "enrolled_at") or ""),
            ("Provisioning completed", str(evidence.get("provisioning_completed_at") or "")),
            ("Joined ETG", str(joined_at or "never")),
        ]
        if evidence.get("early") is True:
            # An early etg_missing: "never" is not known yet, only the live check is.
            facts[-1] = ("Joined ETG", "none seen yet")
            checked = evidence.get("checked_at")
            facts.append(("Membership", f"Not a member at {checked}; audit log not settled yet"))
        if evidence.get("gap_seconds") is not None:
            gap = int(evidence["gap_seconds"])
            facts.append(("Late by", f"{gap // 60} min {gap % 60} s"))
        if anomaly.get("kind") == DEPLOYMENT_FAILED.name:
            facts += _failure_facts(evidence)
    facts.append(("First seen", str(anomaly.get("first_seen") or "")))
    return facts


def _why_resolved(anomaly: Mapping[str, Any]) -> dict[str, JSON]:
    history = anomaly.get("history") or []
    why = history[-1].get("why") if history and isinstance(history[-1], Mapping) else None
    return _text(f"Why it resolved: {why or 'the condition no longer holds'}", isSubtle=True)


def _what_to_do(anomaly: Mapping[str, Any], kind: Kind | None) -> list[dict[str, JSON]]:
    blocks = [_text(f"What it means: {kind.meaning}")] if kind else []
    fix = anomaly.get("fix") or (kind.fix if kind else "")
    blocks.append(_text(f"What to do: {fix}", weight="Bolder"))
    if kind:
        blocks.append(_text(f"Runbook: {kind.runbook}", isSubtle=True))
    if _policy_level(anomaly):
        blocks.append(
            _text(
                "This is a policy-level problem: every enrollment with this "
                "policy is affected until it is fixed.",
                color="Attention",
            )
        )
    return blocks


def _anomaly_actions(
    anomaly: Mapping[str, Any],
    graph_endpoint: str,
    public_base_url: str | None = None,
    tenant: TenantLabel | None = None,
) -> list[dict[str, JSON]]:
    actions = []
    # Both open the anomaly's console page, where acknowledging is a form (a POST): a card
    # button that changed state would do so on a GET, and carry a key.
    console = console_url(public_base_url, anomaly)
    if console is not None:
        if tenant is not None:
            # The one console serves every tenant; the page reads the tenant's own tables.
            console += f"?tenant={quote(tenant.tenant_id)}"
        actions.append(_link("Open in console", console))
        if not anomaly.get("acknowledged_by"):
            actions.append(_link("Acknowledge", console))
    if anomaly.get("managed_device_id"):
        actions.append(
            _link(
                "Open device in Intune",
                device_url(graph_endpoint, str(anomaly["managed_device_id"])),
            )
        )
    if anomaly.get("group_id"):
        actions.append(
            _link("Open ETG in Entra", group_url(graph_endpoint, str(anomaly["group_id"])))
        )
    if _policy_level(anomaly):
        actions.append(_link("Device preparation policies", policies_url(graph_endpoint)))
    return actions


def remediation_text(anomaly: Mapping[str, Any], resolved: bool = False) -> str | None:
    """What remediation did or would do, in one line; None when it never looked at it."""
    done = anomaly.get("remediation")
    if not isinstance(done, Mapping):
        return None
    owner = done.get("action") == "add_owner"
    at = done.get("at")
    if resolved and done.get("resolved_as") == "remediated":
        return f"Resolved as remediated: etg-monitor made the change at {at}."
    if done.get("written"):
        by_hand = done.get("mode") == "apply"
        how = "by `etg-monitor remediate --apply`" if by_hand else "automatically"
        what = "Restored the ETG owner" if owner else "Added to the ETG"
        return f"{what} {how} at {at}."
    group = done.get("group_name") or done.get("group_id")
    if done.get("state") == "planned":
        device = done.get("device_name") or anomaly.get("device_name")
        subject = "the Intune Provisioning Client as an owner of" if owner else f"{device} to"
        return f"etg-monitor would add {subject} ETG {group}: run `{done.get('command')}`"
    if done.get("state") == "present":
        return None
    return f"Remediation {done.get('state')}: {done.get('reason')}"


def remediation_lines(anomaly: Mapping[str, Any], resolved: bool) -> list[dict[str, JSON]]:
    text = remediation_text(anomaly, resolved)
    if text is None:
        return []
    done = json_object(anomaly.get("remediation"))
    return [_text(text, weight="Bolder", color="Good" if done.get("written") else "Default")]


def anomaly_card(
    anomaly: Mapping[str, Any],
    change: str,
    graph_endpoint: str,
    public_base_url: str | None = None,
    tenant: TenantLabel | None = None,
) -> dict[str, JSON]:
    """One anomaly opening or resolving. ``anomaly`` is Anomaly.to_json(); ``tenant`` the
    registry tenant it belongs to (tenant_label), None for a single-tenant install."""
    kind = KINDS.get(str(anomaly.get("kind")))
    resolved = change == Change.RESOLVED
    evidence = anomaly.get("evidence") or {}
    body: list[dict[str, JSON]] = [
        _text(
            ("Resolved: " if resolved else "")
            + f"{kind.title if kind else 'Anomaly'}: {_where(anomaly)}",
            size="Large",
            weight="Bolder",
            color="Good" if resolved else "Attention",
        ),
        _text(str(anomaly.get("explanation") or "")),
        _facts(_anomaly_facts(anomaly, evidence, kind)),
    ]
    if anomaly.get("kind") == PAYLOAD_INCOMPLETE.name and isinstance(evidence, Mapping):
        body += _incomplete_items(evidence)
    if anomaly.get("kind") == "payload_not_ready" and isinstance(evidence, Mapping):
        body += _not_ready_items(evidence)
    body += remediation_lines(anomaly, resolved)
    body += [_why_resolved(anomaly)] if resolved else _what_to_do(anomaly, kind)
    card = _card(body, _anomaly_actions(anomaly, graph_endpoint, public_base_url, tenant))
    return with_tenant(fit(card), tenant)


def open_for_text(first_seen: str | None, now: datetime) -> str:
    """How long an anomaly has been open, for a reminder: "3 days", "5 hours"."""
    try:
        since = datetime.fromisoformat(str(first_seen))
    except ValueError:
        return "a while"
    hours = max(int((now - since).total_seconds() // 3600), 0)
    if hours >= 48:
        return f"{hours // 24} days"
    return "1 hour" if hours == 1 else f"{hours} hours"


def reminder_card(
    anomaly: Mapping[str, Any],
    now: datetime,
    graph_endpoint: str,
    public_base_url: str | None = None,
    tenant: TenantLabel | None = None,
) -> dict[str, JSON]:
    """An open anomaly nobody acknowledged: its opening card, console buttons included, under
    a reminder line (and the tenant's, first, for a registry tenant)."""
    card = anomaly_card(anomaly, Change.OPENED, graph_endpoint, public_base_url, tenant)
    since = open_for_text(anomaly.get("first_seen"), now)
    line = _text(f"Reminder: open for {since}, not acknowledged", weight="Bolder", color="Warning")
    body = json_list(card.get("body"))
    first = 1 if tenant is not None else 0  # the tenant's line stays the first
    return fit({**card, "body": [*body[:first], line, *body[first:]]})


def digest_card(
    anomalies: Sequence[Mapping[str, Any]],
    change: str,
    graph_endpoint: str,
    tenant: TenantLabel | None = None,
) -> dict[str, JSON]:
    """One card for many anomalies from one run, so a bad hour is one message, not fifty."""
    resolved = change == Change.RESOLVED
    ordered = sorted(
        anomalies,
        key=lambda a: (
            severity_rank(str(a.get("kind"))),
            a.get("scope") == Scope.DEVICE,
            a.get("kind", ""),
        ),
    )
    by_kind = Counter(str(a.get("kind")) for a in ordered)
    by_policy = Counter(str(a.get("policy_name") or "(no policy)") for a in ordered)
    verb = "resolved" if resolved else "opened"
    body: list[dict[str, JSON]] = [
        _text(
            f"{len(ordered)} ETG anomalies {verb}",
            size="Large",
            weight="Bolder",
            color="Good" if resolved else "Attention",
        ),
    ]
    policy_level = [a for a in ordered if _policy_level(a)]
    if policy_level and not resolved:
        body.append(
            _text(
                "Policy-level problems first: each one breaks every enrollment after it.",
                weight="Bolder",
                color="Attention",
            )
        )
        body += [_text(f"- {a.get('explanation')}") for a in policy_level[:DIGEST_LIST]]
    body.append(_text("By kind", weight="Bolder"))
    body.append(_facts([(k, str(n)) for k, n in by_kind.most_common()]))
    body.append(_text("By policy", weight="Bolder"))
    body.append(_facts([(k, str(n)) for k, n in by_policy.most_common(10)]))
    devices = [a for a in ordered if a.get("scope") == Scope.DEVICE]
    if devices:
        body.append(_text("First devices", weight="Bolder"))
        body.append(
            _facts(
                [
                    (
                        str(a.get("device_name") or a.get("managed_device_id")),
                        f"{a.get('kind')} · {a.get('user_principal_name') or ''}",
                    )
                    for a in devices[:DIGEST_LIST]
                ]
            )
        )
    rest = len(ordered) - min(len(devices), DIGEST_LIST) - len(policy_level[:DIGEST_LIST])
    if rest > 0:
        body.append(
            _text(
                f"...and {rest} more. See them all with `etg-monitor anomalies "
                f"--status {'resolved' if resolved else 'open'}` or the weekly report.",
                isSubtle=True,
            )
        )
    card = _card(body, [_link("Device preparation policies", policies_url(graph_endpoint))])
    return with_tenant(fit(card), tenant)


def _shortened(block: Mapping[str, JSON]) -> dict[str, JSON]:
    out = dict(block)
    if block.get("type") == "TextBlock" and len(str(block.get("text", ""))) > 600:
        out["text"] = str(block["text"])[:600] + "..."
    if block.get("type") == "FactSet":
        facts = [json_object(f) for f in json_list(block.get("facts"))]
        out["facts"] = [
            {"title": str(f.get("title"))[:80], "value": str(f.get("value"))[:200]} for f in facts
        ][:40]
    return out


def fit(card: Mapping[str, JSON]) -> dict[str, JSON]:
    """Trim a card until its message fits Teams' size limit: shorten, then drop, body blocks
    from the end; the title and the first facts always survive."""
    if size_of(message(card)) <= MAX_MESSAGE_BYTES:
        return dict(card)
    body = [_shortened(json_object(block)) for block in json_list(card.get("body"))]
    trimmed: dict[str, JSON] = {**card, "body": body}
    while size_of(message(trimmed)) > MAX_MESSAGE_BYTES and len(body) > 2:
        body.pop()
        trimmed = {
            **card,
            "body": [*body, _text("(trimmed to fit Teams' size limit)", isSubtle=True)],
        }
    return trimmed
