"""The alert outbox: rows in the anomalies table, written in the same transaction as the
anomaly change they announce (same partition), so an alert is never lost or invented.

Row key ``outbox|<created>|<id>``; property ``Type`` = "outbox" tells them from anomalies.
The weekly summary uses the same outbox under the partition ``_summary``.

Property ``Channel`` says where a row is delivered (teams | pagerduty | webhook): a transition
routed to several channels writes one row each, so each channel's delivery, retries and give-up
are its own. Rows stored before channels existed have none and are Teams rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from monitors.models import JSON, Anomaly, Scope, Subject, anomaly_key
from monitors.store.tables import ANOMALIES, TableStore, dumps_json, escape_key, loads_json

OUTBOX_TYPE = "outbox"
SUMMARY_PARTITION = "_summary"
TEAMS = "teams"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    # Claimed by one dispatcher until ClaimedUntil; an expired claim (its dispatcher died
    # before recording the outcome) is due again.
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass
class OutboxItem:
    partition: str
    change: str  # opened | reopened | unsuppressed | resolved | reminder | summary
    run_id: str
    created_at: datetime
    payload: dict[str, JSON]  # the anomaly (Anomaly.to_json) or a ready card
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str = ""
    sent_at: datetime | None = None
    row_key: str = ""
    etag: str | None = None
    claimed_by: str = ""
    claimed_until: datetime | None = None
    channel: str = TEAMS  # monitors.alerts.routing.Channel

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
            "ClaimedBy": self.claimed_by,
            "ClaimedUntil": self.claimed_until.isoformat() if self.claimed_until else "",
            "Channel": self.channel,
        }

    def due(self, now: datetime) -> bool:
        """Waiting for delivery now: pending and past its back-off, or claimed by a dispatcher
        whose claim has run out."""
        if self.status is OutboxStatus.SENDING:
            return self.claimed_until is None or self.claimed_until <= now
        return self.status is OutboxStatus.PENDING and (
            self.next_attempt_at is None or self.next_attempt_at <= now
        )

    @classmethod
    def from_entity(cls, e: Any) -> OutboxItem:
        sent, claimed_until = e.get("SentAt"), e.get("ClaimedUntil")
        return cls(
            partition=e["PartitionKey"],
            change=e["Change"],
            run_id=e.get("RunId", ""),
            created_at=e["CreatedAt"],
            payload=loads_json(e.get("Payload"), {}),
            id=e["RowKey"].rsplit("|", 1)[-1],
            status=OutboxStatus(e.get("Status") or OutboxStatus.PENDING),
            attempts=int(e.get("Attempts") or 0),
            next_attempt_at=e.get("NextAttemptAt"),
            last_error=e.get("LastError", ""),
            sent_at=datetime.fromisoformat(sent) if sent else None,
            row_key=e["RowKey"],
            etag=e.metadata.get("etag") if hasattr(e, "metadata") else None,
            claimed_by=e.get("ClaimedBy") or "",
            claimed_until=datetime.fromisoformat(claimed_until) if claimed_until else None,
            channel=e.get("Channel") or TEAMS,
        )

    def to_json(self) -> dict[str, JSON]:
        p = self.payload
        return {
            "id": self.id,
            "status": self.status.value,
            "channel": self.channel,
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

    async def items(self, *statuses: OutboxStatus | str) -> list[OutboxItem]:
        """Outbox items in row-key (creation) order, narrowed server-side to some statuses."""
        table = await self._store.table(ANOMALIES)
        names = {f"s{i}": OutboxStatus(status).value for i, status in enumerate(statuses)}
        query = "Type eq @type"
        if names:
            # Spaces around the parentheses: the SDK finds @names by splitting on spaces.
            query += " and ( " + " or ".join(f"Status eq @{n}" for n in names) + " )"
        entities = table.query_entities(query, parameters={"type": OUTBOX_TYPE, **names})
        out = [OutboxItem.from_entity(e) async for e in entities]
        return sorted(out, key=lambda i: i.row_key)

    async def waiting(self) -> list[OutboxItem]:
        """Items not yet delivered or given up: pending, or claimed by a dispatcher."""
        return await self.items(OutboxStatus.PENDING, OutboxStatus.SENDING)

    async def claim(self, item: OutboxItem, owner: str, now: datetime, hold: timedelta) -> bool:
        """Take the item for one delivery attempt, conditional on the ETag it was read with:
        of two dispatchers that read the same item, exactly one claims it."""
        item.status, item.claimed_by, item.claimed_until = OutboxStatus.SENDING, owner, now + hold
        return await self.update(item)

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

    async def refresh_remediation(self, anomaly: Anomaly) -> int:
        """Copy the anomaly's remediation record into its items still pending, so a card that
        has not left yet says what was done. An item a dispatcher claimed meanwhile is left as
        it is (the update is conditional). Returns how many were refreshed."""
        table = await self._store.table(ANOMALIES)
        query = "PartitionKey eq @pk and Type eq @type and Status eq @status"
        parameters = {
            "pk": escape_key(anomaly.kind),
            "type": OUTBOX_TYPE,
            "status": OutboxStatus.PENDING.value,
        }
        refreshed = 0
        async for entity in table.query_entities(query, parameters=parameters):
            item = OutboxItem.from_entity(entity)
            if payload_key(item.payload) != anomaly.key:
                continue
            item.payload = {**item.payload, "remediation": anomaly.remediation}
            refreshed += await self.update(item)
        return refreshed


def payload_key(payload: dict[str, JSON]) -> str | None:
    """The anomaly key of an outbox payload that is an anomaly (Anomaly.to_json)."""
    try:
        scope = Scope(str(payload.get("scope")))
    except ValueError:
        return None

    def text(name: str) -> str | None:
        value = payload.get(name)
        return value if isinstance(value, str) and value else None

    subject = Subject(
        scope,
        policy_id=text("policy_id"),
        managed_device_id=text("managed_device_id"),
        deployment_key=text("deployment_key"),
        job=text("job"),
    )
    return anomaly_key(str(payload.get("kind")), subject.key)
