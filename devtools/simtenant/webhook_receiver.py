"""A receiver of the monitor's generic JSON webhook (schema ``etg-monitor.alert.v1``).

It checks what docs/alerting.md tells receivers to check: ``X-Etg-Timestamp`` within five
minutes of its clock, ``X-Etg-Signature: v1=<hex>`` the HMAC-SHA256 of ``"{timestamp}.{body}"``
under the shared secret (compared in constant time); 401 otherwise. It records every accepted
delivery, repeats included, so tests can count them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devtools.simtenant.clock import SimClock

REPLAY_WINDOW_SECONDS = 300


@dataclass(slots=True, frozen=True)
class WebhookEvent:
    body: dict[str, Any]
    received_at: datetime  # sim time

    @property
    def event(self) -> str:
        return str(self.body.get("event"))

    @property
    def id(self) -> str:
        return str(self.body.get("id"))


class WebhookReceiver:
    def __init__(self, clock: SimClock, secret: str | None = None) -> None:
        self.clock = clock
        self.secret = secret or secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._events: list[WebhookEvent] = []
        self._failures: list[int] = []

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures += [status] * times

    def _verified(self, timestamp: str | None, signature: str | None, body: bytes) -> bool:
        if not timestamp or not signature or not timestamp.isdigit():
            return False
        if abs(self.clock.now().timestamp() - int(timestamp)) > REPLAY_WINDOW_SECONDS:
            return False
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest("v1=" + mac.hexdigest(), signature)

    def receive(
        self, timestamp: str | None, signature: str | None, body: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            if self._failures:
                return self._failures.pop(0), {"error": "simulated failure"}
        if not self._verified(timestamp, signature, body):
            return 401, {"error": "bad signature or timestamp"}
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return 400, {"error": "not JSON"}
        if not isinstance(parsed, dict) or parsed.get("schema") != "etg-monitor.alert.v1":
            return 400, {"error": "unknown schema"}
        with self._lock:
            self._events.append(WebhookEvent(parsed, self.clock.now()))
        return 204, None

    def events(self) -> list[WebhookEvent]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events, self._failures = [], []
