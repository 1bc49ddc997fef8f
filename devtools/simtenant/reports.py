"""Intune report exports: the "Autopilot device preparation deployments" report family.

Rows are computed from the scenario at the moment a job completes, written as a
zip holding one CSV (UTF-8 with BOM, every value quoted, as Intune's exports are)
or one JSON file.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devtools.simtenant.odata import GraphError, bad_request, parse_odata_time, split_and
from devtools.simtenant.scenario import DeviceSpec, InstallItem

DEPLOYMENT_REPORT = "AutopilotV2DeploymentStatus"
APP_REPORT = "AutopilotV2DeploymentStatusDetailedAppInfo"
SCRIPT_REPORT = "AutopilotV2DeploymentStatusDetailedScriptInfo"

# The documented columns of each report, which are also what no ``select`` gives:
# memdocs intune/intune-service/fundamentals/reports-export-graph-available-reports.md
REPORT_COLUMNS: dict[str, list[str]] = {
    DEPLOYMENT_REPORT: [
        "DeviceId",
        "DeviceName",
        "SerialNumber",
        "UPN",
        "EnrollmentTimeInUtc",
        "DeploymentStatus",
        "DeploymentDurationTimeInSeconds",
        "CurrentProvisioningPhase",
        "Phase",
        "ResultCode",
    ],
    APP_REPORT: [
        "ApplicationId",
        "ApplicationName",
        "AppType",
        "DeviceId",
        "IsAdminSelected",
        "PolicyInstallStatus",
    ],
    SCRIPT_REPORT: ["DeviceId", "DisplayName", "PolicyId", "PolicyInstallStatus"],
}

DEPLOYMENT_STATUS_CODES = {"In progress": "1", "Success": "2", "Failed": "3"}
# The install status codes are not documented; these values are placeholders
# and consumers are expected to read the _loc label instead.
INSTALL_STATUS_CODES = {"Installed": "1", "Failed": "2", "In progress": "5", "Skipped": "7"}
LOCALIZED_COLUMNS = {
    "DeploymentStatus": {code: label for label, code in DEPLOYMENT_STATUS_CODES.items()},
    "PolicyInstallStatus": {code: label for label, code in INSTALL_STATUS_CODES.items()},
}
LOCALIZATION_TYPES = ("LocalizedValuesAsAdditionalColumn", "ReplaceLocalizableValues")


def report_time(value: datetime) -> str:
    """EnrollmentTimeInUtc as the report writes it: seven fractional digits, no zone."""
    # isoformat, not strftime: the same text (four-digit years) at a third of the cost, for
    # every row of every export.
    return value.replace(tzinfo=None).isoformat(" ", "microseconds") + "0"


def report_shows(device: DeviceSpec, now_ts: float) -> bool:
    """Whether the deployment's row is in the report yet: ``report_delay_s`` after enrollment."""
    return now_ts >= device.enrolled_at.timestamp() + device.report_delay_s


def deployment_state(device: DeviceSpec, now_ts: float) -> tuple[str, float]:
    """The report label for a deployment at ``now_ts`` and its duration so far, as the report
    shows them: ``report_delay_s`` behind the device (UNVERIFIED lag, see ``DeviceSpec``)."""
    seen_ts = now_ts - device.report_delay_s
    elapsed = max(0.0, seen_ts - device.enrolled_at.timestamp())
    deployment = device.deployment
    if deployment.outcome == "in_progress" or elapsed < deployment.duration_s:
        return "In progress", elapsed
    return ("Success" if deployment.outcome == "success" else "Failed"), deployment.duration_s


def deployment_row(device: DeviceSpec, now_ts: float) -> dict[str, str]:
    label, duration = deployment_state(device, now_ts)
    deployment = device.deployment
    if label == "In progress" and deployment.outcome != "in_progress":
        # Mid-flight values for a deployment that will finish later; the final
        # phase numbers only appear once it completes.
        current_phase, phase, result = 2, 2, 0
    else:
        current_phase, phase, result = (
            deployment.current_phase,
            deployment.phase,
            deployment.result_code,
        )
    if label == "In progress":
        result = 0
    return {
        "DeviceId": device.managed_device_id,
        "DeviceName": device.device_name,
        "SerialNumber": device.serial_number,
        "UPN": device.user_principal_name,
        "EnrollmentTimeInUtc": report_time(device.enrolled_at),
        "DeploymentStatus": DEPLOYMENT_STATUS_CODES[label],
        "DeploymentDurationTimeInSeconds": str(int(duration)),
        "CurrentProvisioningPhase": str(current_phase),
        "Phase": str(phase),
        "ResultCode": str(result),
    }


def _install_rows(
    device: DeviceSpec, items: Iterable[InstallItem], now_ts: float, kind: str
) -> list[dict[str, str]]:
    running = deployment_state(device, now_ts)[0] == "In progress"
    rows = []
    for item in items:
        status = item.status
        if running and status in ("Installed", "Failed"):
            status = "In progress"
        # memdocs intune/intune-service/fundamentals/reports-export-graph-available-reports.md
        if kind == "App":
            rows.append(
                {
                    "ApplicationId": item.id,
                    "ApplicationName": item.name,
                    "AppType": "Win32LobApp",
                    "DeviceId": device.managed_device_id,
                    # Every app in the report was selected in the policy by an admin.
                    "IsAdminSelected": "True",
                    "PolicyInstallStatus": INSTALL_STATUS_CODES[status],
                }
            )
        else:
            rows.append(
                {
                    "DeviceId": device.managed_device_id,
                    "DisplayName": item.name,
                    "PolicyId": item.id,
                    "PolicyInstallStatus": INSTALL_STATUS_CODES[status],
                }
            )
    return rows


def report_rows(
    report_name: str, devices: Iterable[DeviceSpec], now_ts: float
) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for device in devices:
        if not report_shows(device, now_ts):
            continue
        if report_name == DEPLOYMENT_REPORT:
            rows.append(deployment_row(device, now_ts))
        elif report_name == APP_REPORT:
            rows.extend(_install_rows(device, device.apps, now_ts, "App"))
        elif report_name == SCRIPT_REPORT:
            rows.extend(_install_rows(device, device.scripts, now_ts, "Script"))
        else:
            raise ValueError(report_name)
    return rows


_TIME_CLAUSE = re.compile(r"^EnrollmentTimeInUtc\s+(ge|gt|le|lt|eq)\s+'?([^']+?)'?$", re.IGNORECASE)
_DEVICE_CLAUSE = re.compile(r"^DeviceId\s+eq\s+'([^']*)'$", re.IGNORECASE)


def device_filter(expression: str | None) -> Callable[[DeviceSpec], bool] | None:
    """A predicate for the export filter, or None when absent or not understood.

    Intune accepts more than this; anything unparseable means "no filter" so the
    export still succeeds with every visible row.
    """
    if not expression or not expression.strip():
        return None
    checks: list[Callable[[DeviceSpec], bool]] = []
    for clause in split_and(expression):
        if match := _TIME_CLAUSE.match(clause):
            op, literal = match.group(1).lower(), match.group(2)
            try:
                bound = parse_odata_time(literal).timestamp()
            except ValueError:
                return None
            checks.append(_time_check(op, bound))
        elif match := _DEVICE_CLAUSE.match(clause):
            checks.append(_device_check(match.group(1)))
        else:
            return None
    return lambda d: all(check(d) for check in checks)


def _device_check(managed_device_id: str) -> Callable[[DeviceSpec], bool]:
    return lambda d: d.managed_device_id == managed_device_id


def _time_check(op: str, bound: float) -> Callable[[DeviceSpec], bool]:
    compare: dict[str, Callable[[float], bool]] = {
        "ge": lambda t: t >= bound,
        "gt": lambda t: t > bound,
        "le": lambda t: t <= bound,
        "lt": lambda t: t < bound,
        "eq": lambda t: t == bound,
    }
    test = compare[op]
    return lambda d: test(d.enrolled_at.timestamp())


def output_columns(report_name: str, select: list[str] | None, localization: str) -> list[str]:
    base = REPORT_COLUMNS[report_name]
    if select:
        lookup = {c.lower(): c for c in base}
        chosen = []
        for name in select:
            column = lookup.get(name.lower())
            if column is None:
                # "Only valid column names relevant to the report you are calling will be
                # accepted": memdocs intune/intune-service/fundamentals/reports-export-graph-apis.md
                raise bad_request(f"Invalid select column '{name}' for report '{report_name}'.")
            chosen.append(column)
    else:
        chosen = list(base)
    if localization == "ReplaceLocalizableValues":
        return chosen
    columns: list[str] = []
    for column in chosen:
        columns.append(column)
        if column in LOCALIZED_COLUMNS:
            columns.append(f"{column}_loc")
    return columns


def shape_rows(
    rows: list[dict[str, str]], columns: list[str], localization: str
) -> list[list[str]]:
    replace = localization == "ReplaceLocalizableValues"
    # Each column's reading decided once, not at every cell of every row.
    plan: list[tuple[str, dict[str, str] | None, str | None]] = []
    for column in columns:
        if column.endswith("_loc"):
            plan.append((column[:-4], LOCALIZED_COLUMNS[column[:-4]], ""))
        elif replace and column in LOCALIZED_COLUMNS:
            plan.append((column, LOCALIZED_COLUMNS[column], None))
        else:
            plan.append((column, None, None))
    return [
        [
            row[source]
            if labels is None
            else labels.get(row[source], row[source] if missing is None else missing)
            for source, labels, missing in plan
        ]
        for row in rows
    ]


def render_csv(columns: list[str], values: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(values)
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")


def render_json(columns: list[str], values: list[list[str]]) -> bytes:
    # Capitalised TotalRowCount / Schema [{Column, PropertyType}] / Values, as Graph's
    # report answers print it (the export layout itself is not shown publicly):
    # microsoft-graph-docs-contrib api-reference/beta/api/cloudpcreport-retrievecloudpcclientappusagereport.md  # noqa: E501
    document = {
        "TotalRowCount": len(values),
        "Schema": [{"Column": c, "PropertyType": "String"} for c in columns],
        "Values": values,
    }
    return json.dumps(document).encode("utf-8")


def zip_bytes(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    # Deflated, as the service's archives are; at the fastest level, which the simulator's
    # export thread, sharing the machine with the client under test, can afford.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


@dataclass(slots=True)
class ExportJob:
    id: str
    report_name: str
    format: str
    select: list[str]
    filter: str
    localization_type: str
    requested_at: datetime
    status: str = "notStarted"
    polls: int = 0
    completed_at: datetime | None = None
    content: bytes | None = field(default=None, repr=False)
    # The archive, built in the background from the moment the job is created.
    prepared: Future[bytes] | None = field(default=None, repr=False)

    def to_graph(self, download_url: str | None) -> dict[str, Any]:
        expiration = self.completed_at + timedelta(hours=1) if self.completed_at else None
        return {
            "id": self.id,
            "reportName": self.report_name,
            "filter": self.filter,
            "select": self.select,
            "format": self.format,
            "snapshotId": None,
            "localizationType": self.localization_type,
            "search": "",
            "status": self.status,
            "url": download_url if self.status == "completed" else None,
            "requestDateTime": self.requested_at.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{self.requested_at.microsecond:06d}0Z",
            "expirationDateTime": (
                expiration.strftime("%Y-%m-%dT%H:%M:%SZ") if expiration else "0001-01-01T00:00:00Z"
            ),
        }


# The report's rows for a report name and an optional device filter.
RowsAt = Callable[[str, Callable[[DeviceSpec], bool] | None], list[dict[str, str]]]


class ExportJobStore:
    """Export jobs and their finished archives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, ExportJob] = {}
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")

    def create(self, body: Any, now: datetime, rows_at: RowsAt | None = None) -> ExportJob:
        """``rows_at``: the rows as of now, to build the archive from while the client polls
        (intune-reporting-devicemanagementexportjob-create.md: the job is queued when it is
        created and runs while it reads notStarted / inProgress). Without it the archive is
        built by the poll that completes the job."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        report_name = body.get("reportName")
        if report_name not in REPORT_COLUMNS:
            raise bad_request(f"Invalid report name '{report_name}'.")
        fmt = str(body.get("format") or "csv").lower()
        if fmt not in ("csv", "json"):
            raise bad_request(f"Invalid format '{body.get('format')}'.")
        select = body.get("select") or []
        if not isinstance(select, list) or not all(isinstance(s, str) for s in select):
            raise bad_request("'select' must be a list of column names.")
        localization = body.get("localizationType") or "LocalizedValuesAsAdditionalColumn"
        if localization not in LOCALIZATION_TYPES:
            raise bad_request(f"Invalid localizationType '{localization}'.")
        output_columns(report_name, select, localization)  # reject bad columns up front
        job = ExportJob(
            id=f"{report_name}_{uuid.uuid4()}",
            report_name=report_name,
            format=fmt,
            select=list(select),
            filter=str(body.get("filter") or ""),
            localization_type=localization,
            requested_at=now,
        )
        if rows_at is not None:
            job.prepared = self._builder.submit(self._archive, job, rows_at)
        with self._lock:
            self._jobs[job.id.lower()] = job
        return job

    @staticmethod
    def _archive(job: ExportJob, rows_at: RowsAt) -> bytes:
        columns = output_columns(job.report_name, job.select, job.localization_type)
        values = shape_rows(
            rows_at(job.report_name, device_filter(job.filter)), columns, job.localization_type
        )
        if job.format == "csv":
            payload = render_csv(columns, values)
        else:
            payload = render_json(columns, values)
        return zip_bytes(f"{job.id}.{job.format}", payload)

    def poll(
        self,
        job_id: str,
        now: datetime,
        *,
        polls_before_ready: int,
        fail: bool,
        rows_at: RowsAt,
    ) -> ExportJob:
        with self._lock:
            job = self._jobs.get(job_id.lower())
            if job is None:
                raise GraphError(404, f"Export job '{job_id}' was not found.", "ResourceNotFound")
            if job.status in ("completed", "failed"):
                return job
            job.polls += 1
            if job.polls <= polls_before_ready:
                job.status = "inProgress"
                return job
            job.completed_at = now
            if fail:
                job.status = "failed"
                return job
            prepared = job.prepared
        # Outside the lock: other jobs' polls are not held up while this one's archive is built.
        content = prepared.result() if prepared is not None else self._archive(job, rows_at)
        with self._lock:
            job.content, job.status = content, "completed"
            return job

    def content(self, job_id: str) -> bytes | None:
        with self._lock:
            job = self._jobs.get(job_id.lower())
            return job.content if job is not None else None
