"""FunctionHost: a FunctionApp's HTTP functions served over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import azure.functions as func
import httpx
import pytest

from devtools.simtenant.funchost import FunctionHost, app_functions, compile_route

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
SYNC_THREADS: list[str] = []


@app.function_name("echo")
@app.route(route="echo/{name}", methods=["POST", "PUT"], auth_level=func.AuthLevel.FUNCTION)
async def echo(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "method": req.method,
        "url": req.url,
        "name": req.route_params.get("name"),
        "params": dict(req.params),
        "header": req.headers.get("x-test"),
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(
        json.dumps(payload),
        status_code=201,
        headers={"X-Echo": "yes"},
        mimetype="application/json",
    )


@app.function_name("hello")
@app.route(route="hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    SYNC_THREADS.append(threading.current_thread().name)
    return func.HttpResponse(f"hello {req.params.get('who', 'world')}")


@app.function_name("admin_only")
@app.route(route="admin/ping", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> str:
    return "pong"


@app.function_name("broken")
@app.route(route="broken", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def broken(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@app.function_name("tick")
@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    """Not HTTP: never served."""


@pytest.fixture(scope="module")
def host() -> Iterator[FunctionHost]:
    with FunctionHost(app, function_key="test-key") as running:
        yield running


def test_serves_only_http_functions(host: FunctionHost) -> None:
    assert sorted(f.name for f in host.functions) == ["admin_only", "broken", "echo", "hello"]
    assert host.base_url.startswith("http://127.0.0.1:")
    assert host.url("echo/x") == f"{host.base_url}/api/echo/x?code=test-key"
    assert host.url("hello", with_key=False) == f"{host.base_url}/api/hello"


def test_async_function_round_trips_body_headers_params(host: FunctionHost) -> None:
    response = httpx.post(
        host.url("echo/Widget") + "&mode=fast",
        content=b"payload bytes",
        headers={"X-Test": "header value"},
    )
    assert response.status_code == 201
    assert response.headers["x-echo"] == "yes"
    assert response.headers["content-type"].startswith("application/json")
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert echoed["name"] == "Widget"
    assert echoed["params"] == {"code": "test-key", "mode": "fast"}
    assert echoed["header"] == "header value"
    assert echoed["body"] == "payload bytes"
    assert echoed["url"].startswith(f"{host.base_url}/api/echo/Widget?")


def test_sync_function_runs_in_a_worker_thread(host: FunctionHost) -> None:
    response = httpx.get(host.url("hello", with_key=False), params={"who": "tests"})
    assert response.status_code == 200
    assert response.text == "hello tests"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert SYNC_THREADS and not SYNC_THREADS[-1].startswith("funchost:")


def test_function_auth_level_needs_the_key(host: FunctionHost) -> None:
    bare = host.url("echo/a", with_key=False)
    assert httpx.post(bare).status_code == 401
    assert httpx.post(bare + "?code=wrong").status_code == 401
    assert httpx.post(bare, headers={"x-functions-key": "test-key"}).status_code == 201
    assert httpx.post(host.url("echo/a")).status_code == 201
    # Admin level takes the same key here; a str result is a 200 text/plain answer.
    assert httpx.get(host.url("admin/ping", with_key=False)).status_code == 401
    answer = httpx.get(host.url("admin/ping"))
    assert (answer.status_code, answer.text) == (200, "pong")


def test_unknown_route_404_and_wrong_method_405(host: FunctionHost) -> None:
    assert httpx.get(host.url("nothing/here")).status_code == 404
    assert httpx.get(host.base_url + "/hello").status_code == 404  # outside /api
    wrong = httpx.get(host.url("echo/a"))
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST, PUT"
    assert httpx.post(host.url("hello")).status_code == 405


def test_function_errors_are_500_and_recorded(host: FunctionHost) -> None:
    assert httpx.get(host.url("broken", with_key=False)).status_code == 500
    assert any(isinstance(e, RuntimeError) and str(e) == "boom" for e in host.errors)
    assert {"function": "broken", "status": 500}.items() <= host.calls()[-1].items()


def test_accepts_precomputed_functions_and_caches_get_functions() -> None:
    # get_functions() can run once per app; app_functions() keeps the first result.
    functions = app_functions(app)
    assert app_functions(app) is functions
    with FunctionHost(functions) as second:
        assert httpx.get(second.url("hello", with_key=False)).text == "hello world"
        assert second.function_key != "test-key"  # a random key by default


def test_route_templates() -> None:
    pattern, names, _ = compile_route("items/{id:int}/{rest?}")
    match = pattern.match("Items/42")
    assert match is not None and match.group("p0") == "42" and match.group("p1") is None
    assert names == {"p0": "id", "p1": "rest"}
    assert pattern.match("items/x") is None
    catch_all, _, rank = compile_route("files/{*path}")
    match = catch_all.match("files/a/b/c.txt")
    assert match is not None and match.group("p0") == "a/b/c.txt"
    assert rank[0] == 1  # catch-alls are tried last
