"""The environment's proxy for the storage and $batch requests: taken as aiohttp takes it
(HTTP(S)_PROXY, NO_PROXY, credentials in the proxy URL), once per origin."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import BasicAuth
from yarl import URL

from monitors.http import Proxies

TABLE = "http://127.0.0.1:10002/devstoreaccount1/Tables"


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_the_environments_proxy_and_its_credentials_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://ops:s3cret@proxy.example:3128")
    options = asyncio.run(Proxies().options(TABLE))
    assert options["proxy"] == URL("http://proxy.example:3128")  # no credentials in the URL
    auth = options["proxy_auth"]
    assert isinstance(auth, BasicAuth) and (auth.login, auth.password) == ("ops", "s3cret")


def test_a_host_named_in_no_proxy_goes_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert asyncio.run(Proxies().options(TABLE)) == {}


def test_without_proxy_settings_requests_go_direct() -> None:
    assert asyncio.run(Proxies().options(TABLE)) == {}


def test_the_proxy_is_looked_up_once_per_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    proxies = Proxies()

    async def twice() -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
        first = await proxies.options(TABLE)
        monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
        same_origin = await proxies.options(TABLE + "()?$filter=x")
        other_origin = await proxies.options("http://127.0.0.1:10001/devstoreaccount1")
        return first, same_origin, other_origin

    first, same_origin, other_origin = asyncio.run(twice())
    assert first == same_origin == {}
    assert other_origin == {"proxy": URL("http://proxy.example:3128")}
