"""A minimal local stand-in for the Azure Functions HTTP host.

Azure Functions Core Tools cannot be installed here, so tests and the demo serve
the app's HTTP-triggered functions with ``FunctionHost``: every function of an
``azure.functions.FunctionApp`` (v2 programming model) with an ``httpTrigger`` is
served at ``/api/<route>`` for its declared methods, on a loopback port, in a
background thread with its own event loop. That lets the simulated Graph call the
app's webhook over real HTTP.

What it does like the real host: route templates (``{name}``, ``{name:int}``,
``{name?}``, ``{*rest}``; case-insensitive), auth levels (``anonymous`` is open;
``function`` and ``admin`` need the key as the ``code`` query parameter or the
``x-functions-key`` header, else 401), 404 for an unknown route, 405 for a known
route with another method, 500 when the function raises. What it does not:
non-HTTP triggers, input bindings, the admin API, host.json settings.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import json
import logging
import re
import secrets
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import azure.functions as func
from aiohttp import web

from devtools.simtenant.loopserver import ServedInThread, bind, run_in_thread

log = logging.getLogger(__name__)

ALL_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"})
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "alpha": r"[A-Za-z]+",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}
_PARAMETER = re.compile(r"\{([^{}]+)\}")

# FunctionApp.get_functions() may only be called once per app: remember the result.
_FUNCTIONS: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_FUNCTIONS_LOCK = threading.Lock()


def app_functions(app: Any) -> list[Any]:
    """``app.get_functions()``, computed once per app and cached (share it with other code)."""
    with _FUNCTIONS_LOCK:
        functions = _FUNCTIONS.get(app)
        if functions is None:
            functions = list(app.get_functions())
            _FUNCTIONS[app] = functions
        return functions


class _Out:
    """Stands in for ``func.Out`` output binding parameters; the value is recorded."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


@dataclass(slots=True)
class HttpFunction:
    """One HTTP-triggered function, ready to serve."""

    name: str
    route: str
    methods: frozenset[str]  # empty: every method
    auth_level: str  # "anonymous", "function" or "admin"
    user_function: Callable[..., Any]
    trigger_arg: str
    output_args: tuple[str, ...]
    wants_context: bool
    pattern: re.Pattern[str]
    params: dict[str, str]  # regex group name -> route parameter name
    rank: tuple[int, int, int]  # lower is tried first

    def allows(self, method: str) -> bool:
        return not self.methods or method.upper() in self.methods


def compile_route(route: str) -> tuple[re.Pattern[str], dict[str, str], tuple[int, int, int]]:
    """An Azure Functions route template as a regex, its parameter names and a precedence."""
    template = route.strip("/")
    parts: list[str] = []
    names: dict[str, str] = {}
    literal_chars = 0
    catch_all = 0
    position = 0
    for index, match in enumerate(_PARAMETER.finditer(template)):
        literal = template[position : match.start()]
        position = match.end()
        spec = match.group(1).strip()
        star = spec.startswith("*")
        spec = spec.lstrip("*")
        optional = spec.endswith("?")
        spec = spec.rstrip("?")
        spec = spec.split("=", 1)[0]  # a default value makes it optional in effect
        optional = optional or "=" in match.group(1)
        name, _, constraint = spec.partition(":")
        group = f"p{index}"
        names[group] = name.strip()
        if star:
            body = ".*"
            catch_all = 1
        else:
            body = _CONSTRAINTS.get(constraint.split("(", 1)[0].strip().lower(), "[^/]+")
        if optional or star:
            if literal.endswith("/"):
                parts.append(re.escape(literal[:-1]))
                parts.append(f"(?:/(?P<{group}>{body}))?")
            else:
                parts.append(re.escape(literal))
                parts.append(f"(?P<{group}>{body})?")
        else:
            parts.append(re.escape(literal))
            parts.append(f"(?P<{group}>{body})")
        literal_chars += len(literal)
    tail = template[position:]
    parts.append(re.escape(tail))
    literal_chars += len(tail)
    pattern = re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)
    return pattern, names, (catch_all, len(names), -literal_chars)


def http_functions(functions: Iterable[Any]) -> list[HttpFunction]:
    """The HTTP-triggered functions among ``functions`` (others are skipped)."""
    served: list[HttpFunction] = []
    for fn in functions:
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next((b for b in bindings if b.get("type") == "httpTrigger"), None)
        if trigger is None:
            continue
        name = fn.get_function_name()
        user_function = fn.get_user_function()
        outputs: list[str] = []
        for binding in bindings:
            if binding is trigger or binding.get("name") == "$return":
                continue
            if str(binding.get("direction", "")).upper() == "OUT":
                outputs.append(binding["name"])
            else:
                raise ValueError(
                    f"function {name}: input binding {binding.get('name')!r} "
                    f"({binding.get('type')}) is not supported by FunctionHost"
                )
        route = trigger.get("route") or name
        methods = frozenset(str(m).upper() for m in (trigger.get("methods") or ()))
        auth = str(trigger.get("authLevel") or "function").lower()
        if auth not in ("anonymous", "function", "admin"):
            raise ValueError(f"function {name}: unknown authLevel {auth!r}")
        pattern, params, rank = compile_route(route)
        signature = inspect.signature(user_function)
        served.append(
            HttpFunction(
                name=name,
                route=route,
                methods=methods,
                auth_level=auth,
                user_function=user_function,
                trigger_arg=trigger["name"],
                output_args=tuple(outputs),
                wants_context="context" in signature.parameters,
                pattern=pattern,
                params=params,
                rank=rank,
            )
        )
    served.sort(key=lambda f: f.rank)
    return served


class FunctionHost(ServedInThread):
    """Serve a FunctionApp's HTTP functions on a loopback port; use as a context manager.

    ``app`` is an ``azure.functions.FunctionApp`` (its functions are computed once and
    cached, see ``app_functions``) or an already computed list of its function objects.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        function_key: str | None = None,
        route_prefix: str = "api",
    ) -> None:
        functions: Sequence[Any] = (
            app_functions(app) if hasattr(app, "get_functions") else list(app)
        )
        self.functions = http_functions(functions)
        self.host = host
        self.function_key = function_key or secrets.token_urlsafe(32)
        self.route_prefix = route_prefix.strip("/")
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FunctionHost:
        """Start serving in a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = bind(self.host, self._requested_port, 128)
        self._port = sock.getsockname()[1]
        self._thread, self._loop = run_in_thread(
            sock,
            self._serve,
            self._cleanup,
            name=f"funchost:{self._port}",
            what="function host",
            on_exit=None,
        )
        return self

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    # ------------------------------------------------------------------ accessors

    def url(self, route: str, with_key: bool = True) -> str:
        """``base_url/api/<route>``, with ``?code=<function key>`` unless ``with_key=False``."""
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        url = f"{self.base_url}{prefix}/{route.lstrip('/')}"
        if with_key:
            url += ("&" if "?" in url else "?") + f"code={quote(self.function_key, safe='')}"
        return url

    def calls(self) -> list[dict[str, Any]]:
        """Every request served: function (or None), method, path, status, outputs."""
        with self._lock:
            return [dict(call) for call in self._calls]

    # ------------------------------------------------------------------ serving

    def _record(
        self, function: str | None, request: web.Request, status: int, outputs: dict[str, Any]
    ) -> None:
        with self._lock:
            self._calls.append(
                {
                    "function": function,
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "outputs": outputs,
                }
            )

    def _route_path(self, path: str) -> str | None:
        if not self.route_prefix:
            return path.lstrip("/")
        prefix = f"/{self.route_prefix}".lower()
        lowered = path.lower()
        if lowered == prefix:
            return ""
        if lowered.startswith(prefix + "/"):
            return path[len(prefix) + 1 :]
        return None

    def _authorized(self, function: HttpFunction, request: web.Request) -> bool:
        if function.auth_level == "anonymous":
            return True
        supplied = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(supplied.encode(), self.function_key.encode())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route_path = self._route_path(request.path)
        matched: list[tuple[HttpFunction, re.Match[str]]] = []
        if route_path is not None:
            for function in self.functions:
                match = function.pattern.match(route_path)
                if match is not None:
                    matched.append((function, match))
        if not matched:
            self._record(None, request, 404, {})
            return web.Response(status=404)
        chosen = next(((f, m) for f, m in matched if f.allows(request.method)), None)
        if chosen is None:
            allowed = sorted({m for f, _ in matched for m in (f.methods or ALL_METHODS)})
            self._record(matched[0][0].name, request, 405, {})
            return web.Response(status=405, headers={"Allow": ", ".join(allowed)})
        function, match = chosen
        if not self._authorized(function, request):
            self._record(function.name, request, 401, {})
            return web.Response(status=401)
        body = await request.read()
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lowered = key.lower()
            headers[lowered] = f"{headers[lowered]}, {value}" if lowered in headers else value
        params: dict[str, str] = {}
        for key, value in request.query.items():
            params.setdefault(key, value)
        route_params = {
            function.params[group]: value
            for group, value in match.groupdict().items()
            if value is not None
        }
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=params,
            route_params=route_params,
            body=body,
        )
        outputs = {name: _Out() for name in function.output_args}
        kwargs: dict[str, Any] = {function.trigger_arg: http_request, **outputs}
        if function.wants_context:
            kwargs["context"] = SimpleNamespace(
                invocation_id=str(uuid.uuid4()),
                function_name=function.name,
                function_directory="",
                trace_context=None,
                retry_context=None,
                thread_local_storage=threading.local(),
            )
        try:
            if inspect.iscoroutinefunction(function.user_function):
                result = await function.user_function(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    None, functools.partial(function.user_function, **kwargs)
                )
            response = self._to_web(result)
        except Exception as exc:
            log.exception("function %s failed", function.name)
            with self._lock:
                self.errors.append(exc)
            response = web.Response(status=500)
        self._record(
            function.name,
            request,
            response.status,
            {name: out.value for name, out in outputs.items()},
        )
        return response

    @staticmethod
    def _to_web(result: Any) -> web.Response:
        if isinstance(result, func.HttpResponse):
            headers = list(result.headers.items())
            if not any(key.lower() == "content-type" for key, _ in headers):
                headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
            return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
        if result is None:
            return web.Response(status=204)
        if isinstance(result, str):
            return web.Response(
                status=200, body=result.encode(), content_type="text/plain", charset="utf-8"
            )
        if isinstance(result, bytes | bytearray):
            return web.Response(
                status=200, body=bytes(result), content_type="application/octet-stream"
            )
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not HttpResponse")
