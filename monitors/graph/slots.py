"""The Graph client's concurrency limit, with a rank: when a slot frees, the waiting request
of the lowest rank takes it, first come first served within a rank.

A scan reads the next chunks' devices while it judges the current one: hundreds of $batch
requests queued ahead. With a plain semaphore the current chunk's membership checks waited
behind all of them, and so did a chunk's second step (its Entra ids) behind the chunk after
it. Ranked, the reads of later chunks only fill the slots nothing earlier needs, so the slots
stay busy and the earliest work is never behind the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Iterator
from contextvars import ContextVar
from types import TracebackType

# The rank of the Graph requests of the running task and of the tasks it starts (they copy
# its context); 0, the first served, unless set with ``ranked``.
RANK: ContextVar[int] = ContextVar("graph_rank", default=0)


@contextlib.contextmanager
def ranked(rank: int) -> Iterator[None]:
    """Graph requests made inside, and by tasks started inside, wait with this rank."""
    token = RANK.set(rank)
    try:
        yield
    finally:
        RANK.reset(token)


class RankedSlots:
    """At most ``size`` holders at once; ``async with`` holds one."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    async def __aenter__(self) -> None:
        if self._free > 0:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (RANK.get(), next(self._arrival), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot just as it was cancelled: pass it on, or it is lost.
                self._release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        # A freed slot goes straight to the next live waiter; cancelled ones are dropped here.
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
