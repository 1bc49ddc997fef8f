"""Thin async wrapper over azure-storage-queue: the queue the timers fan tenants' jobs out on.

The queue lives in the same storage account as the tables: from ``ETG_STORAGE_CONNECTION``
(its QueueEndpoint, or the account's default endpoint; ``UseDevelopmentStorage=true`` is
Azurite's), else ``ETG_STORAGE_QUEUE_URL``, else the account of ``ETG_STORAGE_TABLE_URL``,
reached with the managed identity. A queue that cannot be used is ``Unavailable``, naming the
setting to check.

Messages are base64-encoded: the Functions host's queue trigger decodes them so by default
(host.json ``extensions.queues.messageEncoding``, default ``base64``, valid ``base64`` and
``none``: functions-bindings-storage-queue.md, "host.json settings"), and host.json says so
explicitly. The function receives the decoded bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitors.aio import OwnedResources
from monitors.failures import SettingsError, Unavailable
from monitors.settings import Settings

POISON_SUFFIX = "-poison"
# Messages sent at once by one timer firing: hundreds of tenants enqueue in well under a second
# without opening a connection per tenant.
SEND_CONCURRENCY = 16
# A fanned-out job message lives at most a day: a job that has not run by then is superseded
# by the next firings of its timer (azure-storage-queue QueueClient.send_message: any positive
# number of seconds, or -1; seven days when omitted).
MESSAGE_TTL_SECONDS = 24 * 60 * 60


def poison_queue(name: str) -> str:
    """The host moves a message that failed maxDequeueCount times to ``<queue>-poison``
    (functions-bindings-storage-queue-trigger.md, "Poison messages")."""
    return f"{name}{POISON_SUFFIX}"


def queue_service_url(settings: Settings) -> str | None:
    """The identity-based queue endpoint: ``ETG_STORAGE_QUEUE_URL``, else the table endpoint's
    account (``https://<account>.table.core.windows.net`` -> ``.queue.``)."""
    if settings.storage_queue_url:
        return settings.storage_queue_url
    if not settings.storage_table_url:
        return None
    parts = urlsplit(settings.storage_table_url)
    host = parts.hostname or ""
    account, dot, rest = host.partition(".")
    if not dot or not rest.startswith("table."):
        return None
    queue_host = f"{account}.queue.{rest.removeprefix('table.')}"
    return urlunsplit((parts.scheme, queue_host, "", "", ""))


def _setting(settings: Settings) -> str:
    if settings.storage_connection:
        return "ETG_STORAGE_CONNECTION"
    return "ETG_STORAGE_QUEUE_URL" if settings.storage_queue_url else "ETG_STORAGE_TABLE_URL"


class JobQueue(OwnedResources):
    """One storage queue (``name``), created on first send; use as an async context."""

    def __init__(self, settings: Settings, name: str, *, credential: Any = None) -> None:
        from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
        from azure.storage.queue.aio import QueueClient

        from monitors.http import StorageTransport

        self.name = name
        self._setting = _setting(settings)
        encode, decode = BinaryBase64EncodePolicy(), BinaryBase64DecodePolicy()
        if settings.storage_connection:
            try:
                self._client = QueueClient.from_connection_string(
                    settings.storage_connection,
                    name,
                    message_encode_policy=encode,
                    message_decode_policy=decode,
                    transport=StorageTransport(),
                )
            except ValueError:
                # The SDK's message can quote the string, which holds the account key.
                raise SettingsError(
                    ["ETG_STORAGE_CONNECTION is not a usable storage connection string"]
                ) from None
        else:
            url = queue_service_url(settings)
            if url is None:
                raise SettingsError(
                    [
                        "set ETG_STORAGE_QUEUE_URL (https://<account>.queue.core.windows.net): "
                        "the tenant registry fans jobs out on a storage queue"
                    ]
                )
            if credential is None:
                from azure.identity.aio import DefaultAzureCredential

                credential = self._owned_credential = DefaultAzureCredential()
            self._client = QueueClient(
                url,
                name,
                credential=credential,
                message_encode_policy=encode,
                message_decode_policy=decode,
                transport=StorageTransport(),
            )
        self._created = False

    async def _close_resource(self) -> None:
        await self._client.close()

    def _unavailable(self, exc: BaseException) -> Unavailable:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        kind = type(exc).__name__
        if isinstance(exc, ClientAuthenticationError):
            why = f"authentication was refused ({kind})"
        elif isinstance(exc, HttpResponseError) and exc.status_code is not None:
            why = f"the queue service refused the request (HTTP {exc.status_code}, {kind})"
        else:
            why = f"the queue service could not be reached ({kind})"
        return Unavailable(
            f"storage queue {self.name}: {why}: check {self._setting} and the identity's "
            "Storage Queue Data Contributor role on that account"
        )

    async def _ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self._created:
            return
        with contextlib.suppress(ResourceExistsError):
            await self._client.create_queue()
        self._created = True

    async def send(self, messages: Iterable[bytes]) -> int:
        """Enqueue each message, a few at a time (one request each: Queue Storage has no
        batch put); how many were sent. Raises Unavailable."""
        import asyncio

        from monitors.failures import is_dependency_failure

        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def put(body: bytes) -> None:
            async with gate:
                await self._client.send_message(body, time_to_live=MESSAGE_TTL_SECONDS)

        bodies = list(messages)
        try:
            await self._ensure()
            await asyncio.gather(*(put(body) for body in bodies))
        except Exception as exc:
            if is_dependency_failure(exc):
                raise self._unavailable(exc) from exc
            raise
        return len(bodies)
