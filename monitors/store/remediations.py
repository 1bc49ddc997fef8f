"""The remediation log: one row per write the monitor attempted on an Entra group.

Row key ``<anomaly key>|<attempt>``: the row is written with state ``started`` before the write
and updated with its result after it, so a run that died in between leaves a row a rerun finds
(and verifies in Graph before writing again). Partition ``remediation``: the log is small (one
row per anomaly acted on, a few per retry) and is always listed whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from monitors.models import JSON

REMEDIATIONS = "remediations"
_PARTITION = "remediation"
STARTED = "started"


class _Tables(Protocol):
    """What the repository needs of the TableStore (which holds it, so no import back)."""

    async def table(self, name: str) -> TableClient: ...


class LogConflict(Exception):
    """Another run wrote the same attempt first; this run leaves the item to it."""


def _key(value: str) -> str:
    # Table keys forbid / \ # ? and control characters (same rule as the other tables).
    return "".join("_" if ch in "/\\#?" or ord(ch) < 32 else ch for ch in value)


@dataclass
class RemediationEntry:
    anomaly_key: str
    attempt: int
    action: str  # add_member | add_owner
    group_id: str
    object_id: str
    mode: str  # auto | apply (the CLI's --apply)
    started_at: datetime
    why: str
    evidence: dict[str, JSON] = field(default_factory=dict)
    policy_name: str = ""
    device_name: str = ""
    group_name: str = ""
    state: str = STARTED  # started | done | already | verified | forbidden | gone | failed
    finished_at: datetime | None = None
    request_id: str = ""
    client_request_id: str = ""
    detail: str = ""
    etag: str | None = None

    @property
    def row_key(self) -> str:
        return f"{_key(self.anomaly_key)}|{self.attempt:04d}"

    @property
    def interrupted(self) -> bool:
        """Written before the Graph call, never updated after it: the run died in between."""
        return self.state == STARTED

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": _PARTITION,
            "RowKey": self.row_key,
            "AnomalyKey": self.anomaly_key,
            "Attempt": self.attempt,
            "Action": self.action,
            "GroupId": self.group_id,
            "GroupName": self.group_name,
            "ObjectId": self.object_id,
            "Mode": self.mode,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at.isoformat() if self.finished_at else "",
            "Why": self.why[:2000],
            "Evidence": json.dumps(self.evidence, sort_keys=True, default=str)[:30000],
            "PolicyName": self.policy_name,
            "DeviceName": self.device_name,
            "State": self.state,
            "RequestId": self.request_id,
            "ClientRequestId": self.client_request_id,
            "Detail": self.detail[:1000],
        }

    @classmethod
    def from_entity(cls, e: Any) -> RemediationEntry:
        finished = e.get("FinishedAt")
        try:
            evidence = json.loads(e.get("Evidence") or "{}")
        except json.JSONDecodeError:
            evidence = {}
        return cls(
            anomaly_key=e["AnomalyKey"],
            attempt=int(e.get("Attempt") or 0),
            action=e.get("Action", ""),
            group_id=e.get("GroupId", ""),
            object_id=e.get("ObjectId", ""),
            mode=e.get("Mode", ""),
            started_at=e["StartedAt"],
            why=e.get("Why", ""),
            evidence=evidence if isinstance(evidence, dict) else {},
            policy_name=e.get("PolicyName", ""),
            device_name=e.get("DeviceName", ""),
            group_name=e.get("GroupName", ""),
            state=e.get("State") or STARTED,
            finished_at=datetime.fromisoformat(finished) if finished else None,
            request_id=e.get("RequestId", ""),
            client_request_id=e.get("ClientRequestId", ""),
            detail=e.get("Detail", ""),
            etag=e.metadata.get("etag") if hasattr(e, "metadata") else None,
        )

    def to_json(self) -> dict[str, JSON]:
        return {
            "anomaly_key": self.anomaly_key,
            "attempt": self.attempt,
            "action": self.action,
            "group_id": self.group_id,
            "group_name": self.group_name or None,
            "object_id": self.object_id,
            "mode": self.mode,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "state": self.state,
            "request_id": self.request_id or None,
            "client_request_id": self.client_request_id or None,
            "policy_name": self.policy_name or None,
            "device_name": self.device_name or None,
            "why": self.why,
            "detail": self.detail or None,
            "evidence": self.evidence,
        }


class RemediationRepository:
    def __init__(self, store: _Tables) -> None:
        self._store = store

    async def all(self) -> list[RemediationEntry]:
        """Every entry, newest first."""
        table = await self._store.table(REMEDIATIONS)
        entities = table.query_entities("PartitionKey eq @pk", parameters={"pk": _PARTITION})
        out = [RemediationEntry.from_entity(e) async for e in entities]
        return sorted(out, key=lambda r: (r.started_at, r.attempt), reverse=True)

    async def by_anomaly(self) -> dict[str, list[RemediationEntry]]:
        """Each anomaly's entries, oldest attempt first."""
        out: dict[str, list[RemediationEntry]] = {}
        for entry in sorted(await self.all(), key=lambda r: r.attempt):
            out.setdefault(entry.anomaly_key, []).append(entry)
        return out

    async def start(self, entry: RemediationEntry) -> None:
        """Record the attempt before the write; LogConflict when that attempt exists."""
        table = await self._store.table(REMEDIATIONS)
        try:
            meta = await table.create_entity(entry.to_entity())
        except ResourceExistsError as exc:
            raise LogConflict(entry.row_key) from exc
        entry.etag = meta.get("etag")

    async def finish(self, entry: RemediationEntry) -> None:
        """Record the result, conditional on the row as this run wrote or read it."""
        table = await self._store.table(REMEDIATIONS)
        try:
            meta = await table.update_entity(
                entry.to_entity(),
                mode=UpdateMode.REPLACE,
                etag=entry.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as exc:
            raise LogConflict(entry.row_key) from exc
        entry.etag = meta.get("etag")
