"""Typed settings, read once from the environment (app settings in Azure) and validated up front.

Every setting is one row of `SETTINGS`: its name, type, default, bounds or choices, whether it is
a secret, and its documentation. `Settings.from_env` reads and checks each row, then applies the
few rules that span several settings. docs/configuration.md and the README's settings table are
generated from the same rows (devtools/settings_docs.py), and the infra drift test reads them.

Every problem is collected and reported together, so a misconfigured deployment fails its first
run with one clear message instead of a stack trace per missing value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from monitors.alerts.pagerduty import EVENTS_URL as PAGERDUTY_EVENTS_URL
from monitors.alerts.routing import DEFAULT_ROUTES, Channel, Routes, parse_routes
from monitors.failures import SettingsError as SettingsError

GLOBAL_GRAPH = "https://graph.microsoft.com"
NATIONAL_CLOUD_GRAPH = (
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
)
KNOWN_GRAPH_ENDPOINTS = (GLOBAL_GRAPH, *NATIONAL_CLOUD_GRAPH)

_TABLE_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,39}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# "federated" is never read from the environment: a registry tenant's settings take it
# (monitors.tenants.scope), the multi-tenant app signing in with the managed identity's token.
CredentialMode = Literal["default", "none", "federated"]
LogFormat = Literal["auto", "json", "console"]
RemediationMode = Literal["off", "dry-run", "auto"]
SettingType = Literal["text", "url", "int", "float", "bool", "json", "schedule"]


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- Schedules: NCRONTAB as the Functions host reads it, firings from croniter --------------------

# NCrontab's names, in English whatever the locale: any leading part of one, in any case, counts.
_MONTHS = "January February March April May June July August September October November December"
_WEEKDAYS = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday"
# {second} {minute} {hour} {day} {month} {day-of-week}: each field's bounds and value names.
_NCRONTAB_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, tuple(_MONTHS.split())),
    ("day-of-week", 0, 6, tuple(_WEEKDAYS.split())),
)
# NCrontab's operators only: `*`, a value, a range `a-b`, each with an optional step `/n`, in a
# comma-separated list. croniter also reads L, W, #, ?, H and @aliases, which the host refuses.
_NCRONTAB_ITEM = re.compile(
    r"(?:\*|(?P<first>[0-9]+|[A-Za-z]+)(?:-(?P<last>[0-9]+|[A-Za-z]+))?)(?:/(?P<step>[0-9]+))?"
)
# Where the "never fires" check starts looking; croniter searches 50 years from here.
_SCHEDULE_PROBE = datetime(2024, 1, 1, tzinfo=UTC)


def _ncrontab_value(text: str, index: int) -> int:
    name, low, high, names = _NCRONTAB_FIELDS[index]
    if text.isdigit():
        value = int(text)
    else:
        matches = [low + i for i, full in enumerate(names) if full.lower().startswith(text.lower())]
        if not matches:
            known = f" or a name ({', '.join(names)})" if names else ""
            raise ValueError(f"has {text!r} in its {name} field, which takes a number{known}")
        value = matches[0]
    if not low <= value <= high:
        raise ValueError(f"has {value} in its {name} field, which takes {low}-{high}")
    return value


def _ncrontab_field(token: str, index: int) -> str:
    """One field in the numeric form croniter reads the way NCrontab does."""
    name, _low, high, _names = _NCRONTAB_FIELDS[index]
    items: list[str] = []
    for item in token.split(","):
        match = _NCRONTAB_ITEM.fullmatch(item)
        if match is None or (match["step"] is not None and int(match["step"]) == 0):
            raise ValueError(
                f"has {item!r} in its {name} field: NCRONTAB takes *, a value, a range a-b, "
                "each with an optional step /n, separated by commas"
            )
        step = f"/{int(match['step'])}" if match["step"] else ""
        if match["first"] is None:
            items.append("*" + step)
            continue
        first = _ncrontab_value(match["first"], index)
        last = _ncrontab_value(match["last"], index) if match["last"] else None
        if last is None and step:
            last = high  # NCrontab reads `a/n` as `a-max/n`
        if last is None:
            items.append(str(first))
        else:
            # NCrontab swaps a reversed range; croniter would wrap it around instead.
            low_end, high_end = sorted((first, last))
            items.append(f"{low_end}-{high_end}{step}")
    return ",".join(items)


def parse_schedule(expression: str) -> str:
    """The NCRONTAB expression in the numeric six-field form croniter reads as the host does.

    Raises ValueError, saying what is wrong, for anything the Functions timer trigger refuses
    (wrong field count, operators NCrontab does not have, values out of range).
    """
    tokens = [token for token in expression.split(" ") if token]
    if len(tokens) != len(_NCRONTAB_FIELDS):
        raise ValueError(
            "must be an NCRONTAB expression of six fields, {second} {minute} {hour} {day} "
            f"{{month}} {{day-of-week}}, got {expression!r} ({len(tokens)} fields)"
        )
    try:
        return " ".join(_ncrontab_field(token, i) for i, token in enumerate(tokens))
    except ValueError as exc:
        raise ValueError(f"{expression!r} {exc}") from None


def schedule_firings(expression: str, after: datetime) -> Iterator[datetime]:
    """Every firing of an NCRONTAB schedule after `after`, in order, as the host computes them
    (day and day-of-week must both match). Ends if none comes within 50 years."""
    # Imported here, not at the top: croniter with dateutil takes ~45 ms to import.
    from croniter import CroniterBadDateError, croniter

    firings = croniter(parse_schedule(expression), after, second_at_beginning=True, day_or=False)
    while True:
        try:
            yield firings.get_next(datetime)
        except CroniterBadDateError:
            return


def _schedule(expression: str) -> str:
    if next(schedule_firings(expression, _SCHEDULE_PROBE), None) is None:
        raise ValueError(f"{expression!r} never fires")
    return expression


# --- Checks of single values: each returns the value to use or raises ValueError ------------------
# The message is what follows the setting's name. A secret's check never quotes the value.


def _split_url(value: str) -> SplitResult:
    try:
        parts = urlsplit(value)
        _ = parts.port  # an out-of-range or non-numeric port raises here
    except ValueError:
        raise ValueError("is not a valid URL") from None
    return parts


def _graph_endpoint(value: str) -> str:
    endpoint = value.rstrip("/")
    if endpoint.endswith(("/v1.0", "/beta")):
        raise ValueError(
            "must be the service root without a version "
            f"(the monitor appends /v1.0 and /beta itself), got {endpoint!r}"
        )
    parts = _split_url(endpoint)
    if is_loopback_host(parts.hostname):
        if parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
            raise ValueError(f"must be a plain loopback URL (no path), got {endpoint!r}")
    elif endpoint not in KNOWN_GRAPH_ENDPOINTS:
        raise ValueError(
            f"must be one of {', '.join(KNOWN_GRAPH_ENDPOINTS)} or a loopback simulator URL, "
            f"got {endpoint!r}"
        )
    return endpoint


def _storage_connection(value: str) -> str:
    """What azure-data-tables' TableServiceClient.from_connection_string accepts: the literal
    UseDevelopmentStorage=true, or pairs with a credential and a way to find the endpoint."""
    from azure.core.utils import parse_connection_string

    if value.lower() == "usedevelopmentstorage=true":
        return value
    try:
        keys = set(parse_connection_string(value))
    except ValueError:
        raise ValueError(
            "is not a connection string: expected UseDevelopmentStorage=true or Key=Value pairs "
            "separated by ';', each key once (the value is not shown: it may hold an account key)"
        ) from None
    if not ({"accountname", "accountkey"} <= keys or "sharedaccesssignature" in keys):
        raise ValueError(
            "names no credential: give AccountName and AccountKey, or SharedAccessSignature"
        )
    if not keys & {"tableendpoint", "accountname"}:
        raise ValueError("names no table endpoint: give AccountName or TableEndpoint")
    return value


def _storage_table_url(value: str) -> str:
    table_url = value.rstrip("/")
    parts = _split_url(table_url)
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise ValueError("must be an https URL")
    return table_url


def _guid(problem: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not _GUID.match(value):
            raise ValueError(problem)
        return value.lower()

    return check


# queue names: 3-63 lower-case letters, digits and single hyphens, starting and ending alnum
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def _queue_name(value: str) -> str:
    if not _QUEUE_NAME.match(value):
        raise ValueError(
            "must be 3-63 lower-case letters, digits and single hyphens, starting and ending "
            f"with a letter or digit (storage queue names), got {value!r}"
        )
    return value


def _table_prefix(value: str) -> str:
    if not _TABLE_PREFIX.match(value):
        raise ValueError(
            "must start with a letter and hold 1-40 letters or digits "
            f"(table names allow nothing else), got {value!r}"
        )
    return value


def _https_url(problem: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        parts = _split_url(value)
        if not (
            parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))
        ):
            raise ValueError(problem)
        return value

    return check


def _client_state(value: str) -> str:
    if not (16 <= len(value) <= 128 and value.isprintable()):
        raise ValueError("must be 16 to 128 printable characters")
    return value


def _policy_groups(raw: str) -> dict[str, str]:
    """A JSON object from policy id or policy name to the ETG's group id; unset is empty."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON object of policy id or name to group id") from None
    if not isinstance(data, dict) or not data:
        raise ValueError("must be a non-empty JSON object")
    out: dict[str, str] = {}
    bad: list[str] = []
    for key, value in data.items():
        if not key.strip() or not isinstance(value, str) or not _GUID.match(value.strip()):
            bad.append(repr(key[:80]))
            continue
        name = key.strip()
        out[name.lower() if _GUID.match(name) else name.casefold()] = value.strip().lower()
    if bad:
        entries = f"entry {bad[0]}" if len(bad) == 1 else f"entries {', '.join(bad)}"
        raise ValueError(f"{entries} must map a policy id or name to a group id")
    return out


def _client_id(text: str) -> str:
    if not _GUID.match(text):
        raise ValueError(f"must be a managed identity's client id (a GUID), got {text[:80]!r}")
    return text.lower()


def _base_url(value: str) -> str:
    parts = _split_url(value.rstrip("/"))
    loopback = parts.scheme == "http" and is_loopback_host(parts.hostname)
    if not (parts.scheme == "https" or loopback) or parts.path or parts.query or parts.fragment:
        # Not quoted: a pasted URL may carry a function key.
        raise ValueError("must be https://<host> with no path, query or fragment")
    return f"{parts.scheme}://{parts.netloc}"


def _group_id(text: str) -> str:
    if not _GUID.match(text):
        raise ValueError(f"must be an Entra group object id (a GUID), got {text[:80]!r}")
    return text.lower()


_PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")


def _principal_name(text: str) -> str:
    if not _PRINCIPAL_NAME.fullmatch(text):
        raise ValueError("must be 1 to 128 letters, digits or . _ @ + -")
    return text


def _console_secret(value: str) -> str:
    if not (32 <= len(value) <= 256 and value.isprintable()):
        raise ValueError("must be 32 to 256 printable characters")
    return value


def _alert_routes(text: str) -> Routes:
    return parse_routes(text)


_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")


def _pagerduty_routing_key(text: str) -> str:
    # PagerDuty's "Send an Alert Event": routing_key is the 32 character Integration Key.
    if not _ROUTING_KEY.match(text):
        raise ValueError("must be the 32 character integration key of an Events API v2 integration")
    return text


def _webhook_secret(value: str) -> str:
    if not (32 <= len(value) <= 256 and value.isprintable()):
        raise ValueError("must be 32 to 256 printable characters")
    return value


# --- The table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: how it is read, checked and documented."""

    name: str
    field: str  # the Settings attribute it fills; every schedule fills `schedules`
    type: SettingType
    doc: str  # one line of Markdown: docs/configuration.md and the README show it
    default: str | None = None  # as written in the environment; None: unset
    low: int | None = None  # inclusive bounds of an int or float setting
    high: int | None = None
    choices: tuple[str, ...] = ()  # the values a text setting accepts, lower case
    secret: bool = False  # masked in logs, never quoted in a problem
    check: Callable[[str], Any] | None = None  # the value to use; ValueError says what is wrong

    def read(self, raw: str) -> Any:
        """The value this setting takes from its environment text; ValueError says what is wrong
        (the words after the setting's name)."""
        text = raw.strip()
        if not text and self.type != "json":  # a JSON setting's check says what unset means
            if self.default is None:
                return None
            text = self.default
        return _READERS[self.type](self, text)


def _read_text(setting: Setting, text: str) -> Any:
    if setting.choices:
        text = text.lower()
        if text not in setting.choices:
            *rest, last = setting.choices
            raise ValueError(f"must be {', '.join(rest)} or {last}, got {text!r}")
    return setting.check(text) if setting.check else text


def _read_int(setting: Setting, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a whole number, got {text!r}") from None
    low, high = setting.low, setting.high
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"must be between {low} and {high}, got {value}")
    return value


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _read_bool(setting: Setting, text: str) -> bool:
    lowered = text.lower()
    if lowered not in _TRUE + _FALSE:
        raise ValueError(f"must be true or false, got {lowered!r}")
    return lowered in _TRUE


_READERS: dict[SettingType, Callable[[Setting, str], Any]] = {
    "text": _read_text,
    "url": _read_text,
    "int": _read_int,
    # Whole seconds in the environment; a float in code, where fractions are meaningful.
    "float": lambda setting, text: float(_read_int(setting, text)),
    "bool": _read_bool,
    "json": lambda setting, text: (setting.check or json.loads)(text),
    "schedule": lambda setting, text: _schedule(text),
}

_ENDPOINTS = ", ".join(f"`{endpoint}`" for endpoint in KNOWN_GRAPH_ENDPOINTS)

SETTINGS: tuple[Setting, ...] = (
    # Microsoft Graph
    Setting(
        "ETG_GRAPH_ENDPOINT",
        "graph_endpoint",
        "url",
        default=GLOBAL_GRAPH,
        check=_graph_endpoint,
        doc=f"Graph service root of the tenant's cloud: {_ENDPOINTS}, or a loopback simulator "
        "URL. No `/v1.0` or `/beta`: the monitor appends them. Tokens are sent to this host only.",
    ),
    Setting(
        "ETG_GRAPH_CREDENTIAL",
        "graph_credential",
        "text",
        default="default",
        choices=("default", "none"),
        doc="`default`: azure-identity's DefaultAzureCredential (the managed identity in Azure, "
        "your sign-in locally). `none`: no token, accepted only with a loopback endpoint (the "
        "simulated tenant).",
    ),
    Setting(
        "ETG_GRAPH_CONCURRENCY",
        "graph_concurrency",
        "int",
        default="8",
        low=1,
        high=64,
        doc="Graph requests in flight at once. Lower it if the tenant is throttled often.",
    ),
    Setting(
        "ETG_GRAPH_MAX_RETRIES",
        "graph_max_retries",
        "int",
        default="8",
        low=0,
        high=10,
        doc="Retries of one throttled or unavailable (429/503/504) request, honouring "
        "`Retry-After`.",
    ),
    Setting(
        "ETG_GRAPH_TIMEOUT_SECONDS",
        "graph_timeout_seconds",
        "float",
        default="30",
        low=1,
        high=300,
        doc="Timeout of one request, in seconds.",
    ),
    Setting(
        "ETG_EXPORT_TIMEOUT_SECONDS",
        "export_timeout_seconds",
        "float",
        default="300",
        low=30,
        high=1800,
        doc="How long a report export job may take, in seconds, before the run gives up on it. "
        "The deployments it would have covered stay unverified and the checkpoint holds, so the "
        "next run reads them.",
    ),
    Setting(
        "ETG_GRAPH_RETRY_BUDGET_SECONDS",
        "graph_retry_budget_seconds",
        "int",
        default="120",
        low=0,
        high=3600,
        doc="Total time in seconds one run may spend waiting on retries. When it is spent, what "
        "is left is reported unverified and re-checked by the next run.",
    ),
    # State (Azure Table Storage)
    Setting(
        "ETG_STORAGE_TABLE_URL",
        "storage_table_url",
        "url",
        check=_storage_table_url,
        doc="Table endpoint, reached with Entra ID (the managed identity in Azure, your sign-in "
        "locally). Set exactly one of this and `ETG_STORAGE_CONNECTION`.",
    ),
    Setting(
        "ETG_STORAGE_CONNECTION",
        "storage_connection",
        "text",
        secret=True,
        check=_storage_connection,
        doc="A Table Storage connection string: `UseDevelopmentStorage=true` for Azurite, or "
        "`Key=Value` pairs separated by `;` with `AccountName` and `AccountKey` (or "
        "`SharedAccessSignature`) and optionally `TableEndpoint`.",
    ),
    Setting(
        "ETG_TABLE_PREFIX",
        "table_prefix",
        "text",
        default="etg",
        check=_table_prefix,
        doc="Prefix of every table name (a letter, then up to 39 letters or digits), so several "
        "installations or test runs can share one account. Changing it starts from empty state.",
    ),
    # Scan
    Setting(
        "ETG_SCAN_LOOKBACK_HOURS",
        "scan_lookback_hours",
        "int",
        default="168",
        low=1,
        high=24 * 30,
        doc="How far back, in hours, the first scan looks; no scan reads the audit log further "
        "back than this. Keep it within the audit log retention: 7 days on Entra ID Free, 30 "
        "days with P1/P2.",
    ),
    Setting(
        "ETG_AUDIT_LATENCY_MINUTES",
        "audit_latency_minutes",
        "int",
        default="60",
        low=0,
        high=24 * 60,
        doc="How late, in minutes, an Entra audit event may appear. A missing join is concluded "
        "only after this much time has passed since provisioning completed; until then the "
        "deployment stays pending.",
    ),
    Setting(
        "ETG_MEMBERSHIP_GRACE_MINUTES",
        "membership_grace_minutes",
        "int",
        default="10",
        low=0,
        high=120,
        doc="Minutes after provisioning completed before a live check that finds the device "
        "outside its ETG counts, with no join seen: directory replication can hide a join for "
        "a while. Then `etg_missing` opens without waiting for the audit log "
        "(`ETG_EARLY_CONCLUSION`).",
    ),
    Setting(
        "ETG_EARLY_CONCLUSION",
        "early_conclusion",
        "bool",
        default="true",
        doc="`true`: a device still outside its ETG `ETG_MEMBERSHIP_GRACE_MINUTES` after "
        "provisioning completed, with no join seen, opens `etg_missing` at once; the audit log "
        "refines it when it settles. `false`: `etg_missing` waits for "
        "`ETG_AUDIT_LATENCY_MINUTES`, as before. Off exists for comparison and for tenants "
        "whose directory replication is unusually slow.",
    ),
    Setting(
        "ETG_STUCK_GRACE_MINUTES",
        "stuck_grace_minutes",
        "int",
        default="30",
        low=0,
        high=24 * 60,
        doc="Grace in minutes after the policy's timeout before a deployment still in progress "
        "becomes `deployment_stuck`.",
    ),
    Setting(
        "ETG_POLICY_GROUPS",
        "policy_groups",
        "json",
        check=_policy_groups,
        doc="JSON object from policy id or policy name to the ETG's group id, e.g. `{\"Contoso "
        '- Kiosks": "5f0c…"}`. Always wins over what Graph says. For tenants that route neither '
        "`retrieveEnrollmentTimeDeviceMembershipTarget` nor `retrieveJustInTimeConfiguration`, "
        "where otherwise only the policy's `devicesecuritygroupids` setting names the ETG "
        '(marked "read from policy settings").',
    ),
    Setting(
        "ETG_DETAILED_REPORTS",
        "detailed_reports",
        "bool",
        default="false",
        doc="`true`: also export the per-app and per-script device preparation reports and raise "
        "`payload_incomplete`. Two more report exports per scan.",
    ),
    # Teams alerts
    Setting(
        "ETG_TEAMS_WEBHOOK_URL",
        "teams_webhook_url",
        "url",
        secret=True,
        check=_https_url("must be an https URL"),
        doc="The `sig=` query parameter is the credential. URL of a Teams Workflows flow with "
        'the trigger "When a Teams webhook request is received". Must be https. Empty: '
        "anomalies are recorded, no message is sent; the `alerts` job reports `not configured`.",
    ),
    Setting(
        "ETG_ALERT_DIGEST_THRESHOLD",
        "alert_digest_threshold",
        "int",
        default="5",
        low=1,
        high=1000,
        doc="A run that opens (or resolves) more than this many anomalies sends one digest card "
        "instead of one card each.",
    ),
    Setting(
        "ETG_ALERT_MAX_AGE_HOURS",
        "alert_max_age_hours",
        "int",
        default="24",
        low=1,
        high=24 * 14,
        doc="An alert not delivered within this many hours is given up and marked failed; the "
        "anomaly itself stays recorded.",
    ),
    # Alert channels
    Setting(
        "ETG_ALERT_ROUTES",
        "alert_routes",
        "text",
        default="",
        check=_alert_routes,
        doc="Which channels each alert goes to: `name=channel,channel;...`, `name` an anomaly kind "
        "or a severity (`critical`, `high`), channels `teams`, `pagerduty`, `webhook`; e.g. "
        "`critical=teams,pagerduty;etg_missing=teams,pagerduty,webhook`. A kind's entry wins over "
        "its severity's. Empty: every alert to Teams only. Every channel named must be configured.",
    ),
    Setting(
        "ETG_PAGERDUTY_ROUTING_KEY",
        "pagerduty_routing_key",
        "text",
        secret=True,
        check=_pagerduty_routing_key,
        doc="Integration key (32 characters) of a PagerDuty service's Events API v2 integration. "
        "Empty: the `pagerduty` channel is not configured.",
    ),
    Setting(
        "ETG_PAGERDUTY_EVENTS_URL",
        "pagerduty_events_url",
        "url",
        default=PAGERDUTY_EVENTS_URL,
        check=_https_url("must be an https URL"),
        doc="PagerDuty Events API v2 endpoint. Must be https (or a loopback simulator URL).",
    ),
    Setting(
        "ETG_ALERT_WEBHOOK_URL",
        "alert_webhook_url",
        "url",
        check=_https_url("must be an https URL"),
        doc="Receiver of the generic JSON webhook (schema `etg-monitor.alert.v1`, "
        "docs/alerting.md). Must be https. Needs `ETG_ALERT_WEBHOOK_SECRET`. Empty: the `webhook` "
        "channel is not configured.",
    ),
    Setting(
        "ETG_ALERT_WEBHOOK_SECRET",
        "alert_webhook_secret",
        "text",
        secret=True,
        check=_webhook_secret,
        doc="Key of the webhook's HMAC-SHA256 signature (`X-Etg-Signature`), 32 to 256 printable "
        "characters, shared with the receiver.",
    ),
    # Change notifications
    Setting(
        "ETG_NOTIFICATION_URL",
        "notification_url",
        "url",
        secret=True,
        check=_https_url("must be an https URL Graph can reach"),
        doc="Carries a function key. `https://<app host>/api/graph/notifications?code=<function "
        "key>`: where Graph delivers notifications for each ETG's members. Must be https. Empty: "
        "no subscriptions are made. Needs `ETG_CLIENT_STATE`.",
    ),
    Setting(
        "ETG_CLIENT_STATE",
        "client_state",
        "text",
        secret=True,
        check=_client_state,
        doc="16-128 printable characters Graph echoes in every notification; anything else is "
        "refused. Changing it makes existing subscriptions' notifications fail until the "
        "subscriptions are recreated.",
    ),
    Setting(
        "ETG_TENANT_ID",
        "tenant_id",
        "text",
        check=str.lower,
        doc="Notifications naming another tenant are refused. Empty: not checked.",
    ),
    # Remediation (opt-in writes to Entra groups)
    Setting(
        "ETG_REMEDIATION",
        "remediation",
        "text",
        default="off",
        choices=("off", "dry-run", "auto"),
        doc="`off`: the monitor never writes to Entra. `dry-run`: after each scan and config "
        "check it plans adding missing devices and the provisioning client owner to their ETG "
        "and says so on the card, writing nothing. `auto`: it makes those additions (never a "
        "removal). Enabling it grants a second managed identity GroupMember.ReadWrite.All, "
        "Device.ReadWrite.All and Group.ReadWrite.All; the read identity stays read-only. See "
        "the runbook's Remediation section.",
    ),
    Setting(
        "ETG_REMEDIATION_MAX_PER_RUN",
        "remediation_max_per_run",
        "int",
        default="20",
        low=1,
        high=500,
        doc="Most additions one run makes; the rest wait for the next run and say so.",
    ),
    Setting(
        "ETG_REMEDIATION_CLIENT_ID",
        "remediation_client_id",
        "text",
        check=_client_id,
        doc="Client id of the user-assigned managed identity that holds the write permissions. "
        "Empty: writes use the same credential as reads (`ETG_GRAPH_CREDENTIAL`), as locally.",
    ),
    # Operator console
    Setting(
        "ETG_PUBLIC_BASE_URL",
        "public_base_url",
        "url",
        check=_base_url,
        doc="The console's public base URL, e.g. `https://func-x.azurewebsites.net` (https, no "
        "path). The alert card's buttons open `{base}/api/console/anomalies/{id}`. Empty: cards "
        "carry no console buttons.",
    ),
    Setting(
        "ETG_CONSOLE_OPERATORS_GROUP",
        "console_operators_group",
        "text",
        check=_group_id,
        doc="Object id of the Entra group whose members may use the console, checked against the "
        "`groups` claim App Service Authentication passes in `X-MS-CLIENT-PRINCIPAL`. Empty: "
        "nobody signed in is let in.",
    ),
    Setting(
        "ETG_CONSOLE_DEV_PRINCIPAL",
        "console_dev_principal",
        "text",
        check=_principal_name,
        doc="For local use and tests only: the principal name the console assumes for a request "
        "to a loopback host without App Service Authentication's headers. Refused unless "
        "`ETG_GRAPH_ENDPOINT` is a loopback address (the simulated tenant).",
    ),
    Setting(
        "ETG_CONSOLE_SECRET",
        "console_secret",
        "text",
        secret=True,
        check=_console_secret,
        doc="Key of the console's CSRF tokens (HMAC-SHA256), 32 to 256 printable characters. "
        "Empty: the console is read-only (acknowledge and suppress are refused). Changing it "
        "invalidates open forms only.",
    ),
    Setting(
        "ETG_REMIND_AFTER_HOURS",
        "remind_after_hours",
        "int",
        default="24",
        low=1,
        high=720,
        doc="An open anomaly nobody acknowledged is announced again after this many hours, then "
        "at most daily, saying how long it has been open.",
    ),
    # Many tenants (docs/msp.md): used only while the tenant registry has entries
    Setting(
        "ETG_MSP_APP_CLIENT_ID",
        "msp_app_client_id",
        "text",
        check=_guid("must be the application (client) id of the multi-tenant app registration"),
        doc="Application (client) id of the multi-tenant app registration that is the monitor's "
        "identity in every customer tenant of the registry. Its credential is the function "
        "app's managed identity (a federated identity credential); no secret exists. Empty: "
        "only simulated (loopback) registry tenants can be reached.",
    ),
    Setting(
        "ETG_MSP_IDENTITY_CLIENT_ID",
        "msp_identity_client_id",
        "text",
        check=_guid("must be the client id of a user-assigned managed identity"),
        doc="Client id of the user-assigned managed identity whose token "
        "(`api://AzureADTokenExchange`) signs the app registration in: a federated identity "
        "credential trusts user-assigned identities only. Empty: the identity of "
        "`AZURE_CLIENT_ID`, the one the Bicep assigns the app.",
    ),
    Setting(
        "ETG_JOB_QUEUE",
        "job_queue",
        "text",
        default="etg-jobs",
        check=_queue_name,
        doc="Storage queue the timers fan tenants' jobs out on, one message per enabled tenant "
        "and job; the host moves a message that failed five times to `<name>-poison`. The "
        "queue trigger in function_app.py names the same queue.",
    ),
    Setting(
        "ETG_STORAGE_QUEUE_URL",
        "storage_queue_url",
        "url",
        check=_storage_table_url,
        doc="Queue endpoint of the storage account (`https://<account>.queue.core.windows.net`), "
        "reached with the managed identity. Empty: from `ETG_STORAGE_CONNECTION`, or derived "
        "from `ETG_STORAGE_TABLE_URL`'s account.",
    ),
    Setting(
        "ETG_KEY_VAULT_URL",
        "key_vault_url",
        "url",
        check=_https_url("must be the vault's https URL, e.g. https://<vault>.vault.azure.net"),
        doc="Key Vault holding the registry tenants' alert secrets (`kv:<secret name>` in a "
        "tenant's routes). Empty: only `env:<NAME>` references resolve.",
    ),
    # Logging
    Setting(
        "ETG_LOG_FORMAT",
        "log_format",
        "text",
        default="auto",
        choices=("auto", "json", "console"),
        doc="`json`: one JSON object per line (structlog), what Application Insights stores in "
        "`traces`. `console`: readable lines. `auto`: JSON when running in Azure Functions, "
        "console otherwise.",
    ),
    # Schedules: the Functions host resolves %NAME% in function_app.py from these; health
    # reads the same values to know when each job is overdue.
    Setting(
        "CONFIG_CHECK_SCHEDULE",
        "schedules",
        "schedule",
        default="0 0 * * * *",
        doc="`config_check`, hourly by default: is every device preparation policy's ETG usable? "
        "Sends due alerts after.",
    ),
    Setting(
        "SCAN_SCHEDULE",
        "schedules",
        "schedule",
        default="0 */10 * * * *",
        doc="`scan`, every 10 minutes by default: judge new and pending deployments. Sends due "
        "alerts after.",
    ),
    Setting(
        "ALERTS_SCHEDULE",
        "schedules",
        "schedule",
        default="0 */5 * * * *",
        doc="`alerts`, every 5 minutes by default: deliver the outbox to Teams (retries, backoff).",
    ),
    Setting(
        "SUMMARY_SCHEDULE",
        "schedules",
        "schedule",
        default="0 0 7 * * 1",
        doc="`weekly_summary`, Mondays 07:00 UTC by default: last week's summary card.",
    ),
    Setting(
        "SUBSCRIPTIONS_SCHEDULE",
        "schedules",
        "schedule",
        default="0 15 * * * *",
        doc="`subscriptions`, hourly at :15 by default: create, renew and remove "
        "change-notification subscriptions.",
    ),
    Setting(
        "NOTIFICATIONS_SCHEDULE",
        "schedules",
        "schedule",
        default="0 * * * * *",
        doc="`notifications`, every minute by default: process received notifications (group "
        "delta). Does nothing when the inbox is empty.",
    ),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {setting.name: setting for setting in SETTINGS}
# Setting name -> default NCRONTAB expression, for every job schedule.
SCHEDULE_SETTINGS: Mapping[str, str] = {
    s.name: s.default for s in SETTINGS if s.type == "schedule" and s.default is not None
}
# Job -> the schedule setting of its timer (function_app.py): health knows from it when a job
# is overdue, the fan-out which tenants a firing is for. Remediation has no timer of its own.
JOB_SCHEDULES: Mapping[str, str] = {
    "scan": "SCAN_SCHEDULE",
    "config_check": "CONFIG_CHECK_SCHEDULE",
    "alerts": "ALERTS_SCHEDULE",
    "notifications": "NOTIFICATIONS_SCHEDULE",
    "subscriptions": "SUBSCRIPTIONS_SCHEDULE",
    "weekly_summary": "SUMMARY_SCHEDULE",
}


# --- Rules across settings ------------------------------------------------------------------------
# Each takes the values read so far, by setting name, and returns its problems. A rule runs only
# when every setting it reads was itself valid: over a wrong value it would only repeat a problem.


def _one_storage(values: Mapping[str, Any]) -> list[str]:
    connection, table_url = values["ETG_STORAGE_CONNECTION"], values["ETG_STORAGE_TABLE_URL"]
    if connection and table_url:
        return ["set only one of ETG_STORAGE_CONNECTION and ETG_STORAGE_TABLE_URL"]
    if not connection and not table_url:
        return [
            "set ETG_STORAGE_CONNECTION (a connection string, e.g. "
            "UseDevelopmentStorage=true) or ETG_STORAGE_TABLE_URL "
            "(https://<account>.table.core.windows.net, identity-based)"
        ]
    return []


def _no_credential_only_on_loopback(values: Mapping[str, Any]) -> list[str]:
    loopback = is_loopback_host(urlsplit(values["ETG_GRAPH_ENDPOINT"]).hostname)
    if values["ETG_GRAPH_CREDENTIAL"] == "none" and not loopback:
        return [
            "ETG_GRAPH_CREDENTIAL=none is accepted only when ETG_GRAPH_ENDPOINT is a loopback "
            "address (the simulated tenant)"
        ]
    return []


def _notifications_need_client_state(values: Mapping[str, Any]) -> list[str]:
    if values["ETG_NOTIFICATION_URL"] and not values["ETG_CLIENT_STATE"]:
        return ["ETG_NOTIFICATION_URL needs ETG_CLIENT_STATE as well"]
    return []


def _dev_principal_only_on_loopback(values: Mapping[str, Any]) -> list[str]:
    loopback = is_loopback_host(urlsplit(values["ETG_GRAPH_ENDPOINT"]).hostname)
    if values["ETG_CONSOLE_DEV_PRINCIPAL"] and not loopback:
        return [
            "ETG_CONSOLE_DEV_PRINCIPAL is accepted only when ETG_GRAPH_ENDPOINT is a loopback "
            "address (the simulated tenant)"
        ]
    return []


# Where each channel's configuration lives: a route may name only channels that have it.
_CHANNEL_SETTINGS = {
    Channel.TEAMS: "ETG_TEAMS_WEBHOOK_URL",
    Channel.PAGERDUTY: "ETG_PAGERDUTY_ROUTING_KEY",
    Channel.WEBHOOK: "ETG_ALERT_WEBHOOK_URL",
}


def _routes_name_configured_channels(values: Mapping[str, Any]) -> list[str]:
    routes: Routes = values["ETG_ALERT_ROUTES"]
    return [
        f"ETG_ALERT_ROUTES names the {channel.value} channel but {_CHANNEL_SETTINGS[channel]} "
        "is not set"
        for channel in Channel
        if channel in routes.named() and not values[_CHANNEL_SETTINGS[channel]]
    ]


def _webhook_needs_secret(values: Mapping[str, Any]) -> list[str]:
    if values["ETG_ALERT_WEBHOOK_URL"] and not values["ETG_ALERT_WEBHOOK_SECRET"]:
        return ["ETG_ALERT_WEBHOOK_URL needs ETG_ALERT_WEBHOOK_SECRET as well"]
    return []


_RULES: tuple[tuple[tuple[str, ...], Callable[[Mapping[str, Any]], list[str]]], ...] = (
    (("ETG_STORAGE_CONNECTION", "ETG_STORAGE_TABLE_URL"), _one_storage),
    (("ETG_GRAPH_ENDPOINT", "ETG_GRAPH_CREDENTIAL"), _no_credential_only_on_loopback),
    (("ETG_NOTIFICATION_URL", "ETG_CLIENT_STATE"), _notifications_need_client_state),
    (("ETG_GRAPH_ENDPOINT", "ETG_CONSOLE_DEV_PRINCIPAL"), _dev_principal_only_on_loopback),
    ((*_CHANNEL_SETTINGS.values(), "ETG_ALERT_ROUTES"), _routes_name_configured_channels),
    (("ETG_ALERT_WEBHOOK_URL", "ETG_ALERT_WEBHOOK_SECRET"), _webhook_needs_secret),
)


def _unresolved_key_vault_references(env: Mapping[str, str]) -> list[str]:
    """Settings whose value is still a Key Vault reference: App Service passes one it could not
    resolve through as literal text."""
    return [
        name
        for name, value in env.items()
        if (name in SETTINGS_BY_NAME or name.startswith("ETG_"))
        and value.strip().startswith("@Microsoft.KeyVault(")
    ]


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
    membership_grace_minutes: int = 10
    early_conclusion: bool = True
    stuck_grace_minutes: int = 30
    detailed_reports: bool = False
    graph_retry_budget_seconds: int = 120
    teams_webhook_url: str | None = field(default=None, repr=False)
    alert_digest_threshold: int = 5
    alert_max_age_hours: int = 24
    alert_routes: Routes = DEFAULT_ROUTES
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    pagerduty_events_url: str = PAGERDUTY_EVENTS_URL
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_webhook_secret: str | None = field(default=None, repr=False)
    notification_url: str | None = field(default=None, repr=False)  # carries the function key
    client_state: str | None = field(default=None, repr=False)
    tenant_id: str | None = None
    remediation: RemediationMode = "off"
    remediation_max_per_run: int = 20
    remediation_client_id: str | None = None
    # ETG_POLICY_GROUPS: policy id (lower case) or name (case-folded) -> ETG group id.
    policy_groups: Mapping[str, str] = field(default_factory=dict)
    public_base_url: str | None = None
    console_operators_group: str | None = None
    console_dev_principal: str | None = None
    console_secret: str | None = field(default=None, repr=False)
    remind_after_hours: int = 24
    msp_app_client_id: str | None = None
    msp_identity_client_id: str | None = None
    job_queue: str = "etg-jobs"
    storage_queue_url: str | None = None
    key_vault_url: str | None = None
    # Set on a registry tenant's settings (monitors.tenants.scope): its display name, shown on
    # every card, summary and page. None: a single-tenant install.
    tenant_name: str | None = None
    # Schedule setting name (SCAN_SCHEDULE, ...) -> its NCRONTAB expression, defaults filled in.
    schedules: Mapping[str, str] = field(default_factory=lambda: dict(SCHEDULE_SETTINGS))

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

    def secrets(self) -> list[str]:
        """The values of the secret settings that are set, to register for log redaction."""
        values = (getattr(self, s.field) for s in SETTINGS if s.secret)
        return [value for value in values if isinstance(value, str) and value]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        unresolved = _unresolved_key_vault_references(env)
        problems = [
            f"{name} is a Key Vault reference that did not resolve: give the app's identity the "
            "Key Vault Secrets User role and check the secret exists"
            for name in unresolved
        ]
        failed = set(unresolved)
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.name in failed:
                continue
            try:
                values[setting.name] = setting.read(env.get(setting.name, ""))
            except ValueError as exc:
                problems.append(f"{setting.name} {exc}")
                failed.add(setting.name)
        for names, rule in _RULES:
            if failed.isdisjoint(names):
                problems.extend(rule(values))
        if problems:
            raise SettingsError(problems)
        schedules = {s.name: values[s.name] for s in SETTINGS if s.type == "schedule"}
        fields = {s.field: values[s.name] for s in SETTINGS if s.type != "schedule"}
        return cls(**fields, schedules=schedules)
