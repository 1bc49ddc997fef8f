"""Structured logging: JSON in Azure, readable console locally, and secrets never leave.

Redaction works two ways because neither alone is enough: by key name (a field called
``client_state`` is masked whatever it holds) and by value (a registered secret, or anything that
looks like a SAS signature, account key or bearer token, is masked wherever it appears, e.g.
inside an exception message that quotes a URL).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

_SECRET_KEY = re.compile(
    r"(secret|token|password|passwd|client_?state|webhook|connection_?string|"
    r"account_?key|authorization|signature|^sig$|credential_value|api_?key)",
    re.IGNORECASE,
)
_SECRET_PATTERNS = (
    re.compile(r"(?i)(sig=)[^&\s\"']+"),
    re.compile(r"(?i)(AccountKey=)[^;\s\"']+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"']+"),
    re.compile(r"(?i)(Bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(r"(?i)(validationToken=)[^&\s\"']+"),
    re.compile(r"(?i)(client_?state[\"']?\s*[:=]\s*[\"']?)[^\"'&,\s}]+"),
)

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value in every log line from now on (too-short values would mask noise)."""
    if value and len(value) >= 6:
        with _registered_lock:
            _registered.add(value)


def scrub(text: str) -> str:
    for secret in tuple(_registered):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _clean(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key != "event" and _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _clean(event_dict[key])
    return event_dict


def running_in_azure() -> bool:
    return bool(os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("FUNCTIONS_WORKER_RUNTIME"))


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(log_format: str = "auto", level: int = logging.INFO) -> None:
    """Idempotent; called from entry points, never at import time."""
    use_json = log_format == "json" or (log_format == "auto" and running_in_azure())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Render tracebacks to text before redaction so they are scrubbed like any field.
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Look stderr up at each write: it may be replaced after configuration (test capture,
        # host redirection), and a log line must never fail a job.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
