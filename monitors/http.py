"""HTTP below the SDKs: the environment's proxy looked up once per host, not per request.

With ``trust_env`` on (azure-core's default) aiohttp looks up the proxy and ``~/.netrc`` in a
worker thread for every request, two thread hand-offs per Table transaction: about a tenth of
a first scan's own CPU. The proxy of one endpoint does not change while the process runs, so
it is looked up the first time, the same way aiohttp does it (``HTTP(S)_PROXY``, ``NO_PROXY``,
the proxy's credentials from the URL or ``~/.netrc``). A netrc entry is never used as the
request's own credentials: storage and Graph requests carry their own Authorization header,
which aiohttp refuses to combine with one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import BasicAuth
from aiohttp.helpers import get_env_proxy_for_url
from azure.core.pipeline.transport import AioHttpTransport
from yarl import URL

Proxy = tuple[URL, BasicAuth | None] | None


def env_proxy(url: str) -> Proxy:
    """The proxy aiohttp would take from the environment for ``url``, or None."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None


class Proxies:
    """The environment's proxy per origin, each looked up once."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str | None, int | None], Proxy] = {}

    async def of(self, url: str) -> Proxy:
        parsed = URL(url)
        origin = (parsed.scheme, parsed.host, parsed.port)
        if origin not in self._known:
            # Reading ~/.netrc is file I/O: off the event loop, once.
            self._known[origin] = await asyncio.to_thread(env_proxy, url)
        return self._known[origin]

    async def options(self, url: str) -> dict[str, Any]:
        """aiohttp's ``proxy`` and ``proxy_auth`` request options for ``url``; none without."""
        proxy = await self.of(url)
        if proxy is None:
            return {}
        address, auth = proxy
        return {"proxy": address} if auth is None else {"proxy": address, "proxy_auth": auth}


class StorageTransport(AioHttpTransport):  # type: ignore[misc]
    """A storage client's transport; the client owns and closes it."""

    def __init__(self) -> None:
        super().__init__(use_env_settings=False)
        self._proxies = Proxies()

    async def send(self, request: Any, **config: Any) -> Any:
        if "proxy" not in config and not config.get("proxies"):
            config.update(await self._proxies.options(request.url))
        return await super().send(request, **config)
