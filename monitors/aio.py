"""A base for clients that own connections and, sometimes, a credential; and long loops that
let the event loop take its turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


async def between_turns(items: Sequence[T], per_turn: int) -> AsyncIterator[Sequence[T]]:
    """``items`` ``per_turn`` at a time, the event loop taking a turn between two slices: a
    loop over thousands of answers at once held back, for tens of milliseconds, the answers
    of every request in flight, and so the next requests."""
    for start in range(0, len(items), per_turn):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + per_turn]


class OwnedResources:
    """``async with`` support: closes the subclass's resource and any credential it created."""

    _owned_credential: Any = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _close_resource(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._close_resource()
        if self._owned_credential is not None:
            await self._owned_credential.close()
