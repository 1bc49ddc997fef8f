"""Small OData helpers: errors, time formats, $filter splitting, $select, paging tokens."""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid request."),
    401: ("InvalidAuthenticationToken", "Access token is empty."),
    403: ("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
    404: ("Request_ResourceNotFound", "Resource not found."),
    409: ("Conflict", "Conflict."),
    410: ("syncStateNotFound", "The sync state generation is not found."),
    412: ("PreconditionFailed", "Precondition failed."),
    429: (
        "TooManyRequests",
        "Too many requests. Please retry after the time specified in the Retry-After header.",
    ),
    500: ("generalException", "An unexpected error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The gateway timed out."),
}


class GraphError(Exception):
    """An error answer in Graph's shape; raised by handlers, rendered by the server."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_code, default_message = ERROR_CODES.get(status, ("UnknownError", "Error."))
        self.status = status
        self.code = code or default_code
        self.message = message or default_message
        self.headers = headers or {}
        super().__init__(f"{status} {self.code}: {self.message}")


def not_found(resource_id: str) -> GraphError:
    return GraphError(
        404,
        f"Resource '{resource_id}' does not exist or one of its queried "
        "reference-property objects are not present.",
    )


def bad_request(message: str) -> GraphError:
    return GraphError(400, message, "BadRequest")


def error_body(
    code: str, message: str, now: datetime, request_id: str, client_request_id: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }


# Request ids need only be unique and GUID-shaped, never unguessable: drawn from a generator
# seeded once, not from the system's entropy (a read per request, and several per $batch).
_REQUEST_IDS = random.Random(uuid.uuid4().int)


def new_request_id() -> str:
    """A version 4 GUID in text, as Graph's request-id header holds."""
    h = f"{_REQUEST_IDS.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def graph_time(value: datetime) -> str:
    """Entity timestamps as Graph writes them: whole seconds, ``Z``."""
    # isoformat, not strftime: the same text at a third of the cost.
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def graph_time_7(value: datetime) -> str:
    """Audit timestamps as Graph writes them: seven fractional digits, ``Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0Z"


def ts_to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


_FRACTION = re.compile(r"\.(\d+)")


def parse_odata_time(text: str) -> datetime:
    """Parse a filter literal time: quoted or not, up to 7 fractional digits, ``Z`` or offset.

    Naive values are taken as UTC (Graph's behaviour for DateTimeOffset literals
    without a zone is to reject them; tolerance here keeps the stand-in lenient).
    """
    raw = text.strip().strip("'\"")
    if raw.endswith(("z", "Z")):
        raw = raw[:-1] + "+00:00"
    match = _FRACTION.search(raw)
    if match and len(match.group(1)) > 6:
        raw = raw[: match.start(1)] + match.group(1)[:6] + raw[match.end(1) :]
    parsed = datetime.fromisoformat(raw)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def split_and(expression: str) -> list[str]:
    """Split a $filter on top-level ``and`` (outside quotes and parentheses).

    Each clause comes back with redundant outer parentheses removed.
    """
    clauses: list[str] = []
    depth = 0
    in_quote = False
    start = 0
    i = 0
    text = expression
    lower = text.lower()
    while i < len(text):
        ch = text[i]
        if ch == "'":
            # '' inside a quoted literal is an escaped quote
            if in_quote and i + 1 < len(text) and text[i + 1] == "'":
                i += 2
                continue
            in_quote = not in_quote
        elif not in_quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif depth == 0 and lower.startswith(" and ", i):
                clauses.append(text[start:i])
                i += 5
                start = i
                continue
        i += 1
    clauses.append(text[start:])
    return [strip_parens(c) for c in clauses if c.strip()]


def strip_parens(clause: str) -> str:
    clause = clause.strip()
    while clause.startswith("(") and clause.endswith(")") and _balanced(clause[1:-1]):
        clause = clause[1:-1].strip()
    return clause


def _balanced(text: str) -> bool:
    depth = 0
    in_quote = False
    for ch in text:
        if ch == "'":
            in_quote = not in_quote
        elif not in_quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    return False
    return depth == 0


def parse_select(value: str | None) -> list[str] | None:
    if not value:
        return None
    fields = [f.strip() for f in value.split(",") if f.strip()]
    return fields or None


def project(item: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """Apply $select: keep the named properties (case-insensitive) and OData annotations."""
    if not select:
        return item
    wanted = {s.lower() for s in select}
    return {k: v for k, v in item.items() if k.startswith("@odata.") or k.lower() in wanted}


def parse_top(value: str | None, default: int, maximum: int, *, strict: bool = False) -> int:
    """Page size from $top; ``strict`` rejects values above ``maximum`` like the members API."""
    if value is None or value.strip() == "":
        return default
    try:
        top = int(value.strip())
    except ValueError as exc:
        raise bad_request(f"Invalid value '{value}' for $top.") from exc
    if top < 1 or (strict and top > maximum):
        raise bad_request(
            f"Invalid page size specified: '{top}'. Must be between 1 and {maximum} inclusive."
        )
    return min(top, maximum)


def encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, json.JSONDecodeError) as exc:
        raise bad_request("The provided skip token is invalid.") from exc
    if not isinstance(value, dict):
        raise bad_request("The provided skip token is invalid.")
    return value


def quote_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)
