"""Thin async wrapper over azure-data-tables: naming, creation, and typed repositories."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from monitors.aio import OwnedResources
from monitors.http import StorageTransport
from monitors.models import Anomaly, Scope, Status, Subject
from monitors.rules.suppression import Suppression, SuppressionScope
from monitors.settings import Settings, SettingsError
from monitors.store import transactions
from monitors.store.remediations import RemediationRepository


class Row(Protocol):
    """A row written beside an anomaly in its transaction: the outbox item announcing it
    (monitors.store.outbox, which builds on this module)."""

    def to_entity(self) -> dict[str, Any]: ...


# What is written beside one anomaly: nothing, one row, or one row per alert channel.
Alerts = Row | Sequence[Row] | None


def _rows(alert: Alerts) -> list[Row]:
    if alert is None:
        return []
    return list(alert) if isinstance(alert, Sequence) else [alert]


def _chunks(group: list[tuple[Anomaly, Alerts]]) -> list[list[tuple[Anomaly, Alerts]]]:
    """Consecutive pairs, each chunk within one transaction's entity limit: an anomaly and its
    alerts (one per channel routed) are never split."""
    chunks: list[list[tuple[Anomaly, Alerts]]] = [[]]
    size = 0
    for pair in group:
        entities = 1 + len(_rows(pair[1]))
        if chunks[-1] and size + entities > BATCH_LIMIT:
            chunks.append([])
            size = 0
        chunks[-1].append(pair)
        size += entities
    return [chunk for chunk in chunks if chunk]


ANOMALIES = "anomalies"
# Entities in one Table transaction (entity group transaction), all of one partition.
BATCH_LIMIT = transactions.MAX_OPERATIONS
RUNS = "runs"
SUPPRESSIONS = "suppressions"


class ConcurrentUpdate(Exception):
    """Another run changed the same record first; the caller re-reads and decides again."""


# What json.dumps(sort_keys=True, default=str) wrote, from orjson at a fifth of the cost (a
# record is encoded once per deployment a scan judges): datetimes and dataclasses still go
# through str, as before.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dumps_json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode()


def loads_json(value: Any, default: Any) -> Any:
    if not isinstance(value, str) or not value:
        return default
    try:
        return orjson.loads(value)
    except json.JSONDecodeError:  # orjson's error is a subclass
        return default


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


_KEY_UNSAFE = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def escape_key(value: str) -> str:
    """Table keys forbid / \\ # ? and control characters (U+0000-U+001F, U+007F-U+009F)."""
    return _KEY_UNSAFE.sub("_", value)


class TableStore(OwnedResources):
    """Owns one TableServiceClient; use as an async context."""

    def __init__(self, settings: Settings, *, credential: Any = None) -> None:
        self.prefix = settings.table_prefix
        self._owned_credential = None
        if settings.storage_connection:
            try:
                self._service = TableServiceClient.from_connection_string(
                    settings.storage_connection, transport=StorageTransport()
                )
            except ValueError:
                # The SDK's message can quote the string, which holds the account key.
                raise SettingsError(
                    ["ETG_STORAGE_CONNECTION is not a usable storage connection string"]
                ) from None
        else:
            if credential is None:
                from azure.identity.aio import DefaultAzureCredential

                credential = self._owned_credential = DefaultAzureCredential()
            assert settings.storage_table_url
            self._service = TableServiceClient(
                endpoint=settings.storage_table_url,
                credential=credential,
                transport=StorageTransport(),
            )
        self._ready: set[str] = set()
        self._clients: dict[str, TableClient] = {}
        self.anomalies = AnomalyRepository(self)
        self.suppressions = SuppressionRepository(self)
        self.leases = LeaseRepository(self)
        self.remediations = RemediationRepository(self)

    async def _close_resource(self) -> None:
        await self._service.close()

    def table_name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def existing_table(self, name: str) -> TableClient:
        """The table's client without creating it: for reads where a missing table means
        nothing stored yet (reading it then raises ResourceNotFoundError)."""
        full = self.table_name(name)
        client = self._clients.get(full)
        if client is None:
            # One client per table for the store's life: building one configures a whole
            # pipeline, a third of the webhook's own work per request when made every time.
            client = self._clients[full] = self._service.get_table_client(full)
        return client

    async def table(self, name: str) -> TableClient:
        full = self.table_name(name)
        if full not in self._ready:
            with contextlib.suppress(ResourceExistsError):
                await self._service.create_table(full)
            self._ready.add(full)
        return self.existing_table(name)


class AnomalyRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    @staticmethod
    def to_entity(anomaly: Anomaly) -> dict[str, Any]:
        s = anomaly.subject
        return {
            "PartitionKey": escape_key(anomaly.kind),
            "RowKey": escape_key(s.key),
            "Type": "anomaly",
            "Kind": anomaly.kind,
            "Status": anomaly.status.value,
            "Scope": s.scope.value,
            "PolicyId": s.policy_id or "",
            "PolicyName": s.policy_name or "",
            "GroupId": s.group_id or "",
            "ManagedDeviceId": s.managed_device_id or "",
            "DeviceName": s.device_name or "",
            "SerialNumber": s.serial_number or "",
            "UserPrincipalName": s.user_principal_name or "",
            "DeploymentKey": s.deployment_key or "",
            "Job": s.job or "",
            "FirstSeen": anomaly.first_seen,
            "LastSeen": anomaly.last_seen,
            "ResolvedAt": anomaly.resolved_at.isoformat() if anomaly.resolved_at else "",
            "Explanation": anomaly.explanation,
            "Fix": anomaly.fix,
            "Evidence": dumps_json(anomaly.evidence),
            "History": dumps_json(anomaly.history),
            "Remediation": dumps_json(anomaly.remediation) if anomaly.remediation else "",
            "AcknowledgedBy": anomaly.acknowledged_by or "",
            "AcknowledgedAt": anomaly.acknowledged_at.isoformat()
            if anomaly.acknowledged_at
            else "",
            "RemindedAt": anomaly.reminded_at.isoformat() if anomaly.reminded_at else "",
        }

    @staticmethod
    def from_entity(entity: dict[str, Any]) -> Anomaly:
        subject = Subject(
            scope=Scope(entity["Scope"]),
            policy_id=entity.get("PolicyId") or None,
            policy_name=entity.get("PolicyName") or None,
            group_id=entity.get("GroupId") or None,
            managed_device_id=entity.get("ManagedDeviceId") or None,
            device_name=entity.get("DeviceName") or None,
            serial_number=entity.get("SerialNumber") or None,
            user_principal_name=entity.get("UserPrincipalName") or None,
            deployment_key=entity.get("DeploymentKey") or None,
            job=entity.get("Job") or None,
        )
        first_seen = _as_datetime(entity.get("FirstSeen"))
        last_seen = _as_datetime(entity.get("LastSeen"))
        assert first_seen and last_seen
        etag = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
        return Anomaly(
            kind=entity["Kind"],
            subject=subject,
            status=Status(entity["Status"]),
            first_seen=first_seen,
            last_seen=last_seen,
            explanation=entity.get("Explanation", ""),
            fix=entity.get("Fix", ""),
            evidence=loads_json(entity.get("Evidence"), {}),
            resolved_at=_as_datetime(entity.get("ResolvedAt")),
            history=loads_json(entity.get("History"), []),
            etag=etag,
            remediation=loads_json(entity.get("Remediation"), None),
            acknowledged_by=entity.get("AcknowledgedBy") or None,
            acknowledged_at=_as_datetime(entity.get("AcknowledgedAt")),
            reminded_at=_as_datetime(entity.get("RemindedAt")),
        )

    async def iter(
        self, kinds: Iterable[str] | None = None, status: Status | None = None
    ) -> AsyncIterator[Anomaly]:
        """Anomalies (never the outbox rows sharing their partitions), optionally narrowed
        server-side to some kinds and one status."""
        table = await self._store.table(ANOMALIES)
        where = "Type eq @type"
        parameters: dict[str, str] = {"type": "anomaly"}
        if kinds is not None:
            names = {f"k{i}": escape_key(k) for i, k in enumerate(kinds)}
            if not names:
                return
            # Spaces around the parentheses: the SDK finds @names by splitting on spaces.
            where += " and ( " + " or ".join(f"PartitionKey eq @{n}" for n in names) + " )"
            parameters.update(names)
        if status is not None:
            where += " and Status eq @status"
            parameters["status"] = status.value
        async for entity in table.query_entities(where, parameters=parameters):
            yield self.from_entity(entity)

    async def by_key(self, kinds: Iterable[str]) -> dict[str, Anomaly]:
        return {a.key: a async for a in self.iter(kinds)}

    async def get(self, kind: str, subject_key: str) -> Anomaly | None:
        """One anomaly by kind and subject key (the console's page of it); None if absent.

        Keys are escaped lossily, so the row found must also carry this exact subject key."""
        table = await self._store.table(ANOMALIES)
        try:
            entity = await table.get_entity(escape_key(kind), escape_key(subject_key))
        except ResourceNotFoundError:
            return None
        if entity.get("Type") != "anomaly":
            return None
        anomaly = self.from_entity(entity)
        return anomaly if anomaly.kind == kind and anomaly.subject.key == subject_key else None

    def _ops(self, anomaly: Anomaly, alert: Alerts) -> list[tuple[Any, ...]]:
        entity = self.to_entity(anomaly)
        if anomaly.etag is None:
            ops: list[tuple[Any, ...]] = [("create", entity)]
        else:
            ops = [
                (
                    "update",
                    entity,
                    {
                        "mode": UpdateMode.REPLACE,
                        "etag": anomaly.etag,
                        "match_condition": MatchConditions.IfNotModified,
                    },
                )
            ]
        ops.extend(("create", row.to_entity()) for row in _rows(alert))
        return ops

    async def save(self, anomaly: Anomaly, alert: Alerts = None) -> None:
        """Create or replace one anomaly, refusing to overwrite a concurrent change.

        ``alert`` (an outbox item, or one per channel) is written in the same transaction:
        all or nothing.
        """
        table = await self._store.table(ANOMALIES)
        ops = self._ops(anomaly, alert)
        try:
            if len(ops) == 1 and anomaly.etag is None:
                meta = await table.create_entity(ops[0][1])
            elif len(ops) == 1:
                meta = await table.update_entity(ops[0][1], **ops[0][2])
            else:
                meta = (await transactions.submit(table, ops))[0]
        except (ResourceExistsError, ResourceModifiedError, TableTransactionError) as exc:
            raise ConcurrentUpdate(anomaly.key) from exc
        anomaly.etag = meta.get("etag")

    async def save_many(self, items: Sequence[tuple[Anomaly, Alerts]]) -> None:
        """Save anomalies with their alerts, each pair atomically, in as few requests as the
        store allows: one transaction holds up to 100 entities of one partition (one kind).

        A transaction fails as a whole. Then its items are saved one by one, which writes
        everything that can be written and names the anomaly that changed underneath."""
        by_kind: dict[str, list[tuple[Anomaly, Alerts]]] = {}
        for anomaly, alert in items:
            by_kind.setdefault(anomaly.kind, []).append((anomaly, alert))
        # Sequential on purpose: chunks are few, and the order of writes stays the order of
        # the transitions, which the crash tests rely on to mean something.
        for group in by_kind.values():
            for chunk in _chunks(group):
                await self._save_chunk(chunk)

    async def _save_chunk(self, chunk: list[tuple[Anomaly, Alerts]]) -> None:
        if len(chunk) == 1:
            await self.save(*chunk[0])
            return
        table = await self._store.table(ANOMALIES)
        ops: list[tuple[Any, ...]] = []
        for anomaly, alert in chunk:
            ops.extend(self._ops(anomaly, alert))
        # A turn of the event loop between building a hundred rows and encoding them (20 ms
        # together held back the Graph answers in flight).
        await asyncio.sleep(0)
        try:
            results = await transactions.submit(table, ops)
        except TableTransactionError:
            for anomaly, alert in chunk:
                await self.save(anomaly, alert)
            return
        position = 0
        for anomaly, alert in chunk:
            anomaly.etag = results[position].get("etag")
            position += 1 + len(_rows(alert))


_SUPPRESSION_PARTITION = "suppression"


class SuppressionRepository:
    """Operator suppressions, PK "suppression", RK the suppression id."""

    def __init__(self, store: TableStore) -> None:
        self._store = store

    async def all(self) -> list[Suppression]:
        table = await self._store.table(SUPPRESSIONS)
        out = []
        async for e in table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": _SUPPRESSION_PARTITION}
        ):
            out.append(
                Suppression(
                    id=e["RowKey"],
                    scope=SuppressionScope(e["Scope"]),
                    value=e["Value"],
                    reason=e["Reason"],
                    created_at=_as_datetime(e.get("CreatedAt")) or datetime.min,
                    expires_at=_as_datetime(e.get("ExpiresAt")),
                    created_by=e.get("CreatedBy") or None,
                )
            )
        return sorted(out, key=lambda s: s.created_at)

    async def add(self, suppression: Suppression) -> None:
        table = await self._store.table(SUPPRESSIONS)
        await table.create_entity(
            {
                "PartitionKey": _SUPPRESSION_PARTITION,
                "RowKey": escape_key(suppression.id),
                "Scope": suppression.scope.value,
                "Value": suppression.value,
                "Reason": suppression.reason,
                "CreatedAt": suppression.created_at,
                "ExpiresAt": suppression.expires_at.isoformat() if suppression.expires_at else "",
                "CreatedBy": suppression.created_by or "",
            }
        )

    async def remove(self, suppression_id: str) -> bool:
        table = await self._store.table(SUPPRESSIONS)
        try:
            await table.get_entity(_SUPPRESSION_PARTITION, escape_key(suppression_id))
        except ResourceNotFoundError:
            return False
        await table.delete_entity(_SUPPRESSION_PARTITION, escape_key(suppression_id))
        return True


class LeaseHeld(Exception):
    """Another run of the same job holds the lease; ``holder`` is its owner, when known."""

    def __init__(self, job: str, holder: str | None = None) -> None:
        super().__init__(job)
        self.job = job
        self.holder = holder


class LeaseRepository:
    """Job leases in the runs table (PK "lease", RK job), taken with ETag optimistic
    concurrency: of two runs started at once, exactly one proceeds."""

    def __init__(self, store: TableStore) -> None:
        self._store = store

    async def acquire(self, job: str, owner: str, now: datetime, ttl_seconds: float) -> str:
        """Take the lease or raise LeaseHeld; returns the etag to release it with."""
        table = await self._store.table(RUNS)
        entity = {
            "PartitionKey": "lease",
            "RowKey": escape_key(job),
            "Owner": owner,
            "ExpiresAt": now + timedelta(seconds=ttl_seconds),
        }
        try:
            current = await table.get_entity("lease", escape_key(job))
        except ResourceNotFoundError:
            try:
                meta = await table.create_entity(entity)
            except ResourceExistsError as exc:
                raise LeaseHeld(job) from exc
            return str(meta.get("etag"))
        expires = current.get("ExpiresAt")
        if current.get("Owner") and isinstance(expires, datetime) and expires > now:
            raise LeaseHeld(job, str(current.get("Owner")))
        try:
            meta = await table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as exc:
            raise LeaseHeld(job) from exc
        return str(meta.get("etag"))

    async def release(self, job: str, owner: str, etag: str) -> None:
        table = await self._store.table(RUNS)
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            await table.update_entity(
                {
                    "PartitionKey": "lease",
                    "RowKey": escape_key(job),
                    "Owner": "",
                    "ReleasedBy": owner,
                },
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
