"""The console's HTML, rendered on the server: no script, no external asset, every value
escaped. Pure: what to show in, markup out; the caller sets the headers from ``headers``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote, urlencode

from monitors.alerts.cards import TenantLabel
from monitors.console.ids import anomaly_id
from monitors.console.timeline import human, render_svg, timeline_of
from monitors.models import JSON, Anomaly
from monitors.rules.kinds import KINDS

CONSOLE = "/api/console/anomalies"
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:70rem}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35rem;
text-align:left;vertical-align:top}pre{background:#f4f4f4;padding:.75rem;overflow:auto;
white-space:pre-wrap}form{border:1px solid #ccc;padding:.75rem;margin:.75rem 0}
label{display:block;margin:.35rem 0}.notice{background:#dff6dd;padding:.5rem}
.error{background:#fde7e9;padding:.5rem}.muted{color:#666}
"""


def headers(nonce: str) -> dict[str, str]:
    """Every console answer's headers: nothing loads from elsewhere, nothing frames the page,
    and nothing is cached or leaks the URL (which names a device) to another site."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


def _layout(
    title: str, body: str, nonce: str, who: str | None = None, tenant: TenantLabel | None = None
) -> str:
    """``tenant``: the registry tenant whose data the page shows, said on every page and in
    the title; None for a single-tenant install."""
    signed_in = f'<p class="muted">Signed in as {escape(who)}</p>' if who else ""
    named = f'<p id="tenant"><strong>Tenant: {escape(str(tenant))}</strong></p>' if tenant else ""
    suffix = f" - {tenant}" if tenant else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title + suffix)} - etg-monitor</title>"
        f'<style nonce="{escape(nonce)}">{_STYLE}</style></head><body>'
        f"{signed_in}{named}{body}</body></html>"
    )


def scoped(path: str, tenant: TenantLabel | None) -> str:
    """A console path kept within the tenant whose page links to it: one console serves every
    registry tenant, each page reading that tenant's own tables."""
    return f"{path}?tenant={quote(tenant.tenant_id)}" if tenant else path


def message_page(title: str, text: str, nonce: str, tenant: TenantLabel | None = None) -> str:
    return _layout(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>", nonce, tenant=tenant)


@dataclass(frozen=True, slots=True)
class Filters:
    kind: str | None = None
    policy: str | None = None
    status: str = "open"  # open | suppressed | resolved | all

    def query(self) -> str:
        pairs = {"kind": self.kind, "policy": self.policy, "status": self.status}
        return urlencode({k: v for k, v in pairs.items() if v})


def _title(kind: str) -> str:
    known = KINDS.get(kind)
    return known.title if known else kind


def _subject(anomaly: Anomaly) -> str:
    s = anomaly.subject
    return (
        s.device_name
        or s.serial_number
        or s.managed_device_id
        or s.policy_name
        or s.job
        or (s.scope.value)
    )


def _tenant_field(tenant: TenantLabel | None, tenants: Sequence[TenantLabel]) -> str:
    """A choice of the registry's tenants, when there are any; else the page's own tenant kept
    as the form is sent."""
    if tenants:
        current = tenant.tenant_id if tenant else None
        options = "".join(
            f'<option value="{escape(t.tenant_id)}"'
            f"{' selected' if t.tenant_id == current else ''}>{escape(str(t))}</option>"
            for t in tenants
        )
        return f'<label>Tenant <select name="tenant">{options}</select></label>'
    if tenant:
        return f'<input type="hidden" name="tenant" value="{escape(tenant.tenant_id)}">'
    return ""


def _filter_form(
    filters: Filters, tenant: TenantLabel | None = None, tenants: Sequence[TenantLabel] = ()
) -> str:
    kinds = "".join(
        f'<option value="{escape(k)}"{" selected" if k == filters.kind else ""}>'
        f"{escape(k)}</option>"
        for k in sorted(KINDS)
    )
    statuses = "".join(
        f"<option{' selected' if s == filters.status else ''}>{s}</option>"
        for s in ("open", "suppressed", "resolved", "all")
    )
    return (
        f'<form method="get" action="{CONSOLE}">{_tenant_field(tenant, tenants)}'
        f'<label>Kind <select name="kind"><option value="">any</option>{kinds}</select></label>'
        f'<label>Policy <input name="policy" maxlength="200" '
        f'value="{escape(filters.policy or "")}"></label>'
        f'<label>Status <select name="status">{statuses}</select></label>'
        '<button type="submit">Filter</button></form>'
    )


def list_page(
    anomalies: Sequence[Anomaly],
    filters: Filters,
    who: str,
    nonce: str,
    tenant: TenantLabel | None = None,
    tenants: Sequence[TenantLabel] = (),
) -> str:
    """``tenant``: whose anomalies these are; ``tenants``: the registry's, to choose from."""
    rows = "".join(
        "<tr>"
        f'<td><a href="{scoped(f"{CONSOLE}/{anomaly_id(a.kind, a.subject.key)}", tenant)}">'
        f"{escape(_title(a.kind))}</a></td>"
        f"<td>{escape(_subject(a))}</td><td>{escape(a.subject.policy_name or '')}</td>"
        f"<td>{escape(a.status.value)}</td><td>{a.first_seen:%Y-%m-%d %H:%M} UTC</td>"
        f"<td>{escape(a.acknowledged_by or '')}</td></tr>"
        for a in anomalies
    )
    table = (
        "<table><thead><tr><th>Anomaly</th><th>Subject</th><th>Policy</th><th>Status</th>"
        f"<th>Open since</th><th>Acknowledged by</th></tr></thead><tbody>{rows}</tbody></table>"
        if anomalies
        else '<p id="empty">No anomalies match.</p>'
    )
    form = _filter_form(filters, tenant, tenants)
    body = f"<h1>ETG anomalies</h1>{form}<p>{len(anomalies)} shown</p>{table}"
    return _layout("Anomalies", body, nonce, who, tenant)


def _history(history: Sequence[Mapping[str, JSON]]) -> str:
    if not history:
        return "<p>No history.</p>"
    items = "".join(
        f"<li>{escape(str(h.get('at', '')))}: {escape(str(h.get('status', '')))}"
        f"{' by ' + escape(str(h['by'])) if h.get('by') else ''} "
        f"&mdash; {escape(str(h.get('why', '')))}</li>"
        for h in history
    )
    return f'<ol id="history">{items}</ol>'


def _acknowledgement(anomaly: Anomaly) -> str:
    if anomaly.acknowledged_by is None:
        return '<p id="acknowledgement">Not acknowledged: reminders continue while it is open.</p>'
    at = f"{anomaly.acknowledged_at:%Y-%m-%d %H:%M} UTC" if anomaly.acknowledged_at else ""
    return (
        f'<p id="acknowledgement">Acknowledged by {escape(anomaly.acknowledged_by)} at {at}. '
        "No reminders are sent for it.</p>"
    )


def _forms(anomaly: Anomaly, aid: str, csrf: str | None, tenant: TenantLabel | None) -> str:
    if csrf is None:
        return '<p class="muted">The console is read-only: ETG_CONSOLE_SECRET is not set.</p>'
    token = f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    acknowledge = (
        ""
        if anomaly.acknowledged_by
        else f'<form method="post" action="{scoped(f"{CONSOLE}/{aid}/acknowledge", tenant)}" '
        'id="acknowledge">'
        f'{token}<button type="submit">Acknowledge</button></form>'
    )
    s = anomaly.subject
    scopes = [("kind", f"every {anomaly.kind} anomaly")]
    if s.policy_id:
        scopes.insert(0, ("policy", f"policy {s.policy_name or s.policy_id}"))
    if s.managed_device_id:
        scopes.insert(0, ("device", f"device {s.device_name or s.managed_device_id}"))
    options = "".join(f'<option value="{v}">{escape(text)}</option>' for v, text in scopes)
    suppress = (
        f'<form method="post" action="{scoped(f"{CONSOLE}/{aid}/suppress", tenant)}" '
        f'id="suppress">{token}'
        f'<label>Suppress <select name="scope">{options}</select></label>'
        '<label>Reason (required) <input name="reason" required maxlength="500" size="60">'
        "</label>"
        '<label>Expires after hours <input name="expires_hours" type="number" min="1" '
        'max="8760"></label>'
        '<label>or at (UTC) <input name="expires_at" type="datetime-local"></label>'
        '<button type="submit">Suppress</button></form>'
    )
    return acknowledge + suppress


@dataclass(frozen=True, slots=True)
class AnomalyView:
    anomaly: Anomaly
    aid: str
    who: str
    csrf: str | None  # None: read-only, no forms
    notice: str | None = None
    error: str | None = None
    tenant: TenantLabel | None = None  # the registry tenant's; None: a single-tenant install


def anomaly_page(view: AnomalyView, nonce: str, now: datetime) -> str:
    a = view.anomaly
    known = KINDS.get(a.kind)
    timeline = timeline_of(a.evidence)
    picture = render_svg(timeline) if timeline else '<p class="muted">No device timeline.</p>'
    notice = f'<p class="notice" id="notice">{escape(view.notice)}</p>' if view.notice else ""
    error = f'<p class="error" id="error">{escape(view.error)}</p>' if view.error else ""
    evidence = json.dumps(a.evidence, indent=2, sort_keys=True, ensure_ascii=False)
    runbook = f"<p>Runbook: <code>{escape(known.runbook)}</code></p>" if known else ""
    body = (
        f'<p><a href="{scoped(CONSOLE, view.tenant)}">All anomalies</a></p>{notice}{error}'
        f"<h1>{escape(_title(a.kind))}</h1>"
        f"<p>{escape(_subject(a))} &middot; {escape(a.status.value)} &middot; open since "
        f"{a.first_seen:%Y-%m-%d %H:%M} UTC ({escape(human(now - a.first_seen))})</p>"
        f'<h2>What happened</h2><p id="explanation">{escape(a.explanation)}</p>'
        f'<h2>What to do</h2><p id="fix">{escape(a.fix)}</p>{runbook}'
        f"<h2>Timeline</h2>{picture}"
        f"<h2>Acknowledgement</h2>{_acknowledgement(a)}"
        f"{_forms(a, view.aid, view.csrf, view.tenant)}"
        f'<h2>Evidence</h2><pre id="evidence">{escape(evidence)}</pre>'
        f"<h2>History</h2>{_history(a.history)}"
    )
    return _layout(_title(a.kind), body, nonce, view.who, view.tenant)
