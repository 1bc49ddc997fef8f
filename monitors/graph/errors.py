"""Turning Graph failures into ``Unverified`` facts that name the permission involved."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

import aiohttp
import httpx
from kiota_abstractions.api_error import APIError

from monitors.models import Unverified, UnverifiedReason

P = ParamSpec("P")
T = TypeVar("T")


class MalformedResponse(ValueError):
    """Graph answered, but not in a shape the monitor understands."""


class GraphCallError(Exception):
    def __init__(self, status: int | None, code: str | None, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, GraphCallError):
        return exc.status
    if isinstance(exc, APIError):
        return exc.response_status_code
    return None


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, GraphCallError):
        return exc.code
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    return code if isinstance(code, str) else None


def _message(exc: BaseException) -> str:
    err = getattr(exc, "error", None)
    message = getattr(err, "message", None)
    text = message if isinstance(message, str) and message else str(exc) or type(exc).__name__
    return text[:300]


def classify(exc: BaseException) -> UnverifiedReason:
    status = status_of(exc)
    if isinstance(exc, MalformedResponse | json.JSONDecodeError | UnicodeDecodeError):
        return UnverifiedReason.MALFORMED
    if status in (401, 403):
        return UnverifiedReason.FORBIDDEN
    if status in (429, 503, 504):
        return UnverifiedReason.THROTTLED
    if status is not None and 400 <= status < 500:
        return UnverifiedReason.REJECTED
    return UnverifiedReason.UNAVAILABLE


GRAPH_ERRORS: tuple[type[BaseException], ...] = (
    APIError,
    GraphCallError,
    httpx.HTTPError,
    aiohttp.ClientError,
    MalformedResponse,
    json.JSONDecodeError,
    UnicodeDecodeError,
    TimeoutError,
)


def unverified(exc: BaseException, source: str, permission: str | None) -> Unverified:
    reason = classify(exc)
    return Unverified(
        source=source,
        reason=reason,
        detail=_message(exc),
        permission=permission if reason is UnverifiedReason.FORBIDDEN else None,
        status=status_of(exc),
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A Graph endpoint as ``Unverified`` facts name it, with the permission it needs."""

    label: str
    permission: str | None

    def failed(self, exc: BaseException) -> Unverified:
        return unverified(exc, self.label, self.permission)

    def unverified(self, reason: UnverifiedReason, detail: str) -> Unverified:
        return Unverified(self.label, reason, detail)


class GraphCall(Generic[P, T]):
    """A Graph call that answers its value, or an ``Unverified`` fact naming its endpoint and
    permission when Graph fails it. ``fetch`` is the call itself, which raises instead."""

    def __init__(self, endpoint: Endpoint, fetch: Callable[P, Awaitable[T]]) -> None:
        self.endpoint = endpoint
        self.fetch = fetch
        self.__doc__ = fetch.__doc__
        self.__name__ = getattr(fetch, "__name__", "graph_call")

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T | Unverified:
        try:
            return await self.fetch(*args, **kwargs)
        except GRAPH_ERRORS as exc:
            return self.endpoint.failed(exc)

    @property
    def source(self) -> str:
        return self.endpoint.label

    def failed(self, exc: BaseException) -> Unverified:
        return self.endpoint.failed(exc)

    def unverified(self, reason: UnverifiedReason, detail: str) -> Unverified:
        return self.endpoint.unverified(reason, detail)


def graph_call(
    label: str, permission: str | None
) -> Callable[[Callable[P, Awaitable[T]]], GraphCall[P, T]]:
    """Declare, where a Graph call is defined, the endpoint it is reported as and the
    permission it needs: callers get the value or an ``Unverified`` and spell neither."""

    def declare(fetch: Callable[P, Awaitable[T]]) -> GraphCall[P, T]:
        return GraphCall(Endpoint(label, permission), fetch)

    return declare


def object_items(items: Any, what: str) -> list[dict[str, Any]]:
    """A Graph list's items, which are always objects. Anything else means the answer cannot
    be trusted as a whole: skipping the odd item could turn "unreadable" into "absent"."""
    if not isinstance(items, list):
        raise MalformedResponse(f"{what}: value is not a list")
    if not all(isinstance(item, dict) for item in items):
        raise MalformedResponse(f"{what}: list item that is not an object")
    return items


def single_object(payload: Any, what: str) -> dict[str, Any]:
    """A single-object answer, bare or wrapped: several Intune pages of the Graph reference
    show ``{"@odata.context": ..., "value": {...}}`` where memdocs shows the bare object. Only
    a ``value`` holding an object is unwrapped; a ``value`` list is a collection, and any other
    ``value`` leaves it unclear which object was meant."""
    if not isinstance(payload, dict):
        raise MalformedResponse(f"{what}: answer is not an object")
    if "value" not in payload:
        return payload
    value = payload["value"]
    if isinstance(value, list):
        raise MalformedResponse(f"{what}: a collection where one object was expected")
    if not isinstance(value, dict):
        raise MalformedResponse(f"{what}: value is not an object")
    if any(not str(k).startswith("@") for k in payload if k != "value"):
        raise MalformedResponse(f"{what}: an object value beside other properties")
    return value
