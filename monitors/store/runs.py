"""The latest run of each job (PK "job", RK the job name), for /api/health and the CLI.

Written by the job runner only: a start, then either a finish or a failure, each a merge into
the job's one row, so a run that died midway still shows when it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.data.tables import UpdateMode

from monitors.store.tables import RUNS, TableStore, dumps_json, escape_key, loads_json

_PARTITION = "job"


@dataclass(frozen=True)
class JobRun:
    job: str
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_success: datetime | None = None
    last_outcome: str = "running"
    last_error: str = ""
    last_run_id: str = ""
    graph_requests: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    unverified: list[dict[str, Any]] = field(default_factory=list)
    missing_permissions: list[str] = field(default_factory=list)


def _when(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


class RunRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    async def _merge(self, job: str, values: dict[str, Any]) -> None:
        table = await self._store.table(RUNS)
        entity = {"PartitionKey": _PARTITION, "RowKey": escape_key(job), **values}
        await table.upsert_entity(entity, mode=UpdateMode.MERGE)

    async def started(self, job: str, run_id: str, at: datetime) -> None:
        await self._merge(job, {"LastStarted": at, "LastRunId": run_id})

    async def failed(self, job: str, at: datetime, error: str) -> None:
        await self._merge(job, {"LastFinished": at, "LastOutcome": "failed", "LastError": error})

    async def finished(
        self,
        job: str,
        at: datetime,
        outcome: str,
        summary: dict[str, Any],
        unverified: list[dict[str, Any]],
        missing_permissions: list[str],
        graph_requests: int,
    ) -> None:
        values: dict[str, Any] = {
            "LastFinished": at,
            "LastOutcome": outcome,
            "LastError": "",
            "LastSummary": dumps_json(summary),
            "LastUnverified": dumps_json(unverified),
            "MissingPermissions": dumps_json(missing_permissions),
            "GraphRequests": graph_requests,
        }
        if outcome != "failed":
            values["LastSuccess"] = at
        await self._merge(job, values)

    async def all(self) -> dict[str, JobRun]:
        table = await self._store.table(RUNS)
        out: dict[str, JobRun] = {}
        async for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": _PARTITION}):
            out[e["RowKey"]] = JobRun(
                job=e["RowKey"],
                last_started=_when(e.get("LastStarted")),
                last_finished=_when(e.get("LastFinished")),
                last_success=_when(e.get("LastSuccess")),
                last_outcome=e.get("LastOutcome") or "running",
                last_error=e.get("LastError") or "",
                last_run_id=e.get("LastRunId") or "",
                graph_requests=int(e.get("GraphRequests") or 0),
                summary=loads_json(e.get("LastSummary"), {}),
                unverified=loads_json(e.get("LastUnverified"), []),
                missing_permissions=loads_json(e.get("MissingPermissions"), []),
            )
        return out
