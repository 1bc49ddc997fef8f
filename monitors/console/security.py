"""Who is asking, and whether a form post is one the console itself handed out.

In Azure, App Service Authentication signs the operator in with Entra ID and passes the
principal in request headers it sets itself ("Work with user identities in Azure App Service
authentication": ``X-MS-CLIENT-PRINCIPAL`` is Base64 JSON with a ``claims`` array of
``typ``/``val`` objects; ``X-MS-CLIENT-PRINCIPAL-NAME`` and ``-ID`` name the caller; external
requests cannot set them). Every header is still read as hostile: bounded and strictly shaped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from monitors.settings import is_loopback_host

MAX_PRINCIPAL_HEADER = 16 * 1024  # App Service's claims of a user in many groups stay far below
MAX_CLAIMS = 500
CSRF_LIFETIME = timedelta(hours=2)
_NAME = re.compile(r"^[^\x00-\x1f\x7f<>\"'`]{1,256}$")
_TOKEN = re.compile(r"^(\d{10,12})\.([A-Za-z0-9_-]{43})$")
GROUPS_CLAIM = "groups"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    id: str | None
    groups: frozenset[str]
    development: bool = False  # injected by ETG_CONSOLE_DEV_PRINCIPAL on a loopback host


class Refusal(StrEnum):
    NO_PRINCIPAL = "no_principal"  # 401: not signed in
    NOT_OPERATOR = "not_operator"  # 403: signed in, not in the operators group


def _claims(header: str) -> list[tuple[str, str]] | None:
    if len(header) > MAX_PRINCIPAL_HEADER:
        return None
    try:
        data = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        return None
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list) or len(claims) > MAX_CLAIMS:
        return None
    return [
        (c["typ"], c["val"])
        for c in claims
        if isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str)
    ]


def principal_from_headers(headers: dict[str, str]) -> Principal | None:
    """The principal App Service Authentication passed, or None when it passed none usable."""
    name = headers.get("x-ms-client-principal-name", "").strip()
    encoded = headers.get("x-ms-client-principal", "").strip()
    if not name or not encoded or not _NAME.fullmatch(name):
        return None
    claims = _claims(encoded)
    if claims is None:
        return None
    groups = frozenset(val.lower() for typ, val in claims if typ == GROUPS_CLAIM)
    principal_id = headers.get("x-ms-client-principal-id", "").strip()[:64] or None
    return Principal(name, principal_id, groups)


def request_is_loopback(url: str, host_header: str | None) -> bool:
    """Both the URL the host saw and the Host header name a loopback host."""
    try:
        url_host = urlsplit(url).hostname
        header_host = urlsplit(f"//{host_header}").hostname if host_header else url_host
    except ValueError:
        return False
    return is_loopback_host(url_host) and is_loopback_host(header_host)


def authorize(
    headers: dict[str, str],
    url: str,
    operators_group: str | None,
    dev_principal: str | None,
    *,
    platform_auth: bool = False,
) -> Principal | Refusal:
    """``platform_auth``: App Service Authentication is on for this app (it then strips any
    ``X-MS-CLIENT-PRINCIPAL*`` header a client sent). Without it nothing strips them, so they
    would be anyone's to forge, and they are ignored."""
    principal = principal_from_headers(headers) if platform_auth else None
    if principal is None:
        if dev_principal and request_is_loopback(url, headers.get("host")):
            return Principal(dev_principal, None, frozenset(), development=True)
        return Refusal.NO_PRINCIPAL
    if operators_group is None or operators_group.lower() not in principal.groups:
        return Refusal.NOT_OPERATOR
    return principal


def _mac(secret: str, principal: str, anomaly: str, expires: int) -> str:
    message = f"console-csrf\n{principal}\n{anomaly}\n{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_token(secret: str, principal: str, anomaly: str, now: datetime) -> str:
    """A token for this principal's forms on this anomaly, valid for CSRF_LIFETIME."""
    expires = int((now + CSRF_LIFETIME).timestamp())
    return f"{expires}.{_mac(secret, principal, anomaly, expires)}"


def csrf_valid(secret: str, token: str | None, principal: str, anomaly: str, now: datetime) -> bool:
    match = _TOKEN.fullmatch(token or "")
    if match is None:
        return False
    expires = int(match.group(1))
    expected = _mac(secret, principal, anomaly, expires)
    return hmac.compare_digest(expected, match.group(2)) and now.timestamp() < expires
