"""Structured logging: JSON in Azure, readable console locally, and secrets never leave.

Redaction works two ways because neither alone is enough: by key name (a field called
``client_state`` is masked whatever it holds) and by value (a registered secret, or anything that
looks like a SAS signature, account key or bearer token, is masked wherever it appears, e.g.
inside an exception message that quotes a URL).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
import structlog
from structlog.typing import FilteringBoundLogger

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

# One pass that finds whether any pattern could apply: nearly every value logged holds no
# secret, and a scan logs a line per deployment, so the substitutions run only after a hit.
_ANY_SECRET = re.compile(
    "|".join(p.pattern.removeprefix("(?i)") for p in _SECRET_PATTERNS), re.IGNORECASE
)

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value in every log line from now on (too-short values would mask noise)."""
    if value and len(value) >= 6:
        with _registered_lock:
            _registered.add(value)


# A substring each pattern's every match holds, casefolded as IGNORECASE folds (so "ſig=" and
# a Kelvin-sign "Key" are found too): a value holding none of them, nearly every value, is
# passed after a few C substring searches instead of the regex, a fifth of the cost.
_MARKS = ("sig=", "accountkey=", "sharedaccesssignature=", "bearer", "validationtoken=", "client")


def scrub(text: str) -> str:
    for secret in tuple(_registered):
        if secret in text:
            text = text.replace(secret, REDACTED)
    folded = text.casefold()
    if not any(mark in folded for mark in _MARKS) or not _ANY_SECRET.search(text):
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


@functools.lru_cache(maxsize=4096)
def _secret_key(name: str) -> bool:
    # Key names repeat line after line (a scan's batch lines hold a hundred dicts alike).
    return _SECRET_KEY.search(name) is not None


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _secret_key(k) else _clean(v, depth + 1)
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
        if key != "event" and _secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _clean(event_dict[key])
    return event_dict


# What JSONRenderer(sort_keys=True) wrote with json.dumps, from orjson: datetimes and
# dataclasses still reach structlog's fallback (their repr), as before.
_LINE_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _json_line(event_dict: Any, **dumps_kw: Any) -> str:
    return orjson.dumps(event_dict, default=dumps_kw.get("default"), option=_LINE_OPTIONS).decode()


def running_in_azure() -> bool:
    return bool(os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("FUNCTIONS_WORKER_RUNTIME"))


ROOT_LOGGER = "etg_monitor"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever stderr is at each record: it may be replaced after configuration
    (test capture, host redirection), and a log line must never fail a job."""

    def emit(self, record: logging.LogRecord) -> None:
        # Assigned, not setStream(): that flushes the previous stream, which may be closed.
        self.stream = sys.stderr
        super().emit(record)


def _stdlib_logger(*args: Any) -> logging.Logger:
    """Every structlog logger is a standard logger under ``etg_monitor``, so one place decides
    where records go: the Functions worker's handler in Azure, stderr locally."""
    name = str(args[0]) if args and args[0] else ROOT_LOGGER
    if name != ROOT_LOGGER and not name.startswith(ROOT_LOGGER + "."):
        name = f"{ROOT_LOGGER}.{name}"
    return logging.getLogger(name)


def configure_logging(log_format: str = "auto", level: int = logging.INFO) -> None:
    """Idempotent; called from entry points, never at import time.

    Records leave through the standard ``logging`` module. In Azure the Python worker installs
    a handler on the root logger that forwards each record to the Functions host with its level
    and the invocation it belongs to, so Application Insights shows the severity and the
    operation id (Azure Functions Python developer guide, "Logging"); our records propagate to
    it. Locally (the CLI, tests) they go to stderr instead.
    """
    in_azure = running_in_azure()
    use_json = log_format == "json" or (log_format == "auto" and in_azure)
    renderer: Any = (
        structlog.processors.JSONRenderer(_json_line)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    base = logging.getLogger(ROOT_LOGGER)
    base.setLevel(level)
    for handler in [h for h in base.handlers if isinstance(h, _CurrentStderr)]:
        base.removeHandler(handler)
    if in_azure:
        base.propagate = True
    else:
        local = _CurrentStderr()
        local.setFormatter(logging.Formatter("%(message)s"))
        base.addHandler(local)
        base.propagate = False
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
        logger_factory=_stdlib_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
