"""State of the change-notification path.

- ``inbox``: PK the first two characters of the notification's content hash, RK the hash. The
  webhook upserts a POST's items one transaction per partition (a Graph retry rewrites the
  same rows); the processor deletes rows it has handled, so the table is the queue. Spreading
  rows over partitions keeps each write's cost flat when notifications pile up.
- ``subscriptions``: PK "sub", RK the ETG's group id: the live subscription for that group.
- ``observations``: PK the group id, RK "<object id>|<op>|<delta page key>": a join or removal
  seen through delta, with the time it was first observed (an upper bound of when it happened).
  The key is derived from the delta page, so re-applying a page after a crash changes nothing.
- Delta links live in ``checkpoints`` (PK "delta", RK the group id).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from monitors.models import MembershipEvent, MembershipOp
from monitors.notifications.webhook import Notification
from monitors.store import transactions
from monitors.store.scan_state import CHECKPOINTS
from monitors.store.tables import BATCH_LIMIT, TableStore, escape_key

INBOX = "inbox"
SUBSCRIPTIONS = "subscriptions"
OBSERVATIONS = "observations"
WRITE_CONCURRENCY = 16  # partitions written at once by one webhook request


@dataclass
class InboxItem:
    id: str
    subscription_id: str
    group_id: str | None
    change_type: str
    lifecycle_event: str | None
    received_at: datetime


@dataclass
class SubscriptionState:
    group_id: str
    subscription_id: str
    expires_at: datetime
    created_at: datetime
    renewed_at: datetime | None = None
    last_notification_at: datetime | None = None
    policy_names: str = ""
    # Which client state the subscription was made with (client_state_mark): Graph never
    # returns it. None: a row kept before marks were, made with the client state of its time.
    client_state_mark: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "subscription_id": self.subscription_id,
            "policies": self.policy_names,
            "expires_at": self.expires_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "renewed_at": self.renewed_at.isoformat() if self.renewed_at else None,
            "last_notification_at": self.last_notification_at.isoformat()
            if self.last_notification_at
            else None,
        }


def client_state_mark(client_state: str) -> str:
    """A fingerprint of a client state, to tell which one a subscription carries without
    storing the secret itself."""
    return hashlib.sha256(b"client-state-mark:" + client_state.encode()).hexdigest()[:16]


class NotificationStore:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    # inbox -------------------------------------------------------------------------------------
    async def record(self, items: Sequence[Notification], received_at: datetime) -> None:
        """Store every item or raise. A transaction holds one partition only, so a POST's items
        are written partition by partition, concurrently to stay inside Graph's 3 seconds.
        Rows are upserts keyed by content hash: when one write fails, the partitions already
        written are rewritten unchanged by Graph's redelivery, so no item is lost or doubled."""
        table = await self._store.table(INBOX)
        by_partition: dict[str, dict[str, dict[str, Any]]] = {}
        for n in items:
            by_partition.setdefault(n.id[:2], {})[n.id] = {
                "PartitionKey": n.id[:2],
                "RowKey": n.id,
                "SubscriptionId": n.subscription_id,
                "GroupId": n.group_id or "",
                "ChangeType": n.change_type,
                "LifecycleEvent": n.lifecycle_event or "",
                "ReceivedAt": received_at,
            }

        slots = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def write(rows: list[dict[str, Any]]) -> None:
            async with slots:
                if len(rows) == 1:
                    # A plain upsert is much cheaper than a one-item batch, whose multipart
                    # encoding dominates the webhook's latency.
                    await table.upsert_entity(rows[0], mode=UpdateMode.MERGE)
                    return
                for i in range(0, len(rows), BATCH_LIMIT):
                    chunk = rows[i : i + BATCH_LIMIT]
                    await transactions.submit(
                        table, [("upsert", row, {"mode": UpdateMode.MERGE}) for row in chunk]
                    )

        # Every write runs to its end before the first error is raised: none is left running
        # behind the answer.
        results = await asyncio.gather(
            *(write(list(rows.values())) for rows in by_partition.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def inbox(self) -> list[InboxItem]:
        table = await self._store.table(INBOX)
        return [
            InboxItem(
                e["RowKey"],
                e.get("SubscriptionId", ""),
                e.get("GroupId") or None,
                e.get("ChangeType", ""),
                e.get("LifecycleEvent") or None,
                e["ReceivedAt"],
            )
            async for e in table.list_entities()
        ]

    async def done(self, ids: Iterable[str]) -> None:
        table = await self._store.table(INBOX)
        for item_id in ids:
            await table.delete_entity(item_id[:2], item_id)  # deleting a missing row succeeds

    # subscriptions -----------------------------------------------------------------------------
    async def subscriptions(self) -> dict[str, SubscriptionState]:
        table = await self._store.table(SUBSCRIPTIONS)
        out = {}
        async for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": "sub"}):
            out[e["RowKey"]] = SubscriptionState(
                e["RowKey"],
                e["SubscriptionId"],
                e["ExpiresAt"],
                e["CreatedAt"],
                e.get("RenewedAt"),
                e.get("LastNotificationAt"),
                e.get("PolicyNames", ""),
                e.get("ClientStateMark") or None,
            )
        return out

    async def known_subscription_ids(self) -> set[str]:
        return {s.subscription_id.lower() for s in (await self.subscriptions()).values()}

    async def save_subscription(self, state: SubscriptionState) -> None:
        table = await self._store.table(SUBSCRIPTIONS)
        entity: dict[str, Any] = {
            "PartitionKey": "sub",
            "RowKey": escape_key(state.group_id),
            "SubscriptionId": state.subscription_id,
            "ExpiresAt": state.expires_at,
            "CreatedAt": state.created_at,
            "PolicyNames": state.policy_names,
        }
        if state.renewed_at:
            entity["RenewedAt"] = state.renewed_at
        if state.last_notification_at:
            entity["LastNotificationAt"] = state.last_notification_at
        if state.client_state_mark:
            entity["ClientStateMark"] = state.client_state_mark
        await table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def touch(self, group_id: str, when: datetime) -> None:
        table = await self._store.table(SUBSCRIPTIONS)
        # The subscription may have been removed meanwhile.
        with contextlib.suppress(ResourceNotFoundError):
            await table.update_entity(
                {"PartitionKey": "sub", "RowKey": escape_key(group_id), "LastNotificationAt": when},
                mode=UpdateMode.MERGE,
            )

    async def forget_subscription(self, group_id: str) -> None:
        table = await self._store.table(SUBSCRIPTIONS)
        await table.delete_entity("sub", escape_key(group_id))

    # delta links -------------------------------------------------------------------------------
    async def delta_link(self, group_id: str) -> str | None:
        table = await self._store.table(CHECKPOINTS)
        try:
            entity = await table.get_entity("delta", escape_key(group_id))
        except ResourceNotFoundError:
            return None
        link = entity.get("DeltaLink")
        return link if isinstance(link, str) and link else None

    async def save_delta_link(self, group_id: str, link: str | None) -> None:
        table = await self._store.table(CHECKPOINTS)
        await table.upsert_entity(
            {"PartitionKey": "delta", "RowKey": escape_key(group_id), "DeltaLink": link or ""},
            mode=UpdateMode.REPLACE,
        )

    # observations ------------------------------------------------------------------------------
    async def observe(
        self,
        group_id: str,
        changes: Sequence[tuple[str, MembershipOp]],
        page_key: str,
        observed_at: datetime,
    ) -> int:
        """Record joins and removals; returns how many were new."""
        table = await self._store.table(OBSERVATIONS)
        added = 0
        for object_id, op in changes:
            try:
                await table.create_entity(
                    {
                        "PartitionKey": escape_key(group_id),
                        "RowKey": escape_key(f"{object_id}|{op.value}|{page_key}"),
                        "ObjectId": object_id,
                        "Op": op.value,
                        "ObservedAt": observed_at,
                    }
                )
                added += 1
            except ResourceExistsError:
                continue
        return added

    async def observations(self, group_id: str, since: datetime) -> list[MembershipEvent]:
        table = await self._store.table(OBSERVATIONS)
        return [
            MembershipEvent(
                MembershipOp(e["Op"]),
                group_id,
                e["ObjectId"],
                e["ObservedAt"],
                False,
                "delta",
                f"obs:{e['RowKey']}",
            )
            async for e in table.query_entities(
                "PartitionKey eq @g and ObservedAt ge @t",
                parameters={"g": escape_key(group_id), "t": since},
            )
        ]
