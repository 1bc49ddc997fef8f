"""HTTP glue: the aiohttp app (Graph, $batch, downloads, Teams, control API) and its runner.

Graph change-notification subscriptions live in ``simtenant.subscriptions``; their
deliveries run on the same event loop as the server.

``SimulatedTenant`` runs the app on a loopback port in a background thread with
its own event loop, so synchronous tests and the real msgraph-sdk client can
both talk to it while the test thread mutates the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import json
import math
import socket
import threading
from collections import Counter
from collections.abc import Awaitable, Coroutine
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
from aiohttp import web

from devtools.simtenant.clock import SimClock
from devtools.simtenant.faults import CORRUPT_BODY, HANG_SECONDS, FaultPlan, FaultRule
from devtools.simtenant.generate import add_deployments
from devtools.simtenant.graph_api import (
    JSON_CONTENT_TYPE,
    GraphApi,
    GraphRequest,
    GraphResponse,
    Route,
    parse_query,
    split_version,
)
from devtools.simtenant.loopserver import ServedInThread, bind, run_in_thread
from devtools.simtenant.odata import (
    ERROR_CODES,
    GraphError,
    bad_request,
    error_body,
    new_request_id,
)
from devtools.simtenant.pagerduty import PagerDutyIncident, PagerDutyReceiver
from devtools.simtenant.scenario import (
    DeviceSpec,
    Policy,
    Scenario,
    ScenarioError,
    format_time,
    load_scenario,
    parse_time,
)
from devtools.simtenant.state import TenantState
from devtools.simtenant.subscriptions import (
    DELIVERY_ATTEMPTS,
    DELIVERY_TIMEOUT_S,
    RETRY_BACKOFF_S,
    VALIDATION_TIMEOUT_S,
    SubscriptionService,
)
from devtools.simtenant.teams import TeamsMessage, TeamsReceiver
from devtools.simtenant.webhook_receiver import WebhookEvent, WebhookReceiver

MAX_BATCH_REQUESTS = 20
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT"})
MAX_DEPLOYMENTS_PER_CALL = 100_000
DEPLOYMENT_FIELDS = frozenset({"count", "at", "seed", "spread_s"})
# Seeds picked for POST /_sim/deployments calls without one: far from the small seeds
# scenarios and tests use, and different on every call.
AUTO_SEED_BASE = 0x5EED_0000_0000


class Stats:
    """Request counts by endpoint name (inner $batch requests under their own name), and for
    list answers the items served and how many listings were started (first pages), from which
    a benchmark derives the fewest pages the data could have taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._items: Counter[str] = Counter()
        self._listings: Counter[str] = Counter()

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def served(self, name: str, items: int, first_page: bool) -> None:
        with self._lock:
            self._items[name] += items
            self._listings[name] += 1 if first_page else 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def lists(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                name: {"items": self._items[name], "listings": self._listings[name]}
                for name in self._items
            }

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._items.clear()
            self._listings.clear()


class _ResetConnection(Exception):
    """An inner $batch request asked for a connection reset."""


class _Hang(Exception):
    """An inner $batch request asked for a hang."""


def _retry_after_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(slots=True, frozen=True)
class DeploymentsRequest:
    """A validated ``POST /_sim/deployments`` body."""

    count: int
    at: datetime
    seed: int | None
    spread_s: float

    @classmethod
    def from_body(cls, body: Any, now: datetime) -> DeploymentsRequest:
        """Validate the body; ``ValueError`` carries the reason for a 400."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        unknown = sorted(set(body) - DEPLOYMENT_FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        count = body.get("count")
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= MAX_DEPLOYMENTS_PER_CALL
        ):
            raise ValueError(f"count must be an integer from 1 to {MAX_DEPLOYMENTS_PER_CALL}")
        at = body.get("at")
        if at is None:
            when = now
        elif isinstance(at, str):
            try:
                when = parse_time(at)
            except ValueError:
                raise ValueError(
                    "at must be an ISO-8601 time with a zone, e.g. 2026-11-20T08:00:00Z"
                ) from None
        else:
            raise ValueError("at must be an ISO-8601 string")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError("seed must be an integer")
        spread = body.get("spread_s")
        spread_s = 0.0
        if spread is not None:
            bad_spread = ValueError("spread_s must be a finite number of seconds >= 0")
            if not isinstance(spread, int | float) or isinstance(spread, bool):
                raise bad_spread
            try:
                spread_s = float(spread)
            except OverflowError:
                raise bad_spread from None
            if not math.isfinite(spread_s) or spread_s < 0:
                raise bad_spread
        try:
            # Room for the deployment itself (durations, joins, audit delays) too.
            when + timedelta(seconds=spread_s + 86400.0)
        except OverflowError:
            raise ValueError("at + spread_s is out of range") from None
        return cls(count, when, seed, spread_s)


class SimService:
    """Request handling for one app: Graph dispatch, faults, stats, Teams, control."""

    def __init__(
        self,
        state: TenantState,
        faults: FaultPlan,
        teams: TeamsReceiver,
        subscriptions: SubscriptionService | None = None,
    ) -> None:
        self.state = state
        self.faults = faults
        self.teams = teams
        self.api = GraphApi(state)
        self.subscriptions = subscriptions or SubscriptionService(state)
        self.subscriptions.register(self.api)
        state.set_change_sink(self.subscriptions)
        self.stats = Stats()
        self._shutdown: asyncio.Event | None = None
        self._deployments_lock = threading.Lock()
        self._auto_seeds = itertools.count(AUTO_SEED_BASE + 1)

    def _shutdown_event(self) -> asyncio.Event:
        if self._shutdown is None:
            self._shutdown = asyncio.Event()
        return self._shutdown

    async def on_startup(self, app: web.Application) -> None:
        await self.subscriptions.start()

    async def on_shutdown(self, app: web.Application) -> None:
        self._shutdown_event().set()

    async def on_cleanup(self, app: web.Application) -> None:
        await self.subscriptions.close()

    # ------------------------------------------------------------------ rendering

    def _error_response(
        self, error: GraphError, request_id: str, client_request_id: str | None
    ) -> GraphResponse:
        body = error_body(
            error.code, error.message, self.state.now(), request_id, client_request_id
        )
        return GraphResponse(status=error.status, body=body, headers=dict(error.headers))

    def _fault_error(self, rule: FaultRule) -> GraphError:
        if rule.kind == "expire_delta":
            return GraphError(
                410, "The sync state is too old; start a full synchronization.", "syncStateNotFound"
            )
        code, message = ERROR_CODES.get(rule.status, ("UnknownError", "Error."))
        headers = (
            {} if rule.retry_after is None else {"Retry-After": _retry_after_text(rule.retry_after)}
        )
        return GraphError(rule.status, message, code, headers)

    @staticmethod
    def _to_web(
        response: GraphResponse, request_id: str, client_request_id: str | None
    ) -> web.Response:
        headers = {"request-id": request_id, "client-request-id": client_request_id or request_id}
        headers.update(response.headers)
        if response.raw is not None:
            headers["Content-Type"] = response.content_type or "application/octet-stream"
            return web.Response(status=response.status, body=response.raw, headers=headers)
        if response.body is None:
            return web.Response(status=response.status, headers=headers)
        headers["Content-Type"] = JSON_CONTENT_TYPE
        # orjson: the same JSON, UTF-8 as Graph sends it, at a fraction of the simulator's CPU,
        # which shares the machine with the client under test.
        return web.Response(
            status=response.status, body=orjson.dumps(response.body), headers=headers
        )

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        # The transport is gone; aiohttp drops this response quietly.
        return web.Response(status=500)

    async def _hang(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shutdown_event().wait(), HANG_SECONDS)

    @staticmethod
    def _has_delta_token(greq: GraphRequest) -> bool:
        return bool(greq.q("deltatoken") or greq.q("skiptoken"))

    # ------------------------------------------------------------------ Graph

    async def graph(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        client_request_id = request.headers.get("client-request-id")
        version, path = split_version(request.path)
        raw_query = list(request.query.items())
        greq = GraphRequest(
            method=request.method,
            version=version,
            path=path,
            query=parse_query(raw_query),
            raw_query=raw_query,
            base_url=f"{request.scheme}://{request.host}",
            headers=dict(request.headers),
        )
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000.0)
        try:
            route, params = self.api.resolve(request.method, version, path)
        except GraphError as error:
            self.stats.count("unknown")
            return self._to_web(
                self._error_response(error, request_id, client_request_id),
                request_id,
                client_request_id,
            )
        greq.params = params
        self.stats.count(route.name)
        self._cap_page(greq)
        if request.can_read_body:
            payload = await request.read()
            if payload.strip():
                try:
                    greq.body = json.loads(payload)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    unreadable = bad_request(
                        "Unable to read JSON request payload. Please ensure Content-Type "
                        "header is set and payload is of valid JSON format."
                    )
                    return self._to_web(
                        self._error_response(unreadable, request_id, client_request_id),
                        request_id,
                        client_request_id,
                    )
        decision = self.faults.decide(
            route.name,
            greq.full_path,
            has_delta_token=self._has_delta_token(greq),
            query=" ".join(greq.query.values()),
        )
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.fault is not None:
            if decision.fault.kind == "reset":
                return self._reset(request)
            if decision.fault.kind == "hang":
                await self._hang()
                response = self._error_response(GraphError(504), request_id, client_request_id)
            elif decision.fault.kind == "corrupt":
                response = GraphResponse(200, CORRUPT_BODY)
            else:
                response = self._error_response(
                    self._fault_error(decision.fault), request_id, client_request_id
                )
            return self._to_web(response, request_id, client_request_id)
        if route.name == "$batch":
            try:
                response = await self._batch(greq)
            except _ResetConnection:
                return self._reset(request)
            except _Hang:
                await self._hang()
                response = self._error_response(GraphError(504), request_id, client_request_id)
        else:
            response = await self._call(route, greq, request_id, client_request_id)
        return self._to_web(response, request_id, client_request_id)

    async def _call(
        self, route: Route, greq: GraphRequest, request_id: str, client_request_id: str | None
    ) -> GraphResponse:
        answered = self._call_now(route, greq, request_id, client_request_id)
        return answered if isinstance(answered, GraphResponse) else await answered

    def _call_now(
        self, route: Route, greq: GraphRequest, request_id: str, client_request_id: str | None
    ) -> GraphResponse | Coroutine[Any, Any, GraphResponse]:
        """The handler's answer, or for a handler that waits, what awaiting it answers."""
        try:
            result = route.handler(greq)
        except GraphError as error:
            return self._error_response(error, request_id, client_request_id)
        if inspect.isawaitable(result):
            return self._call_later(result, route, greq, request_id, client_request_id)
        return self._served(route, greq, result)

    async def _call_later(
        self,
        result: Awaitable[GraphResponse],
        route: Route,
        greq: GraphRequest,
        request_id: str,
        client_request_id: str | None,
    ) -> GraphResponse:
        try:
            return self._served(route, greq, await result)
        except GraphError as error:
            return self._error_response(error, request_id, client_request_id)

    def _served(self, route: Route, greq: GraphRequest, result: GraphResponse) -> GraphResponse:
        if isinstance(result.body, dict) and isinstance(result.body.get("value"), list):
            self.stats.served(
                route.name, len(result.body["value"]), not self._has_delta_token(greq)
            )
        return result

    async def _batch(self, outer: GraphRequest) -> GraphResponse:
        body = outer.body
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise_error = bad_request("The batch request body must contain a 'requests' array.")
            return self._error_response(raise_error, new_request_id(), None)
        requests = body["requests"]
        if len(requests) > MAX_BATCH_REQUESTS:
            error = bad_request(
                f"Number of batch request steps exceeds the maximum of {MAX_BATCH_REQUESTS}."
            )
            return self._error_response(error, new_request_id(), None)
        ids = [r.get("id") if isinstance(r, dict) else None for r in requests]
        if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
            return self._error_response(
                bad_request("Every batch request needs a unique string 'id'."),
                new_request_id(),
                None,
            )
        for item in requests:
            method = str(item.get("method") or "GET").upper()
            headers = item.get("headers") if isinstance(item.get("headers"), dict) else {}
            has_type = any(str(k).lower() == "content-type" for k in headers)
            # A write step needs a body (even {}) and a Content-Type header; Graph refuses
            # the whole batch otherwise (400, none of the steps run):
            # microsoft-graph-docs-contrib concepts/json-batching.md, msgraph-sdk-dotnet #1038
            if method in WRITE_METHODS and (item.get("body") is None or not has_type):
                error = bad_request(
                    f"Write request id : {item['id']} does not contain Content-Type header or body."
                )
                return self._error_response(error, new_request_id(), None)
        # Graph runs independent steps in any order and answers them in any order
        # (microsoft-graph-docs-contrib concepts/json-batching.md: "Responses to the batched
        # requests might appear in a different order"), each batch on its own. A step that has
        # nothing to wait for (nearly every one) is answered at once, so a batch is answered
        # when its own steps are, not once the steps of every batch in flight, interleaved on
        # this one event loop, are; a step that waits (an inner latency rule, a handler that
        # awaits) waits concurrently with the others, so inner latencies overlap as Graph's do.
        steps = [self._inner(outer, r) for r in requests]
        waiting = [step for step in steps if not isinstance(step, dict)]
        later = iter(await asyncio.gather(*waiting)) if waiting else iter(())
        responses = [step if isinstance(step, dict) else next(later) for step in steps]
        return GraphResponse(status=200, body={"responses": responses})

    def _cap_page(self, greq: GraphRequest, *, asked_only: bool = False) -> None:
        """Serve pages of at most ``faults.page_cap`` items: the page size is the server's to
        choose, whatever ``$top`` asks (paging.md). ``asked_only``: only where the request
        asked for a page size, as batched listings do; a batched look-up of a few ids is
        answered in one page, as Graph's default page sizes ensure."""
        cap = self.faults.page_cap
        if cap and greq.method == "GET":
            top = (greq.query.get("top") or "").strip()
            if asked_only and not top:
                return
            if not top or (top.isdigit() and int(top) > cap):
                greq.query["top"] = str(cap)

    def _inner(
        self, outer: GraphRequest, item: dict[str, Any]
    ) -> dict[str, Any] | Coroutine[Any, Any, dict[str, Any]]:
        """One step's answer, or for a step that waits, what awaiting it answers."""
        request_id = new_request_id()
        inner_id = item["id"]
        method = str(item.get("method") or "GET").upper()
        url = str(item.get("url") or "")
        headers = item.get("headers") if isinstance(item.get("headers"), dict) else {}
        client_request_id = headers.get("client-request-id") if headers else None

        def answer(response: GraphResponse) -> dict[str, Any]:
            result_headers = (
                {"Content-Type": JSON_CONTENT_TYPE} if response.body is not None else {}
            )
            result_headers.update(response.headers)
            result: dict[str, Any] = {
                "id": inner_id,
                "status": response.status,
                "headers": result_headers,
            }
            if response.body is not None:
                result["body"] = response.body
            return result

        def error(graph_error: GraphError) -> dict[str, Any]:
            return answer(self._error_response(graph_error, request_id, client_request_id))

        if url.lower().startswith(("http://", "https://")) or not url:
            return error(bad_request("Batch request URLs must be relative."))
        parts = urlsplit(url if url.startswith("/") else "/" + url)
        raw_query = parse_qsl(parts.query, keep_blank_values=True)
        greq = GraphRequest(
            method=method,
            version=outer.version,
            path=unquote(parts.path),
            query=parse_query(raw_query),
            raw_query=raw_query,
            base_url=outer.base_url,
            body=item.get("body"),
            headers={str(k): str(v) for k, v in (headers or {}).items()},
        )
        try:
            route, params = self.api.resolve(method, greq.version, greq.path)
        except GraphError as unknown:
            self.stats.count("unknown")
            return error(unknown)
        if route.name == "$batch":
            return error(bad_request("$batch cannot be nested."))
        greq.params = params
        self.stats.count(route.name)
        self._cap_page(greq, asked_only=True)
        decision = self.faults.decide(
            route.name,
            greq.full_path,
            has_delta_token=self._has_delta_token(greq),
            query=" ".join(greq.query.values()),
        )

        def run() -> dict[str, Any] | Coroutine[Any, Any, dict[str, Any]]:
            if decision.fault is not None:
                if decision.fault.kind == "reset":
                    raise _ResetConnection
                if decision.fault.kind == "hang":
                    raise _Hang
                if decision.fault.kind == "corrupt":
                    return answer(GraphResponse(200, CORRUPT_BODY))
                return error(self._fault_error(decision.fault))
            answered = self._call_now(route, greq, request_id, client_request_id)
            if isinstance(answered, GraphResponse):
                return answer(answered)
            return answered_later(answered)

        async def answered_later(answered: Awaitable[GraphResponse]) -> dict[str, Any]:
            return answer(await answered)

        async def after_delay() -> dict[str, Any]:
            await asyncio.sleep(decision.delay_s)
            step = run()
            return step if isinstance(step, dict) else await step

        return after_delay() if decision.delay_s else run()

    # ------------------------------------------------------------------ Teams

    async def teams_post(self, request: web.Request) -> web.StreamResponse:
        self.stats.count("teams")
        payload = await request.read()
        decision = self.faults.decide("teams", request.path)
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        rule = decision.fault
        if rule is not None:
            if rule.kind == "reset":
                return self._reset(request)
            if rule.kind == "late_answer":
                self.teams.receive(request.match_info["channel"], request.query.get("sig"), payload)
            if rule.kind in ("hang", "late_answer"):
                await self._hang()
                return web.json_response(
                    {"error": {"code": "GatewayTimeout", "message": "Timed out."}}, status=504
                )
            headers = (
                {}
                if rule.retry_after is None
                else {"Retry-After": _retry_after_text(rule.retry_after)}
            )
            code = (
                "TooManyRequests"
                if rule.status == 429
                else ERROR_CODES.get(rule.status, ("Error", ""))[0]
            )
            return web.json_response(
                {"error": {"code": code, "message": "The flow trigger request failed."}},
                status=rule.status,
                headers=headers,
            )
        status, body = self.teams.receive(
            request.match_info["channel"], request.query.get("sig"), payload
        )
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    # ------------------------------------------------------------------ control API

    async def control(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["tail"].strip("/")
        try:
            body = await request.json() if request.can_read_body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        if route == "deployments" and request.method == "POST":
            return await self._post_deployments(body)
        if route.split("/")[0] in ("notifications", "subscriptions"):
            return self._control_subscriptions(request.method, route, body)
        try:
            return self._control(request.method, route, body)
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    def _control_subscriptions(self, method: str, route: str, body: Any) -> web.Response:
        service = self.subscriptions
        if route == "notifications" and method == "GET":
            return web.json_response(
                {
                    "notifications": service.notifications_sent(),
                    "validations": service.validations(),
                    "pending": service.pending_deliveries(),
                }
            )
        if route == "notifications" and method == "DELETE":
            service.clear_notifications()
            return web.json_response({"notifications": []})
        if route == "notifications/hold" and method == "POST":
            service.hold()
            return web.json_response({"held": True})
        if route == "notifications/release" and method == "POST":
            service.release()
            return web.json_response({"held": False})
        if route == "subscriptions" and method == "GET":
            return web.json_response({"subscriptions": service.subscriptions()})
        parts = route.split("/")
        try:
            if len(parts) == 2 and method == "DELETE":
                service.drop_subscription(parts[1])
                return web.json_response({"dropped": parts[1].lower()})
            if len(parts) == 3 and parts[2] == "lifecycle" and method == "POST":
                event = body.get("event") if isinstance(body, dict) else None
                if not isinstance(event, str):
                    return web.json_response(
                        {"error": "expected {'event': 'reauthorizationRequired'|...}"}, status=400
                    )
                service.send_lifecycle(parts[1], event)
                return web.json_response({"sent": event}, status=202)
        except KeyError as exc:
            return web.json_response({"error": str(exc.args[0])}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(
            {"error": f"unknown control endpoint {method} /_sim/{route}"}, status=404
        )

    def _control_writes(self, method: str, route: str, body: Any) -> web.Response:
        """The remediation writes: what was received, what the caller may do, who it is."""
        state = self.state
        if route == "writes" and method == "GET":
            writes = [asdict(w) for w in state.writes()]
            return web.json_response({"writes": writes})
        if route == "writes" and method == "DELETE":
            state.clear_writes()
            return web.json_response({"writes": []})
        if route == "write-permissions" and method == "POST":
            permissions = body.get("permissions") if isinstance(body, dict) else None
            if not isinstance(permissions, list) or not all(
                isinstance(p, str) for p in permissions
            ):
                raise ValueError("expected {'permissions': [permission names]}")
            state.set_write_permissions(permissions)
        if route == "monitor-app" and method == "POST":
            fields = body if isinstance(body, dict) else {}
            unknown = set(fields) - {"app_id", "object_id", "display_name"}
            if unknown:
                raise ValueError(f"unknown monitor-app field(s): {', '.join(sorted(unknown))}")
            state.set_monitor_app(**{k: str(v) for k, v in fields.items()})
        if route == "write-permissions" and method in ("GET", "POST"):
            return web.json_response({"permissions": sorted(state.write_permissions())})
        if route == "monitor-app" and method in ("GET", "POST"):
            return web.json_response(asdict(state.monitor_app()))
        return web.json_response(
            {"error": f"unknown control endpoint {method} /_sim/{route}"}, status=404
        )

    async def _post_deployments(self, body: Any) -> web.Response:
        try:
            wanted = DeploymentsRequest.from_body(body, self.state.now())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            # Generating 100,000 devices takes a couple of seconds: keep it off the loop.
            devices = await asyncio.to_thread(self.add_deployments, wanted)
        except ScenarioError as exc:  # only an explicit seed can reproduce existing ids
            return web.json_response({"error": f"{exc}; try another seed"}, status=409)
        except ValueError as exc:  # the tenant has no policy to enroll through
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(
            {"added": len(devices), "managed_device_ids": [d.managed_device_id for d in devices]}
        )

    def _enrollable_policies(self) -> list[Policy]:
        """Policies a healthy deployment can go through: those whose ETG validates now."""
        policies = self.state.policies()
        valid = [
            p
            for p in policies
            if p.etg_group_id and self.state.etg_validation_error(p.etg_group_id) is None
        ]
        return valid or policies

    def add_deployments(self, wanted: DeploymentsRequest) -> list[DeviceSpec]:
        """Generate healthy deployments and add them to the live tenant, all or none.

        The generator works on a stand-in scenario built from the live state (current
        policies and devices), so the scenario object the tenant was started from is
        never changed. Without a seed each call draws from its own seed; a generated
        id already in the tenant is retried with the next one.
        """
        with self._deployments_lock:
            attempts = 1 if wanted.seed is not None else 3
            for attempt in range(attempts):
                seed = wanted.seed if wanted.seed is not None else next(self._auto_seeds)
                stand_in = Scenario(
                    tenant_id=self.state.tenant_id,
                    start=self.state.start,
                    policies=self._enrollable_policies(),
                    devices=self.state.deployments(),
                )
                devices = add_deployments(
                    stand_in, wanted.count, wanted.at, seed=seed, spread_s=wanted.spread_s
                )
                try:
                    self.state.add_devices(devices)
                except ScenarioError:
                    if attempt + 1 == attempts:
                        raise
                    continue
                return devices
        raise AssertionError("unreachable")

    def _control(self, method: str, route: str, body: Any) -> web.Response:
        clock = self.state.clock
        if route == "clock" and method == "GET":
            return web.json_response({"now": format_time(clock.now())})
        if route == "clock" and method == "POST":
            if "advance_s" in body:
                clock.advance(float(body["advance_s"]))
            elif "set" in body:
                clock.set(parse_time(str(body["set"])))
            else:
                raise ValueError("expected {'advance_s': seconds} or {'set': iso-time}")
            return web.json_response({"now": format_time(clock.now())})
        if route == "faults" and method == "POST":
            rule = self.faults.add(FaultRule.from_dict(body))
            return web.json_response(
                {"rule": rule.to_dict(), "rules": len(self.faults.rules())}, status=201
            )
        if route == "faults" and method == "GET":
            return web.json_response(
                {
                    "latency_ms": self.faults.latency_ms,
                    "rules": [r.to_dict() for r in self.faults.rules()],
                }
            )
        if route == "faults" and method == "DELETE":
            self.faults.clear()
            return web.json_response({"rules": 0})
        if route == "latency" and method == "POST":
            self.faults.latency_ms = float(body["latency_ms"])
            return web.json_response({"latency_ms": self.faults.latency_ms})
        if route == "stats" and method == "GET":
            return web.json_response(self.stats.snapshot())
        if route == "stats/lists" and method == "GET":
            return web.json_response(self.stats.lists())
        if route == "stats/reset" and method == "POST":
            self.stats.reset()
            return web.json_response({})
        if route.split("/")[0] in ("writes", "write-permissions", "monitor-app"):
            return self._control_writes(method, route, body)
        if route == "teams" and method == "GET":
            return web.json_response({"messages": [m.to_dict() for m in self.teams.messages()]})
        if route == "teams" and method == "DELETE":
            self.teams.clear()
            return web.json_response({"messages": []})
        return web.json_response(
            {"error": f"unknown control endpoint {method} /_sim/{route}"}, status=404
        )


SERVICE_KEY = web.AppKey("devtools.simtenant.service", SimService)
PAGERDUTY_KEY = web.AppKey("devtools.simtenant.pagerduty", PagerDutyReceiver)
WEBHOOK_KEY = web.AppKey("devtools.simtenant.webhook", WebhookReceiver)


async def _pagerduty_post(request: web.Request) -> web.StreamResponse:
    status, body, headers = request.app[PAGERDUTY_KEY].receive(await request.read())
    return web.json_response(body, status=status, headers=headers)


async def _webhook_post(request: web.Request) -> web.StreamResponse:
    status, body = request.app[WEBHOOK_KEY].receive(
        request.headers.get("X-Etg-Timestamp"),
        request.headers.get("X-Etg-Signature"),
        await request.read(),
    )
    return web.Response(status=status) if body is None else web.json_response(body, status=status)


def build_app(
    state: TenantState,
    faults: FaultPlan,
    teams: TeamsReceiver | None = None,
    subscriptions: SubscriptionService | None = None,
    pagerduty: PagerDutyReceiver | None = None,
    webhook: WebhookReceiver | None = None,
) -> web.Application:
    """The full application; ``app[SERVICE_KEY]`` gives access to stats, Teams messages
    and subscriptions. It becomes the state's change sink (one app per state)."""
    service = SimService(state, faults, teams or TeamsReceiver(state.clock), subscriptions)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SERVICE_KEY] = service
    app.router.add_route("*", "/_sim/{tail:.*}", service.control)
    app.router.add_post("/teams/{channel}", service.teams_post)
    app[PAGERDUTY_KEY] = pagerduty or PagerDutyReceiver(state.clock)
    app[WEBHOOK_KEY] = webhook or WebhookReceiver(state.clock)
    app.router.add_post("/pagerduty/v2/enqueue", _pagerduty_post)
    app.router.add_post("/alert-webhook/{name}", _webhook_post)
    app.router.add_route("*", "/{tail:.*}", service.graph)
    app.on_startup.append(service.on_startup)
    app.on_shutdown.append(service.on_shutdown)
    app.on_cleanup.append(service.on_cleanup)
    return app


class SimulatedTenant(ServedInThread):
    """The stand-in tenant on a loopback port; use as a context manager.

    >>> with SimulatedTenant(demo_scenario()) as tenant:   # doctest: +SKIP
    ...     httpx.get(tenant.base_url + "/v1.0/groups/...")
    """

    def __init__(
        self,
        scenario: Scenario | str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0.0,
        clock: SimClock | None = None,
        freeze_gc: bool = False,
        validation_timeout: float = VALIDATION_TIMEOUT_S,
        delivery_timeout: float = DELIVERY_TIMEOUT_S,
        delivery_attempts: int = DELIVERY_ATTEMPTS,
        retry_backoff_s: float = RETRY_BACKOFF_S,
    ) -> None:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        self.scenario = scenario
        self.host = host
        self._requested_port = port
        self.state = TenantState(scenario, clock)
        if freeze_gc:
            # Hundreds of thousands of long-lived scenario objects make every full
            # collection pause the server for a few hundred milliseconds; freezing
            # them (process-wide) keeps benchmark latencies honest.
            gc.freeze()
        self.clock = self.state.clock
        self.faults = FaultPlan(latency_ms=latency_ms)
        self.teams = TeamsReceiver(self.clock)
        self.subscription_service = SubscriptionService(
            self.state,
            validation_timeout=validation_timeout,
            delivery_timeout=delivery_timeout,
            delivery_attempts=delivery_attempts,
            retry_backoff_s=retry_backoff_s,
        )
        self.pagerduty = PagerDutyReceiver(self.clock)
        self.webhook = WebhookReceiver(self.clock)
        self.app = build_app(
            self.state,
            self.faults,
            self.teams,
            self.subscription_service,
            self.pagerduty,
            self.webhook,
        )
        self._service = self.app[SERVICE_KEY]
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SimulatedTenant:
        """Start serving in a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = bind(self.host, self._requested_port, 512)
        self._port = sock.getsockname()[1]
        self._thread, self._loop = run_in_thread(
            sock,
            self._serve,
            self._cleanup,
            name=f"simtenant:{self._port}",
            what="simulated tenant",
            on_exit=self._stopped.set,
        )
        return self

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, sock: socket.socket) -> None:
        # handler_cancellation lets a client timeout end a hanging handler.
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def _before_stop(self) -> None:
        self._service._shutdown_event().set()

    # ------------------------------------------------------------------ accessors

    @property
    def teams_url(self) -> str:
        return self.teams.url(self.base_url)

    def stats(self) -> dict[str, int]:
        return self._service.stats.snapshot()

    def list_stats(self) -> dict[str, dict[str, int]]:
        return self._service.stats.lists()

    def reset_stats(self) -> None:
        self._service.stats.reset()

    def teams_messages(self) -> list[TeamsMessage]:
        return self.teams.messages()

    @property
    def pagerduty_url(self) -> str:
        """The Events API v2 endpoint, as ETG_PAGERDUTY_EVENTS_URL."""
        return f"{self.base_url}/pagerduty/v2/enqueue"

    @property
    def pagerduty_routing_key(self) -> str:
        return self.pagerduty.routing_key

    def pagerduty_incidents(self) -> list[PagerDutyIncident]:
        return self.pagerduty.incidents()

    @property
    def webhook_url(self) -> str:
        """The generic webhook receiver, as ETG_ALERT_WEBHOOK_URL."""
        return f"{self.base_url}/alert-webhook/alerts"

    @property
    def webhook_secret(self) -> str:
        return self.webhook.secret

    def webhook_events(self) -> list[WebhookEvent]:
        return self.webhook.events()

    # ------------------------------------------------------------------ change notifications

    def subscriptions(self) -> list[dict[str, Any]]:
        """Live Graph subscriptions (Graph's JSON plus ``reauthorizationRequired``)."""
        return self.subscription_service.subscriptions()

    def notifications_sent(self) -> list[dict[str, Any]]:
        """Every delivery attempt: kind, subscription_id, url (no query), body, status,
        error, attempt (1-based), at (sim time)."""
        return self.subscription_service.notifications_sent()

    def clear_notifications(self) -> None:
        self.subscription_service.clear_notifications()

    def wait_for_deliveries(self, timeout: float = 5.0) -> None:
        """Block until no delivery is queued or retrying; ``TimeoutError`` after ``timeout``."""
        self.subscription_service.wait_for_deliveries(timeout)

    def deliveries_held(self) -> contextlib.AbstractContextManager[None]:
        """Inside the block nothing is posted; on leaving it, what became due meanwhile goes
        out as one POST per URL (change and lifecycle items of any subscriptions)."""
        return self.subscription_service.held()

    def send_lifecycle(self, subscription_id: str, event: str) -> None:
        """Send ``reauthorizationRequired``, the only lifecycle event of group subscriptions."""
        self.subscription_service.send_lifecycle(subscription_id, event)

    def drop_subscription(self, subscription_id: str) -> None:
        """Graph deletes the subscription on its own; for groups it sends nothing."""
        self.subscription_service.drop_subscription(subscription_id)
