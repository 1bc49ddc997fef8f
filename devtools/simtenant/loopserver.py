"""Serving an aiohttp app from a background thread with its own event loop.

Shared by the simulated tenant and the function host: both must start from synchronous test
code, report a start-up failure to the caller, and shut down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening, non-blocking socket; ``port=0`` picks a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def run_in_thread(
    sock: socket.socket,
    serve: Callable[[socket.socket], Awaitable[None]],
    cleanup: Callable[[], Awaitable[None]],
    *,
    name: str,
    what: str,
    on_exit: Callable[[], None] | None = None,
) -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
    """Run ``serve(sock)`` on a new loop in a daemon thread; return once it is listening.

    The loop runs until stopped (``loop.call_soon_threadsafe(loop.stop)``), then ``cleanup``
    runs on it. A failure while starting is raised here, in the caller's thread.
    """
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        holder.append(loop)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(sock))
        except BaseException as exc:  # surfaced to the starting thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            if on_exit is not None:
                on_exit()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError(f"{what} did not start within 30 s")
    if failure:
        raise RuntimeError(f"{what} failed to start") from failure[0]
    return thread, holder[0]


class ServedInThread:
    """Stopping, ``with`` and the address of a server that ``run_in_thread`` runs; the
    subclass starts it and sets ``_port``, ``_loop`` and ``_thread``."""

    host: str
    _port: int | None
    _loop: asyncio.AbstractEventLoop | None
    _thread: threading.Thread | None

    def start(self) -> object:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Runs on the server's own loop just before it stops."""

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._before_stop)
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: no trailing slash and no version segment."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
