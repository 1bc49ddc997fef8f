"""The tenant registry: the customer tenants one deployment watches (docs/msp.md).

Table ``<prefix>tenants``, PK "tenant", RK the tenant id (lower-case GUID). An entry holds no
secret: its alert channels are references (``kv:<secret name>`` in the Key Vault of
``ETG_KEY_VAULT_URL``, or ``env:<NAME>``), resolved when the tenant's job runs.

An empty registry is a single-tenant install: the tenant comes from the settings, as always.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import structlog

from monitors.settings import (
    SCHEDULE_SETTINGS,
    RemediationMode,
    is_loopback_host,
    parse_schedule,
)
from monitors.store.tables import TableStore
from monitors.store.tenants import TenantRow, TenantRows

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Key Vault secret names: 1-127 letters, digits and hyphens (about-keys-secrets-certificates).
_KV_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Which Settings field each alert secret of a tenant fills.
SECRET_FIELDS = (
    "teams_webhook_url",
    "pagerduty_routing_key",
    "alert_webhook_url",
    "alert_webhook_secret",
)
REMEDIATION_MODES: tuple[RemediationMode, ...] = ("off", "dry-run", "auto")
LOOKBACK_HOURS = (1, 24 * 90)


class TenantError(ValueError):
    """An entry that cannot be stored or used, saying what is wrong."""


def normalize_tenant_id(text: str) -> str:
    value = text.strip().lower()
    if not _GUID.match(value):
        raise TenantError(f"tenant id must be a GUID (the directory id), got {text.strip()!r}")
    return value


def check_reference(name: str, reference: str) -> str:
    """A secret reference, never a secret: ``kv:<secret name>`` or ``env:<NAME>``."""
    scheme, _, rest = reference.partition(":")
    if scheme == "kv" and _KV_NAME.match(rest):
        return reference
    if scheme == "env" and _ENV_NAME.match(rest):
        return reference
    raise TenantError(
        f"{name} must be a reference, kv:<Key Vault secret name> or env:<VARIABLE>, "
        "not the secret itself"
    )


def tenant_tag(tenant_id: str) -> str:
    """The short tag that names a tenant's tables: ``<prefix>t<tag><table>``. Eight hex digits
    keep every table name within 63 characters for any allowed prefix; the registry refuses a
    second tenant with the same tag."""
    return hashlib.sha256(tenant_id.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-tenant settings that replace the deployment's: schedules (SCAN_SCHEDULE, ...),
    the scan's look-back, the remediation mode."""

    schedules: Mapping[str, str] = field(default_factory=dict)
    scan_lookback_hours: int | None = None
    remediation: RemediationMode | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schedules": dict(self.schedules),
            "scan_lookback_hours": self.scan_lookback_hours,
            "remediation": self.remediation,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Overrides:
        return checked_overrides(
            dict(data.get("schedules") or {}),
            data.get("scan_lookback_hours"),
            data.get("remediation"),
        )


def checked_overrides(schedules: Mapping[str, str], lookback: Any, remediation: Any) -> Overrides:
    out: dict[str, str] = {}
    for name, expression in schedules.items():
        if name not in SCHEDULE_SETTINGS:
            raise TenantError(f"unknown schedule {name!r}: one of {', '.join(SCHEDULE_SETTINGS)}")
        try:
            out[name] = parse_schedule(str(expression))
        except ValueError as exc:
            raise TenantError(f"{name} {exc}") from None
    if lookback is not None:
        low, high = LOOKBACK_HOURS
        if (
            not isinstance(lookback, int)
            or isinstance(lookback, bool)
            or not low <= lookback <= high
        ):
            raise TenantError(f"scan look-back must be {low}-{high} hours, got {lookback!r}")
    if remediation is not None and remediation not in REMEDIATION_MODES:
        raise TenantError(f"remediation must be off, dry-run or auto, got {remediation!r}")
    return Overrides(out, lookback, remediation)


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    display_name: str
    enabled: bool = True
    # Settings field (SECRET_FIELDS) -> reference to the secret (check_reference).
    secrets: Mapping[str, str] = field(default_factory=dict)
    # ETG_ALERT_ROUTES syntax; None: the deployment's routes.
    alert_routes: str | None = None
    overrides: Overrides = field(default_factory=Overrides)
    # A loopback Graph endpoint: a simulated tenant (demo, tests, bench); None in production.
    graph_endpoint: str | None = None
    added_at: datetime | None = None

    @property
    def tag(self) -> str:
        return tenant_tag(self.tenant_id)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenant_id", normalize_tenant_id(self.tenant_id))
        name = self.display_name.strip()
        if not 1 <= len(name) <= 80 or not name.isprintable():
            raise TenantError("display name must be 1-80 printable characters")
        object.__setattr__(self, "display_name", name)
        for key, reference in self.secrets.items():
            if key not in SECRET_FIELDS:
                raise TenantError(
                    f"unknown alert secret {key!r}: one of {', '.join(SECRET_FIELDS)}"
                )
            check_reference(key, reference)
        if self.graph_endpoint is not None:
            object.__setattr__(self, "graph_endpoint", _simulated_endpoint(self.graph_endpoint))
        if self.alert_routes is not None:
            from monitors.alerts.routing import parse_routes

            try:
                parse_routes(self.alert_routes)
            except ValueError as exc:
                raise TenantError(f"alert routes: {exc}") from None

    def to_row(self) -> TenantRow:
        return TenantRow(
            tenant_id=self.tenant_id,
            display_name=self.display_name,
            enabled=self.enabled,
            tag=self.tag,
            entry={
                "secrets": dict(self.secrets),
                "alert_routes": self.alert_routes,
                "overrides": self.overrides.to_json(),
                "graph_endpoint": self.graph_endpoint,
            },
            added_at=self.added_at,
        )

    @classmethod
    def from_row(cls, row: TenantRow) -> Tenant:
        """Raises TenantError for an entry that no longer validates (edited by hand, or written
        by a version with other rules): it is never used half-understood."""
        entry = row.entry
        secrets = entry.get("secrets")
        overrides = entry.get("overrides")
        routes = entry.get("alert_routes")
        endpoint = entry.get("graph_endpoint")
        return cls(
            tenant_id=row.tenant_id,
            display_name=row.display_name,
            enabled=row.enabled,
            secrets=dict(secrets) if isinstance(secrets, dict) else {},
            alert_routes=routes if isinstance(routes, str) else None,
            overrides=Overrides.from_json(overrides if isinstance(overrides, dict) else {}),
            graph_endpoint=endpoint if isinstance(endpoint, str) else None,
            added_at=row.added_at,
        )


def _simulated_endpoint(url: str) -> str:
    """Only a simulated tenant names its own Graph endpoint, and it answers on loopback: a
    registry entry can never send a tenant's calls (with its token) to another host."""
    try:
        parts = urlsplit(url.strip())
        valid = parts.scheme in ("http", "https") and parts.port != 0
        host = parts.hostname
    except ValueError:  # a port that is not a number
        valid, host = False, None
    if not valid or not is_loopback_host(host):
        raise TenantError(
            "a tenant's own Graph endpoint is accepted only as an http(s) URL on a loopback "
            "address (a simulated tenant); real tenants use ETG_GRAPH_ENDPOINT"
        )
    return url.strip().rstrip("/")


class TenantRegistry:
    """The registry's table, in the deployment's own prefix (never a tenant's)."""

    def __init__(self, store: TableStore) -> None:
        self._rows = TenantRows(store)

    async def all(self) -> list[Tenant]:
        """Every valid entry, by name. An entry that no longer validates is left out, with a
        warning naming it, rather than stopping every other tenant's jobs."""
        out = []
        for row in await self._rows.all():
            try:
                out.append(Tenant.from_row(row))
            except TenantError as exc:
                log = structlog.get_logger("etg_monitor")
                log.warning("tenant.invalid_entry", tenant_id=row.tenant_id, error=str(exc))
        return sorted(out, key=lambda t: (t.display_name.casefold(), t.tenant_id))

    async def enabled(self) -> list[Tenant]:
        return [t for t in await self.all() if t.enabled]

    async def get(self, tenant_id: str) -> Tenant | None:
        row = await self._rows.get(normalize_tenant_id(tenant_id))
        return Tenant.from_row(row) if row is not None else None

    async def put(self, tenant: Tenant, now: datetime) -> bool:
        """Add or replace an entry (a replaced entry keeps when it was first added); True when
        it replaced one. Refuses a tenant whose table tag another one has: their tables would
        be the same tables."""
        replaced = False
        for row in await self._rows.all():
            if row.tenant_id != tenant.tenant_id and row.tag == tenant.tag:
                raise TenantError(
                    f"tenant {tenant.tenant_id} shares its table tag with {row.tenant_id}; "
                    "use a separate deployment (table prefix) for one of them"
                )
            if row.tenant_id == tenant.tenant_id:
                replaced = True
                if tenant.added_at is None:
                    tenant = dataclasses.replace(tenant, added_at=row.added_at)
        await self._rows.put(tenant.to_row(), now)
        return replaced

    async def remove(self, tenant_id: str) -> bool:
        """Remove the entry (its tables stay, for the record); False when there was none."""
        return await self._rows.delete(normalize_tenant_id(tenant_id))
