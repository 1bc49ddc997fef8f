"""An anomaly's id in console URLs: its kind and its subject's key, safe in a path segment.

The id is ``<kind>.<subject key, base64url without padding>``: reversible, so a request finds
its anomaly by kind (one partition) without a lookup table, and strict, so anything else is
refused before it reaches the store.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from monitors.models import Scope, Subject

MAX_ID_LENGTH = 400
_ID = re.compile(r"^([a-z][a-z0-9_]{0,63})\.([A-Za-z0-9_-]{1,330})$")
_SUBJECT_KEY = re.compile(r"^(tenant|(policy|device|monitor):[\x21-\x7e]{1,240})$")


def anomaly_id(kind: str, subject_key: str) -> str:
    encoded = base64.urlsafe_b64encode(subject_key.encode()).decode().rstrip("=")
    return f"{kind}.{encoded}"


def parse_id(text: str | None) -> tuple[str, str] | None:
    """(kind, subject key), or None for anything that is not an id this module made."""
    if not text or len(text) > MAX_ID_LENGTH:
        return None
    match = _ID.fullmatch(text)
    if match is None:
        return None
    kind, encoded = match.groups()
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        subject_key = raw.decode("ascii")
    except (binascii.Error, ValueError):
        return None
    if not _SUBJECT_KEY.fullmatch(subject_key) or anomaly_id(kind, subject_key) != text:
        return None
    return kind, subject_key


def payload_id(payload: Mapping[str, Any]) -> str | None:
    """The id of an anomaly given as ``Anomaly.to_json`` (an outbox payload), if it names one."""
    try:
        subject = Subject(
            scope=Scope(str(payload.get("scope"))),
            policy_id=payload.get("policy_id"),
            managed_device_id=payload.get("managed_device_id"),
            deployment_key=payload.get("deployment_key"),
            job=payload.get("job"),
        )
    except ValueError:
        return None
    kind = str(payload.get("kind") or "")
    made = anomaly_id(kind, subject.key)
    return made if parse_id(made) else None


def console_url(public_base_url: str | None, payload: Mapping[str, Any]) -> str | None:
    """The anomaly's console page under the public base URL; None without one. No function
    key: the console routes are anonymous to the host, behind App Service Authentication."""
    aid = payload_id(payload)
    if not public_base_url or aid is None:
        return None
    return f"{public_base_url.rstrip('/')}/api/console/anomalies/{aid}"
