"""A base for clients that own connections and, sometimes, a credential."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


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
