"""A Teams Workflows webhook ("When a Teams webhook request is received") receiver.

It records what the monitor would have posted to a channel, and behaves like the
real trigger where it matters: the ``sig`` query parameter is the credential,
oversized cards are refused, throttling answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devtools.simtenant.clock import SimClock
from devtools.simtenant.scenario import format_time

MAX_BODY_BYTES = 28 * 1024
DEFAULT_CHANNEL = "alerts"


@dataclass(slots=True, frozen=True)
class TeamsMessage:
    channel: str
    body: Any
    size: int
    received_at: datetime  # sim time

    @property
    def card(self) -> dict[str, Any] | None:
        """The Adaptive Card of the first attachment, when the body has that shape."""
        try:
            content = self.body["attachments"][0]["content"]
        except (KeyError, IndexError, TypeError):
            return None
        return content if isinstance(content, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "body": self.body,
            "size": self.size,
            "received_at": format_time(self.received_at),
        }


class TeamsReceiver:
    """Accepts and records webhook posts; the HTTP glue lives in ``simtenant.server``."""

    def __init__(self, clock: SimClock, sig: str | None = None) -> None:
        self.clock = clock
        self.sig = sig or secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._messages: list[TeamsMessage] = []

    def url(self, base_url: str, channel: str = DEFAULT_CHANNEL) -> str:
        # Same query layout as a Power Automate trigger URL; only sig is checked.
        query = f"api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.sig}"
        return f"{base_url}/teams/{channel}?{query}"

    def receive(
        self, channel: str, sig: str | None, payload: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        """Validate and record one post; returns the HTTP status and an optional error body."""
        if not sig or not secrets.compare_digest(sig, self.sig):
            return 401, _error(
                "DirectApiAuthorizationRequired",
                "The request must be authenticated with a valid signature.",
            )
        if len(payload) > MAX_BODY_BYTES:
            return 413, _error(
                "RequestEntityTooLarge",
                f"The request content length '{len(payload)}' exceeds "
                f"the maximum allowed '{MAX_BODY_BYTES}' bytes.",
            )
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, _error(
                "InvalidRequestContent", f"The request content is not valid JSON: {exc}"
            )
        with self._lock:
            self._messages.append(TeamsMessage(channel, body, len(payload), self.clock.now()))
        return 202, None

    def messages(self) -> list[TeamsMessage]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages = []


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
