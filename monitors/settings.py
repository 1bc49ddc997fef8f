"""Typed settings, read once from the environment (app settings in Azure) and validated up front.

Every problem is collected and reported together, so a misconfigured deployment fails its first
run with one clear message instead of a stack trace per missing value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

GLOBAL_GRAPH = "https://graph.microsoft.com"
NATIONAL_CLOUD_GRAPH = (
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
)
KNOWN_GRAPH_ENDPOINTS = (GLOBAL_GRAPH, *NATIONAL_CLOUD_GRAPH)

# Schedules are resolved by the Functions host from these app settings (%NAME% in function_app.py);
# they are listed here so configuration docs and infra can be checked against one source.
SCHEDULE_SETTINGS = {
    "CONFIG_CHECK_SCHEDULE": "0 0 * * * *",
    "SCAN_SCHEDULE": "0 */10 * * * *",
    "ALERTS_SCHEDULE": "0 */5 * * * *",
    "SUMMARY_SCHEDULE": "0 0 7 * * 1",
    "SUBSCRIPTIONS_SCHEDULE": "0 15 * * * *",
    "NOTIFICATIONS_SCHEDULE": "0 * * * * *",
}

_TABLE_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,39}$")

CredentialMode = Literal["default", "none"]
LogFormat = Literal["auto", "json", "console"]


class SettingsError(ValueError):
    """Raised when the environment does not describe a usable installation."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid etg-monitor settings:\n  - " + "\n  - ".join(problems))


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Settings:
    graph_endpoint: str
    graph_credential: CredentialMode
    storage_connection: str | None = field(repr=False)
    storage_table_url: str | None
    table_prefix: str
    graph_concurrency: int = 8
    graph_max_retries: int = 8
    graph_timeout_seconds: float = 30.0
    export_timeout_seconds: float = 300.0
    log_format: LogFormat = "auto"
    scan_lookback_hours: int = 168
    audit_latency_minutes: int = 60
    stuck_grace_minutes: int = 30
    detailed_reports: bool = False
    graph_retry_budget_seconds: int = 120
    teams_webhook_url: str | None = field(default=None, repr=False)
    alert_digest_threshold: int = 5
    alert_max_age_hours: int = 24
    notification_url: str | None = field(default=None, repr=False)  # carries the function key
    client_state: str | None = field(default=None, repr=False)
    tenant_id: str | None = None
    # ETG_POLICY_GROUPS: policy id (lower case) or name (case-folded) -> ETG group id.
    policy_groups: Mapping[str, str] = field(default_factory=dict)

    @property
    def graph_v1(self) -> str:
        return f"{self.graph_endpoint}/v1.0"

    @property
    def graph_beta(self) -> str:
        return f"{self.graph_endpoint}/beta"

    @property
    def graph_scope(self) -> str:
        return f"{self.graph_endpoint}/.default"

    @property
    def graph_is_loopback(self) -> bool:
        return is_loopback_host(urlsplit(self.graph_endpoint).hostname)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        problems: list[str] = []
        for name, value in env.items():
            if name.startswith("ETG_") and value.strip().startswith("@Microsoft.KeyVault("):
                # App Service passes an unresolved reference through as literal text.
                problems.append(
                    f"{name} is a Key Vault reference that did not resolve: give the app's "
                    "identity the Key Vault Secrets User role and check the secret exists"
                )

        endpoint = (env.get("ETG_GRAPH_ENDPOINT") or GLOBAL_GRAPH).strip().rstrip("/")
        parts = urlsplit(endpoint)
        loopback = is_loopback_host(parts.hostname)
        if endpoint.endswith(("/v1.0", "/beta")):
            problems.append(
                "ETG_GRAPH_ENDPOINT must be the service root without a version "
                f"(the monitor appends /v1.0 and /beta itself), got {endpoint!r}"
            )
        elif loopback:
            if parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
                problems.append(f"ETG_GRAPH_ENDPOINT {endpoint!r} is not a plain loopback URL")
        elif endpoint not in KNOWN_GRAPH_ENDPOINTS:
            problems.append(
                "ETG_GRAPH_ENDPOINT must be one of "
                + ", ".join(KNOWN_GRAPH_ENDPOINTS)
                + f" or a loopback simulator URL, got {endpoint!r}"
            )

        credential = (env.get("ETG_GRAPH_CREDENTIAL") or "default").strip().lower()
        if credential not in ("default", "none"):
            problems.append(f"ETG_GRAPH_CREDENTIAL must be 'default' or 'none', got {credential!r}")
        elif credential == "none" and not loopback:
            problems.append(
                "ETG_GRAPH_CREDENTIAL=none is accepted only when ETG_GRAPH_ENDPOINT is a loopback "
                "address (the simulated tenant)"
            )

        connection = (env.get("ETG_STORAGE_CONNECTION") or "").strip() or None
        table_url = (env.get("ETG_STORAGE_TABLE_URL") or "").strip().rstrip("/") or None
        if connection and table_url:
            problems.append("set only one of ETG_STORAGE_CONNECTION and ETG_STORAGE_TABLE_URL")
        elif not connection and not table_url:
            problems.append(
                "set ETG_STORAGE_CONNECTION (a connection string, e.g. "
                "UseDevelopmentStorage=true) or ETG_STORAGE_TABLE_URL "
                "(https://<account>.table.core.windows.net, identity-based)"
            )
        elif table_url:
            url_parts = urlsplit(table_url)
            if url_parts.scheme != "https" and not is_loopback_host(url_parts.hostname):
                problems.append("ETG_STORAGE_TABLE_URL must be an https URL")

        prefix = (env.get("ETG_TABLE_PREFIX") or "etg").strip()
        if not _TABLE_PREFIX.match(prefix):
            problems.append(
                "ETG_TABLE_PREFIX must start with a letter and hold 1-40 letters or digits "
                f"(table names allow nothing else), got {prefix!r}"
            )

        concurrency = _int(env, "ETG_GRAPH_CONCURRENCY", 8, 1, 64, problems)
        retries = _int(env, "ETG_GRAPH_MAX_RETRIES", 8, 0, 10, problems)
        timeout = float(_int(env, "ETG_GRAPH_TIMEOUT_SECONDS", 30, 1, 300, problems))
        export_timeout = float(_int(env, "ETG_EXPORT_TIMEOUT_SECONDS", 300, 30, 1800, problems))

        lookback = _int(env, "ETG_SCAN_LOOKBACK_HOURS", 168, 1, 24 * 30, problems)
        audit_latency = _int(env, "ETG_AUDIT_LATENCY_MINUTES", 60, 0, 24 * 60, problems)
        stuck_grace = _int(env, "ETG_STUCK_GRACE_MINUTES", 30, 0, 24 * 60, problems)
        retry_budget = _int(env, "ETG_GRAPH_RETRY_BUDGET_SECONDS", 120, 0, 3600, problems)
        detailed_raw = (env.get("ETG_DETAILED_REPORTS") or "false").strip().lower()
        if detailed_raw not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"ETG_DETAILED_REPORTS must be true or false, got {detailed_raw!r}")
        detailed = detailed_raw in ("true", "1", "yes")

        webhook = (env.get("ETG_TEAMS_WEBHOOK_URL") or "").strip() or None
        if webhook and not _https_or_loopback(webhook):
            # The URL is a secret: never echo it.
            problems.append("ETG_TEAMS_WEBHOOK_URL must be an https URL")
        digest = _int(env, "ETG_ALERT_DIGEST_THRESHOLD", 5, 1, 1000, problems)
        max_age = _int(env, "ETG_ALERT_MAX_AGE_HOURS", 24, 1, 24 * 14, problems)

        notification_url = (env.get("ETG_NOTIFICATION_URL") or "").strip() or None
        client_state = (env.get("ETG_CLIENT_STATE") or "").strip() or None
        if notification_url:
            if not _https_or_loopback(notification_url):
                problems.append("ETG_NOTIFICATION_URL must be an https URL Graph can reach")
            if not client_state:
                problems.append("ETG_NOTIFICATION_URL needs ETG_CLIENT_STATE as well")
        if client_state is not None and not (
            16 <= len(client_state) <= 128 and client_state.isprintable()
        ):
            problems.append("ETG_CLIENT_STATE must be 16 to 128 printable characters")
        tenant_id = (env.get("ETG_TENANT_ID") or "").strip().lower() or None

        policy_groups = _policy_groups(env.get("ETG_POLICY_GROUPS") or "", problems)

        log_format = (env.get("ETG_LOG_FORMAT") or "auto").strip().lower()
        if log_format not in ("auto", "json", "console"):
            problems.append(f"ETG_LOG_FORMAT must be auto, json or console, got {log_format!r}")

        if problems:
            raise SettingsError(problems)
        return cls(
            graph_endpoint=endpoint,
            graph_credential=credential,  # type: ignore[arg-type]
            storage_connection=connection,
            storage_table_url=table_url,
            table_prefix=prefix,
            graph_concurrency=concurrency,
            graph_max_retries=retries,
            graph_timeout_seconds=timeout,
            export_timeout_seconds=export_timeout,
            log_format=log_format,  # type: ignore[arg-type]
            scan_lookback_hours=lookback,
            audit_latency_minutes=audit_latency,
            stuck_grace_minutes=stuck_grace,
            detailed_reports=detailed,
            graph_retry_budget_seconds=retry_budget,
            teams_webhook_url=webhook,
            alert_digest_threshold=digest,
            alert_max_age_hours=max_age,
            notification_url=notification_url,
            client_state=client_state,
            tenant_id=tenant_id,
            policy_groups=policy_groups,
        )


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _policy_groups(raw: str, problems: list[str]) -> dict[str, str]:
    """ETG_POLICY_GROUPS: a JSON object from policy id or policy name to the ETG's group id."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        problems.append("ETG_POLICY_GROUPS must be a JSON object of policy id or name to group id")
        return {}
    if not isinstance(data, dict) or not data:
        problems.append("ETG_POLICY_GROUPS must be a non-empty JSON object")
        return {}
    out: dict[str, str] = {}
    for key, value in data.items():
        if not key.strip() or not isinstance(value, str) or not _GUID.match(value.strip()):
            problems.append(
                f"ETG_POLICY_GROUPS entry {key[:80]!r} must map a policy id or name to a group id"
            )
            continue
        name = key.strip()
        out[name.lower() if _GUID.match(name) else name.casefold()] = value.strip().lower()
    return out


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


def _int(
    env: Mapping[str, str], name: str, default: int, low: int, high: int, problems: list[str]
) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, got {raw!r}")
        return default
    if not low <= value <= high:
        problems.append(f"{name} must be between {low} and {high}, got {value}")
        return default
    return value
