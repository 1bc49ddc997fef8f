"""The alert outbox: rows in the anomalies table, written in the same transaction as the
anomaly change they announce (same partition), so an alert is never lost or invented.

Row key ``outbox|<created>|<id>``; property ``Type`` = "outbox" tells them from anomalies.
The weekly summary uses the same outbox under the partition ``_summary``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from monitors.models import JSON
from monitors.store.tables import ANOMALIES, TableStore, dumps_json, escape_key, loads_json

OUTBOX_TYPE = "outbox"
SUMMARY_PARTITION = "_summary"


@dataclass
class OutboxItem:
    partition: str
    change: str  # opened | reopened | unsuppressed | resolved | summary
    run_id: str
    created_at: datetime
    payload: dict[str, JSON]  # the anomaly (Anomaly.to_json) or a ready card
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "pending"  # pending | sent | failed
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str = ""
    sent_at: datetime | None = None
    row_key: str = ""
    etag: str | None = None

    def __post_init__(self) -> None:
        if not self.row_key:
            self.row_key = f"outbox|{self.created_at:%Y%m%dT%H%M%S%f}|{self.id}"
        if self.next_attempt_at is None:
            self.next_attempt_at = self.created_at

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": escape_key(self.partition),
            "RowKey": self.row_key,
            "Type": OUTBOX_TYPE,
            "Change": self.change,
            "RunId": self.run_id,
            "CreatedAt": self.created_at,
            "Payload": dumps_json(self.payload),
            "Status": self.status,
            "Attempts": self.attempts,
            "NextAttemptAt": self.next_attempt_at,
            "LastError": self.last_error[:500],
            "SentAt": self.sent_at.isoformat() if self.sent_at else "",
        }

    @classmethod
    def from_entity(cls, e: Any) -> OutboxItem:
        sent = e.get("SentAt")
        return cls(
            partition=e["PartitionKey"],
            change=e["Change"],
            run_id=e.get("RunId", ""),
            created_at=e["CreatedAt"],
            payload=loads_json(e.get("Payload"), {}),
            id=e["RowKey"].rsplit("|", 1)[-1],
            status=e.get("Status", "pending"),
            attempts=int(e.get("Attempts") or 0),
            next_attempt_at=e.get("NextAttemptAt"),
            last_error=e.get("LastError", ""),
            sent_at=datetime.fromisoformat(sent) if sent else None,
            row_key=e["RowKey"],
            etag=e.metadata.get("etag") if hasattr(e, "metadata") else None,
        )

    def to_json(self) -> dict[str, JSON]:
        p = self.payload
        return {
            "id": self.id,
            "status": self.status,
            "change": self.change,
            "kind": p.get("kind") or self.partition,
            "subject": p.get("device_name") or p.get("policy_name") or p.get("title"),
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat(),
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "last_error": self.last_error or None,
        }


class OutboxRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    async def items(self, status: str | None = None) -> list[OutboxItem]:
        table = await self._store.table(ANOMALIES)
        query = "Type eq 'outbox'" + (f" and Status eq '{status}'" if status else "")
        out = [OutboxItem.from_entity(e) async for e in table.query_entities(query)]
        return sorted(out, key=lambda i: i.row_key)

    async def add(self, item: OutboxItem) -> bool:
        """False when an item with the same row key exists (a message already queued)."""
        table = await self._store.table(ANOMALIES)
        try:
            meta = await table.create_entity(item.to_entity())
        except ResourceExistsError:
            return False
        item.etag = meta.get("etag")
        return True

    async def update(self, item: OutboxItem) -> bool:
        """Store a delivery outcome; False if another dispatcher changed the row first."""
        table = await self._store.table(ANOMALIES)
        try:
            meta = await table.update_entity(
                item.to_entity(),
                mode=UpdateMode.REPLACE,
                etag=item.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            return False
        item.etag = meta.get("etag")
        return True
