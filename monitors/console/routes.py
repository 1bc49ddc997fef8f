"""The console's requests: who asks, what they may do, one read or write of the store, a page.

Every request is authorized first (401 without a principal, 403 outside the operators group);
ids, filters and form fields are checked strictly before the store is touched; a state change
comes only by POST, from a form of this console (its origin, and a CSRF token bound to the
principal and the anomaly), and answers 303 to the anomaly's page.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from monitors.alerts.cards import TenantLabel, tenant_label
from monitors.console import pages
from monitors.console.ids import parse_id
from monitors.console.security import Principal, Refusal, authorize, csrf_token, csrf_valid
from monitors.failures import Unavailable
from monitors.models import Anomaly, Status
from monitors.rules.kinds import KINDS, severity_rank
from monitors.rules.lifecycle import HISTORY_LIMIT
from monitors.rules.suppression import SuppressionScope

if TYPE_CHECKING:
    from monitors.settings import Settings
    from monitors.store.tables import TableStore
    from monitors.tenants.registry import Tenant

MAX_FORM_BYTES = 8 * 1024
MAX_LISTED = 500
MAX_REASON = 500
FORM_TYPE = "application/x-www-form-urlencoded"
DONE = {"acknowledged": "Acknowledged.", "suppressed": "Suppressed."}


class Action(StrEnum):
    LIST = "list"
    SHOW = "show"
    ACKNOWLEDGE = "acknowledge"
    SUPPRESS = "suppress"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]  # names in lower case
    params: Mapping[str, str]
    anomaly_id: str | None = None
    body: bytes = b""
    # App Service Authentication is on (WEBSITE_AUTH_ENABLED): only then are principal
    # headers the platform's own.
    platform_auth: bool = False


@dataclass(slots=True)
class Response:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text = status, title, text


_NO_PRINCIPAL = (
    401,
    "Sign-in required",
    "The console needs a signed-in operator: open it through the function app's address, "
    "where App Service Authentication signs you in.",
)
_NOT_OPERATOR = (403, "Not an operator", "Your account is not in the console's operators group.")


async def handle(
    action: Action, request: Request, settings: Settings, store: TableStore, now: datetime
) -> Response:
    nonce = secrets.token_urlsafe(18)
    tenant = tenant_label(settings.tenant_name, settings.tenant_id)
    try:
        principal = _principal(request, settings)
        page = await _in_scope(action, request, settings, store, now, principal, nonce)
    except _Refused as refused:
        page = Response(
            refused.status, pages.message_page(refused.title, refused.text, nonce, tenant)
        )
    except Unavailable:
        page = Response(
            503,
            pages.message_page("Unavailable", "The state store cannot be reached.", nonce, tenant),
        )
    page.headers = {**pages.headers(nonce), **page.headers}
    return page


def _principal(request: Request, settings: Settings) -> Principal:
    who = authorize(
        dict(request.headers),
        request.url,
        settings.console_operators_group,
        settings.console_dev_principal,
        platform_auth=request.platform_auth,
    )
    if who is Refusal.NO_PRINCIPAL:
        raise _Refused(*_NO_PRINCIPAL)
    if who is Refusal.NOT_OPERATOR:
        raise _Refused(*_NOT_OPERATOR)
    assert isinstance(who, Principal)
    return who


def _scoped_settings(base: Settings, tenant: Tenant) -> Settings:
    """A registry tenant's console: its own tables, its own alert routes (a suppression's
    notice goes where its alerts go); the console's own settings stay the deployment's."""
    from monitors.alerts.routing import parse_routes
    from monitors.tenants.scope import storage_settings

    scoped = storage_settings(base, tenant)
    if tenant.alert_routes is None:
        return scoped
    try:
        return dataclasses.replace(scoped, alert_routes=parse_routes(tenant.alert_routes))
    except ValueError:
        raise _Refused(
            409, "Tenant misconfigured", "This tenant's alert routes are invalid in the registry."
        ) from None


async def _in_scope(
    action: Action,
    request: Request,
    settings: Settings,
    store: TableStore,
    now: datetime,
    principal: Principal,
    nonce: str,
) -> Response:
    """The request on the tables of the tenant it names (``?tenant=<registry tenant id>``), or
    on the deployment's own. A tenant's anomaly is found only in that tenant's tables, so an id
    or a form of one tenant can never reach another's."""
    from monitors.jobs.context import open_store
    from monitors.tenants.registry import TenantError, TenantRegistry, normalize_tenant_id

    registry = TenantRegistry(store)
    tenants: list[TenantLabel] = []
    if action is Action.LIST:
        tenants = [TenantLabel(t.tenant_id, t.display_name) for t in await registry.all()]
    wanted = request.params.get("tenant", "").strip()
    if not wanted or (settings.tenant_name is not None and wanted == settings.tenant_id):
        return await _dispatch(action, request, settings, store, now, principal, nonce, tenants)
    try:
        entry = await registry.get(normalize_tenant_id(wanted))
    except TenantError:
        entry = None
    if entry is None:
        raise _Refused(404, "Unknown tenant", "No registered tenant has this id.")
    scoped = _scoped_settings(settings, entry)
    async with open_store(scoped) as tenant_store:
        return await _dispatch(
            action, request, scoped, tenant_store, now, principal, nonce, tenants
        )


def _bound(settings: Settings, aid: str) -> str:
    """What a form's CSRF token is bound to: the anomaly, and the tenant for a registry
    tenant's (two tenants can have an anomaly of the same id: overlapping device ids)."""
    return aid if settings.tenant_name is None else f"{settings.tenant_id}/{aid}"


async def _dispatch(
    action: Action,
    request: Request,
    settings: Settings,
    store: TableStore,
    now: datetime,
    principal: Principal,
    nonce: str,
    tenants: Sequence[TenantLabel] = (),
) -> Response:
    tenant = tenant_label(settings.tenant_name, settings.tenant_id)
    if action is Action.LIST:
        return await _list(request, store, principal, nonce, tenant, tenants)
    aid = str(request.anomaly_id)
    # A post is checked before the store is read: a forged one costs nothing.
    form = (
        {}
        if action is Action.SHOW
        else _form(request, settings, principal, _bound(settings, aid), now)
    )
    anomaly = await _find(request, store)
    if action is Action.SHOW:
        done = DONE.get(request.params.get("done", ""))
        view = pages.AnomalyView(
            anomaly, aid, principal.name, _token(settings, principal, aid, now), done, None, tenant
        )
        return Response(200, pages.anomaly_page(view, nonce, now))
    if action is Action.ACKNOWLEDGE:
        await _acknowledge(store, anomaly, principal, now)
        return _see(aid, "acknowledged", tenant)
    problem = await _suppress(store, settings, anomaly, principal, form, now)
    if problem is None:
        return _see(aid, "suppressed", tenant)
    view = pages.AnomalyView(
        anomaly,
        aid,
        principal.name,
        _token(settings, principal, aid, now),
        error=problem,
        tenant=tenant,
    )
    return Response(400, pages.anomaly_page(view, nonce, now))


def _token(settings: Settings, principal: Principal, aid: str, now: datetime) -> str | None:
    secret = settings.console_secret
    bound = _bound(settings, aid)
    return csrf_token(secret, principal.name, bound, now) if secret else None


def _see(aid: str, done: str, tenant: TenantLabel | None) -> Response:
    page = pages.scoped(f"{pages.CONSOLE}/{aid}", tenant)
    return Response(303, "", {"Location": f"{page}{'&' if tenant else '?'}done={done}"})


def _filters(params: Mapping[str, str]) -> pages.Filters:
    kind = params.get("kind", "").strip() or None
    policy = params.get("policy", "").strip() or None
    status = params.get("status", "").strip() or "open"
    if kind is not None and kind not in KINDS:
        raise _Refused(400, "Unknown kind", "The kind filter names no anomaly kind.")
    if status not in ("open", "suppressed", "resolved", "all"):
        raise _Refused(400, "Unknown status", "Status is open, suppressed, resolved or all.")
    if policy is not None and (len(policy) > 200 or not policy.isprintable()):
        raise _Refused(400, "Bad policy", "The policy filter is a policy id or name.")
    return pages.Filters(kind, policy, status)


async def _list(
    request: Request,
    store: TableStore,
    principal: Principal,
    nonce: str,
    tenant: TenantLabel | None,
    tenants: Sequence[TenantLabel],
) -> Response:
    filters = _filters(request.params)
    status = None if filters.status == "all" else Status(filters.status)
    wanted = filters.policy.casefold() if filters.policy else None
    found = [
        a
        async for a in store.anomalies.iter([filters.kind] if filters.kind else None, status)
        if wanted is None
        or wanted
        in ((a.subject.policy_id or "").casefold(), (a.subject.policy_name or "").casefold())
    ]
    found.sort(key=lambda a: (severity_rank(a.kind), a.first_seen, a.key))
    page = pages.list_page(found[:MAX_LISTED], filters, principal.name, nonce, tenant, tenants)
    return Response(200, page)


async def _find(request: Request, store: TableStore) -> Anomaly:
    parsed = parse_id(request.anomaly_id)
    if parsed is None or parsed[0] not in KINDS:
        raise _Refused(404, "Not found", "No anomaly has this id.")
    anomaly = await store.anomalies.get(*parsed)
    if anomaly is None:
        raise _Refused(404, "Not found", "No anomaly has this id.")
    return anomaly


def _same_origin(request: Request) -> bool:
    """A browser says where a form came from; one from another site is refused outright.

    Sec-Fetch-Site is set by the browser and cannot be set by a page. Origin is "null" on our
    own forms (Referrer-Policy: no-referrer hides it), so only a named origin is compared."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    target = urlsplit(request.url)
    return origin == f"{target.scheme}://{target.netloc}"


def _form(
    request: Request, settings: Settings, principal: Principal, aid: str, now: datetime
) -> dict[str, str]:
    if not settings.console_secret:
        raise _Refused(403, "Read-only", "The console is read-only: ETG_CONSOLE_SECRET is unset.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE or len(request.body) > MAX_FORM_BYTES:
        raise _Refused(400, "Bad form", "Send the console's own form.")
    try:
        fields = parse_qs(request.body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, "Bad form", "Send the console's own form.") from None
    form = {name: values[0] for name, values in fields.items() if len(values) == 1}
    valid = csrf_valid(settings.console_secret, form.get("csrf"), principal.name, aid, now)
    if not _same_origin(request) or not valid:
        raise _Refused(
            403,
            "Form refused",
            "This form expired or did not come from this console: reload the anomaly's page "
            "and try again.",
        )
    return form


async def _acknowledge(
    store: TableStore, anomaly: Anomaly, principal: Principal, now: datetime
) -> None:
    from monitors.store.tables import ConcurrentUpdate

    if anomaly.acknowledged_by is not None:
        return  # a second click changes nothing: the first operator keeps the record
    updated = dataclasses.replace(
        anomaly, acknowledged_by=principal.name, acknowledged_at=now, history=list(anomaly.history)
    )
    updated.history.append(
        {
            "at": now.isoformat(),
            "status": anomaly.status.value,
            "why": "acknowledged in the console; no more reminders",
            "by": principal.name,
        }
    )
    del updated.history[:-HISTORY_LIMIT]
    try:
        await store.anomalies.save(updated)
    except ConcurrentUpdate:
        raise _Refused(
            409, "Changed meanwhile", "A run changed this anomaly just now: reload and try again."
        ) from None


def _expiry(form: Mapping[str, str]) -> str | None:
    """The expiry in the words parse_expiry reads: hours, or a UTC date-time."""
    hours = form.get("expires_hours", "").strip()
    at = form.get("expires_at", "").strip()
    if hours:
        if not hours.isdigit() or not 1 <= int(hours) <= 8760:
            raise ValueError("give the expiry in hours as a whole number from 1 to 8760")
        return f"{int(hours)}h"
    if at:
        if len(at) > 32:
            raise ValueError("give the expiry as a date and time")
        # A datetime-local field has no zone; the form labels it UTC.
        return at if at.endswith("Z") or "+" in at else f"{at}+00:00"
    return None


async def _suppress(
    store: TableStore,
    settings: Settings,
    anomaly: Anomaly,
    principal: Principal,
    form: Mapping[str, str],
    now: datetime,
) -> str | None:
    """Suppress as `etg-monitor suppress` does; the problem with the form, if any."""
    from monitors.jobs.suppressions import new_suppression, settle_suppressions

    s = anomaly.subject
    values = {
        SuppressionScope.DEVICE: s.managed_device_id,
        SuppressionScope.POLICY: s.policy_id,
        SuppressionScope.KIND: anomaly.kind,
    }
    try:
        scope = SuppressionScope(form.get("scope", ""))
    except ValueError:
        return "choose what to suppress: the device, the policy or the kind"
    reason = form.get("reason", "").strip()
    if len(reason) > MAX_REASON or not reason.isprintable():
        return f"give a reason of at most {MAX_REASON} characters on one line"
    value = values[scope]
    if not value:
        return f"this anomaly has no {scope.value} to suppress"
    try:
        suppression = new_suppression(scope, value, reason, now, _expiry(form), principal.name)
    except ValueError as exc:
        return str(exc)
    await store.suppressions.add(suppression)
    await settle_suppressions(store, now, settings.alert_routes, run_id="console")
    return None
