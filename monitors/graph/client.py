"""The monitor's Graph client: msgraph-sdk's request adapter with a bounded retry budget.

The v1.0 surface is used through the typed SDK; the few beta endpoints (device preparation
policies, report exports) are sent as RequestInformation through the same adapter, so auth,
retries, redirects and error parsing are shared without pulling in the large beta SDK. Only
``$batch`` requests, most of a scan's round trips, go over aiohttp directly (``post_json``),
with the same token, count, retry delays and budget.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import IO, Any
from urllib.parse import quote, urlsplit

import aiohttp
import httpx
import orjson
from kiota_abstractions.authentication import (
    AnonymousAuthenticationProvider,
    AuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import RetryHandler
from kiota_http.middleware.middleware import REQUEST_OPTIONS_KEY, BaseMiddleware
from kiota_http.middleware.options import HeadersInspectionHandlerOption, RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from monitors.aio import OwnedResources
from monitors.graph.errors import GraphCallError, MalformedResponse, object_items
from monitors.graph.slots import RankedSlots
from monitors.http import Proxies
from monitors.settings import Settings

ERROR_MAP: dict[str, Any] = {"XXX": ODataError}
DOWNLOAD_CHUNK = 64 * 1024
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_QUOTED = re.compile(r"\('[^']*'\)")


def endpoint_name(method: str, url: str) -> str:
    """A stable label for counting requests: ids and query strings removed."""
    path = urlsplit(url).path
    path = _QUOTED.sub("({id})", _GUID.sub("{id}", path))
    return f"{method} {path}"


class RetryBudget:
    """Total seconds a client may spend waiting on retries, across all its requests.

    The SDK's retry handler honours Retry-After without a cap; a throttled tenant could keep one
    run waiting for many minutes. Once the budget is spent, errors surface and become
    unverified facts, re-checked next run.
    """

    def __init__(self, seconds: float, max_single_wait: float) -> None:
        self.remaining = seconds
        self.max_single_wait = max_single_wait


class BoundedRetryHandler(RetryHandler):
    def __init__(self, options: RetryHandlerOption, budget: RetryBudget) -> None:
        super().__init__(options)
        self._budget = budget

    def get_delay_time(
        self, retry_count: int, response: httpx.Response | None = None, delay: float = 0
    ) -> float:
        wanted = float(super().get_delay_time(retry_count, response, delay))
        wait = min(wanted, self._budget.max_single_wait)
        if wait > self._budget.remaining:
            return float(RetryHandlerOption.MAX_DELAY)  # the handler reads this as "stop"
        self._budget.remaining -= wait
        return wait


class RequestCounter(BaseMiddleware):
    """Counts every request that reaches the wire, retries included."""

    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> Any:
        self.counts[endpoint_name(request.method, str(request.url))] += 1
        return await super().send(request, transport)


def _failed(status: int, raw: bytes, label: str) -> GraphCallError:
    """Graph's error as the adapter reports it: the status, and the code and message of the
    answer's ``error`` object when it has one."""
    code = message = None
    try:
        error = orjson.loads(raw).get("error") if raw else None
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
    return GraphCallError(status, code, (message or f"{label} answered {status}")[:300])


def _auth_provider(settings: Settings, credential: Any) -> AuthenticationProvider:
    if settings.graph_credential == "none":
        return AnonymousAuthenticationProvider()
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )

    host = urlsplit(settings.graph_endpoint).hostname or ""
    return AzureIdentityAuthenticationProvider(
        credential, scopes=[settings.graph_scope], allowed_hosts=[host]
    )


class GraphClient(OwnedResources):
    """One per job run. Owns its HTTP connections and credential; use as an async context."""

    def __init__(
        self,
        settings: Settings,
        *,
        credential: Any = None,
        retry_budget_seconds: float = 120.0,
        max_single_wait: float = 30.0,
        managed_identity_client_id: str | None = None,
    ) -> None:
        """``managed_identity_client_id``: authenticate as that user-assigned managed identity
        instead (the remediation writer, whose identity holds the write permissions)."""
        self.settings = settings
        self.counts: Counter[str] = Counter()
        self._owned_credential = None
        if settings.graph_credential == "default" and credential is None:
            if managed_identity_client_id:
                from azure.identity.aio import ManagedIdentityCredential

                credential = ManagedIdentityCredential(client_id=managed_identity_client_id)
            else:
                from azure.identity.aio import DefaultAzureCredential

                credential = DefaultAzureCredential()
            self._owned_credential = credential
        elif settings.graph_credential == "federated" and credential is None:
            # A registry tenant: the multi-tenant app, signed in with the managed identity.
            from monitors.tenants.credential import federated_credential

            credential = self._owned_credential = federated_credential(settings)
        self.budget = RetryBudget(retry_budget_seconds, max_single_wait)
        middleware = KiotaClientFactory.get_default_middleware(None)
        self._retry_option = RetryHandlerOption(delay=0.5, max_retries=settings.graph_max_retries)
        self._retry = BoundedRetryHandler(self._retry_option, self.budget)
        middleware = [self._retry if isinstance(m, RetryHandler) else m for m in middleware]
        middleware.append(RequestCounter(self.counts))
        # aiohttp carries the requests (its parser is C, h11 is Python): the scan's thousand
        # $batch round trips cost a third less CPU. httpx and the SDK's middleware stay above
        # it, so retries, redirects, timeouts and errors are the SDK's.
        from httpx_aiohttp import AiohttpTransport

        self._transport = AiohttpTransport(
            limits=httpx.Limits(max_connections=settings.graph_concurrency * 2)
        )
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.graph_timeout_seconds, connect=10.0),
            transport=self._transport,
        )
        self._http = GraphClientFactory.create_with_custom_middleware(middleware, client=http)
        self._auth = _auth_provider(settings, credential)
        self.adapter = GraphRequestAdapter(self._auth, client=self._http)
        self.adapter.base_url = settings.graph_v1
        self.sdk = GraphServiceClient(request_adapter=self.adapter)
        self._slots = RankedSlots(settings.graph_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._proxies = Proxies()

    async def _close_resource(self) -> None:
        await self._http.aclose()
        # The SDK's transport wraps this one and does not close it: its connections would
        # outlive the run.
        await self._transport.aclose()
        if self._session is not None:
            await self._session.close()

    @property
    def request_count(self) -> int:
        return sum(self.counts.values())

    def v1(self, path: str, **params: str) -> str:
        return self._url(self.settings.graph_v1, path, params)

    def beta(self, path: str, **params: str) -> str:
        return self._url(self.settings.graph_beta, path, params)

    @staticmethod
    def _url(root: str, path: str, params: dict[str, str]) -> str:
        url = f"{root}/{path.lstrip('/')}"
        if params:
            query = "&".join(f"{k}={quote(v, safe=',()/:')}" for k, v in params.items())
            url = f"{url}?{query}"
        return url

    async def typed(self, call: Any) -> Any:
        """Run a typed SDK call within the concurrency limit."""
        async with self._slots:
            return await call

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        inspect: HeadersInspectionHandlerOption | None = None,
    ) -> Any:
        """Send a raw request through the SDK adapter; returns parsed JSON (None when empty).
        ``inspect`` receives the response headers (request-id), also when Graph refuses."""
        info = RequestInformation()
        info.http_method = Method(method)
        info.url = url
        info.headers.try_add("Accept", "application/json")
        for name, value in (headers or {}).items():
            info.headers.try_add(name, value)
        if inspect is not None:
            info.add_request_options([inspect])
        if body is not None:
            info.set_stream_content(orjson.dumps(body), "application/json")
        async with self._slots:
            raw = await self.adapter.send_primitive_async(info, "bytes", ERROR_MAP)
        if not raw:
            return None
        # orjson: the scan parses a thousand 20-answer batches; its error is a JSONDecodeError.
        return orjson.loads(raw)

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        """``post_json``'s connections, opened on first use (a session needs a running loop),
        with the limits and timeouts of the SDK's."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.graph_concurrency * 2),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=10.0, sock_read=self.settings.graph_timeout_seconds
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post_json(self, url: str, body: Any) -> Any:
        """POST a JSON body straight over aiohttp, below the SDK's request adapter and
        middleware: for ``$batch``, a first scan's thousands of round trips, whose SDK path
        costs two to three times the CPU of the request itself (``bench/graph_request.py``).
        What the middleware does for them is done here the same way: the token from the same
        auth provider, the request count, and retries of a throttled answer (429, 503, 504)
        after its Retry-After, from the same budget. A failed answer raises ``GraphCallError``
        with Graph's status and error code, as the adapter's error does."""
        content = orjson.dumps(body)
        info = RequestInformation()
        info.url = url
        await self._auth.authenticate_request(info)
        headers = {
            **(info.request_headers or {}),
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        session = self._aiohttp_session()
        proxy = await self._proxies.options(url)
        label = endpoint_name("POST", url)
        for attempt in range(self._retry_option.max_retry + 1):
            headers["client-request-id"] = str(uuid.uuid4())
            async with self._slots:
                self.counts[label] += 1
                async with session.post(
                    url, data=content, headers=headers, allow_redirects=False, **proxy
                ) as response:
                    status, raw = response.status, await response.read()
                    answered = response.headers
            if 200 <= status < 300:
                return orjson.loads(raw) if raw else None
            if (
                status in self._retry.retry_on_status_codes
                and attempt < self._retry_option.max_retry
            ):
                # The middleware's own delay: Retry-After, else its backoff, within the budget.
                delay = self._retry.get_delay_time(
                    attempt,
                    httpx.Response(status, headers=dict(answered)),
                    self._retry_option.max_delay,
                )
                if delay < RetryHandlerOption.MAX_DELAY:
                    await asyncio.sleep(delay)
                    continue
            break
        raise _failed(status, raw, label)

    async def download(self, url: str, into: IO[bytes], *, max_bytes: int) -> int:
        """Stream a pre-signed URL (report zips) into ``into``, a chunk at a time, and return
        the bytes written. It goes through the same middleware as every call (retries,
        redirects, the request count) but not the adapter's auth provider: no token reaches
        storage. A body over ``max_bytes`` is refused before it is all read."""
        written = 0
        # The middleware pipeline runs only for requests carrying kiota's options (empty: each
        # handler's defaults); without them the request would bypass retries and the count.
        options: dict[str, Any] = {REQUEST_OPTIONS_KEY: {}}
        async with self._slots, self._http.stream("GET", url, extensions=options) as response:
            if not response.is_success:
                raise GraphCallError(
                    response.status_code, None, f"report download answered {response.status_code}"
                )
            async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise MalformedResponse("report download is implausibly large")
                into.write(chunk)
        return written

    async def get(self, url: str) -> dict[str, Any]:
        data = await self.request("GET", url)
        if not isinstance(data, dict):
            raise MalformedResponse(f"expected a JSON object from {endpoint_name('GET', url)}")
        return data

    async def pages(self, url: str) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's ``value`` list, following absolute nextLinks to the end."""
        next_url: str | None = url
        seen: set[str] = set()
        while next_url:
            if next_url in seen:
                raise MalformedResponse("Graph returned a nextLink loop")
            seen.add(next_url)
            page = await self.get(next_url)
            yield object_items(page.get("value"), endpoint_name("GET", url))
            link = page.get("@odata.nextLink")
            next_url = link if isinstance(link, str) and link else None
