"""A PagerDuty Events API v2 receiver (``POST /v2/enqueue``).

It follows PagerDuty's "Send an Alert Event" (Events API v2): the documented fields are checked
(``routing_key`` the 32 character integration key; ``event_action`` trigger | acknowledge |
resolve; ``dedup_key`` at most 255 characters; for a trigger ``payload.summary`` at most 1024
characters, ``payload.source``, ``payload.severity`` critical | error | warning | info), an
invalid event answers 400 ``{"status": "invalid event", "message": "Event object is invalid",
"errors": [...]}``, an accepted one 202 ``{"status": "success", "message": "Event processed",
"dedup_key": ...}``. "Alert De-Duplication": a trigger for an open dedup key is folded into
its alert; a resolve closes it; a trigger after the resolve opens a new one; a resolve for no
open alert is dropped.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devtools.simtenant.clock import SimClock
from devtools.simtenant.scenario import format_time

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass(slots=True)
class PagerDutyIncident:
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    severity: str
    opened_at: datetime  # sim time
    triggers: int = 1
    resolved_at: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dedup_key": self.dedup_key,
            "status": self.status,
            "summary": self.summary,
            "severity": self.severity,
            "triggers": self.triggers,
            "opened_at": format_time(self.opened_at),
            "resolved_at": format_time(self.resolved_at) if self.resolved_at else None,
        }


def _problems(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve events")
    if action == "trigger":
        errors += _payload_problems(event.get("payload"))
    links = event.get("links", [])
    if not isinstance(links, list) or not all(isinstance(x, dict) and "href" in x for x in links):
        errors.append("'links' must be an array of objects with 'href'")
    return errors


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors: list[str] = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' is longer than 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be critical, error, warning or info)")
    stamp = payload.get("timestamp")
    if stamp is not None:
        try:
            datetime.fromisoformat(str(stamp))
        except ValueError:
            errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


class PagerDutyReceiver:
    """Accepts Events API v2 events and keeps alerts by dedup key; HTTP glue in ``server``."""

    def __init__(self, clock: SimClock, routing_key: str | None = None) -> None:
        self.clock = clock
        alphabet = string.ascii_letters + string.digits
        self.routing_key = routing_key or "".join(secrets.choice(alphabet) for _ in range(32))
        self._lock = threading.Lock()
        self._incidents: list[PagerDutyIncident] = []
        self._failures: list[tuple[int, float | None]] = []
        self.received = 0

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` events with ``status`` (429, 500, ...) without processing."""
        with self._lock:
            self._failures += [(status, retry_after)] * times

    def receive(self, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Validate and apply one event: (status, JSON answer, headers)."""
        with self._lock:
            self.received += 1
            if self._failures:
                status, retry_after = self._failures.pop(0)
                headers = {} if retry_after is None else {"Retry-After": str(int(retry_after))}
                return status, {"status": "error", "message": "Simulated failure"}, headers
        try:
            event = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            event = None
            errors = ["Event body is not valid JSON"]
        else:
            errors = _problems(event)
        if not errors and event["routing_key"] != self.routing_key:
            errors = ["Invalid routing key"]
        if errors:
            answer = {"status": "invalid event", "message": "Event object is invalid"}
            return 400, {**answer, "errors": errors}, {}
        key = self._apply(event)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}, {}

    def _apply(self, event: dict[str, Any]) -> str:
        key = event.get("dedup_key") or secrets.token_hex(16)
        now = self.clock.now()
        with self._lock:
            open_ = next(
                (i for i in self._incidents if i.dedup_key == key and i.status != "resolved"),
                None,
            )
            action = event["event_action"]
            if action == "trigger" and open_ is None:
                payload = event["payload"]
                open_ = PagerDutyIncident(
                    key, "triggered", payload["summary"], payload["severity"], now
                )
                self._incidents.append(open_)
            elif action == "trigger" and open_ is not None:
                open_.triggers += 1
            elif open_ is not None and action == "acknowledge":
                open_.status = "acknowledged"
            elif open_ is not None and action == "resolve":
                open_.status, open_.resolved_at = "resolved", now
            if open_ is not None:
                open_.events.append(event)
        return key

    def incidents(self) -> list[PagerDutyIncident]:
        with self._lock:
            return list(self._incidents)

    def clear(self) -> None:
        with self._lock:
            self._incidents, self._failures, self.received = [], [], 0
