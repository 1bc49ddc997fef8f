"""Intune report exports (beta): create the job, poll it, download and parse its zip.

The download URL is a pre-signed storage URL: it is fetched without the Graph token and never
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import re
import tempfile
import zipfile
import zlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from monitors.graph import permissions
from monitors.graph.client import GraphClient
from monitors.graph.errors import (
    Endpoint,
    GraphCallError,
    MalformedResponse,
    graph_call,
    single_object,
)
from monitors.models import (
    Deployment,
    DeploymentStatus,
    InstallItem,
    Unverified,
    UnverifiedReason,
    deployment_key,
)
from monitors.retry import finite_number

DEPLOYMENT_REPORT = "AutopilotV2DeploymentStatus"
APP_REPORT = "AutopilotV2DeploymentStatusDetailedAppInfo"
SCRIPT_REPORT = "AutopilotV2DeploymentStatusDetailedScriptInfo"
DEPLOYMENT_COLUMNS = [
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
]
# The detailed reports' columns as reports-export-graph-available-reports.md documents them.
# Intune advises against relying on a report's default columns, so every export names its own.
APP_COLUMNS = [
    "ApplicationId",
    "ApplicationName",
    "AppType",
    "DeviceId",
    "IsAdminSelected",
    "PolicyInstallStatus",
]
SCRIPT_COLUMNS = ["DeviceId", "DisplayName", "PolicyId", "PolicyInstallStatus"]
REPORT_COLUMNS = {
    DEPLOYMENT_REPORT: DEPLOYMENT_COLUMNS,
    APP_REPORT: APP_COLUMNS,
    SCRIPT_REPORT: SCRIPT_COLUMNS,
}
MAX_REPORT_BYTES = 512 * 1024 * 1024
# A download stays in memory up to this size, then goes to a temporary file.
SPOOL_BYTES = 4 * 1024 * 1024
# A deployment longer than a year is a corrupt row, not a slow device.
MAX_DEPLOYMENT_SECONDS = 366 * 24 * 3600


@dataclass(frozen=True, slots=True)
class ExportJob:
    id: str
    status: str  # lower case: unknown, notstarted, inprogress, completed, failed
    url: str | None  # the download, once there is one


def parse_export_job(payload: Any) -> ExportJob:
    """An export job as the create and get answers carry it, bare or wrapped in ``value``."""
    job = single_object(payload, "export job")
    job_id = job.get("id")
    if not isinstance(job_id, str) or not job_id.strip():
        raise MalformedResponse("export job without an id")
    url = job.get("url")
    # Until the file exists the url is null (or, in the reference's example, a placeholder).
    download = url if isinstance(url, str) and url.startswith(("https://", "http://")) else None
    return ExportJob(job_id.strip(), str(job.get("status") or "").lower(), download)


async def export_url(
    graph: GraphClient,
    report_name: str,
    select: Sequence[str] = (),
    *,
    poll_seconds: float = 5.0,
) -> str:
    """Create the export job and poll it until its file can be downloaded: the download URL."""
    timeout_seconds = graph.settings.export_timeout_seconds
    body: dict[str, Any] = {
        "reportName": report_name,
        "format": "csv",
        "localizationType": "LocalizedValuesAsAdditionalColumn",
    }
    columns = list(select) or REPORT_COLUMNS.get(report_name, [])
    if columns:
        body["select"] = columns
    job = parse_export_job(
        await graph.request("POST", graph.beta("deviceManagement/reports/exportJobs"), body)
    )
    url = graph.beta(f"deviceManagement/reports/exportJobs('{job.id}')")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    # Small exports finish in a moment, large ones take minutes: poll soon, then back off.
    delay = 0.1
    while True:
        # A job can read completed a moment before its url is set: that is "poll again".
        download = job.url if job.status == "completed" else None
        if download is not None:
            return download
        if job.status == "failed":
            raise GraphCallError(None, "exportJobFailed", f"report export {report_name} failed")
        if loop.time() >= deadline:
            raise TimeoutError(
                f"report export {report_name} did not complete in {timeout_seconds:.0f} s"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, poll_seconds)
        job = parse_export_job(await graph.get(url))


@contextlib.asynccontextmanager
async def downloaded(graph: GraphClient, url: str) -> AsyncIterator[IO[bytes]]:
    """The export's zip (reports-export-graph-apis.md: the completed job's ``url`` is a zip
    holding the report file), streamed to a temporary file, in memory while small, and
    rewound: a 100,000-row export is never held whole in memory."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        await graph.download(url, spool, max_bytes=MAX_REPORT_BYTES)
        spool.seek(0)
        yield spool


async def export_report(
    graph: GraphClient,
    report_name: str,
    select: Sequence[str] = (),
    *,
    poll_seconds: float = 5.0,
) -> list[dict[str, str]]:
    """Every row of an export, held whole: for the small detailed reports."""
    url = await export_url(graph, report_name, select, poll_seconds=poll_seconds)
    async with downloaded(graph, url) as archive:
        return list(export_rows(archive))


def parse_export(payload: bytes) -> list[dict[str, str]]:
    """Rows of the single file inside the export zip (CSV, or JSON where a tenant sends it)."""
    return list(export_rows(io.BytesIO(payload)))


# What reading a damaged member raises (bad CRC, truncated or unknown compression, encryption):
# an answer we cannot read, not a bug, so the export is unverified this run.
_DAMAGED: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)


def _member_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> io.TextIOWrapper:
    # newline="": csv reads line endings itself, and quoted fields may hold them.
    return io.TextIOWrapper(archive.open(info), encoding="utf-8-sig", errors="replace", newline="")


def _is_json(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether the member's first character other than white space opens a JSON document;
    read a chunk at a time, so a file is never read whole to find out."""
    with _member_text(archive, info) as text:
        while chunk := text.read(8192):
            if head := chunk.lstrip():
                return head.startswith(("{", "["))
    return False


def export_rows(file: IO[bytes]) -> Iterator[dict[str, str]]:
    """Rows of the single file inside the export zip, one at a time: a CSV member is
    decompressed, decoded and parsed as it is read; a JSON one (small) is read whole. A damage
    found part-way raises MalformedResponse after the rows before it: the caller must not
    trust a partial read, which could make a device look absent."""
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise MalformedResponse("report download is not a zip archive") from exc
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise MalformedResponse(f"report zip holds {len(names)} files, expected 1")
        info = archive.getinfo(names[0])
        if info.file_size > MAX_REPORT_BYTES:
            raise MalformedResponse("report file is implausibly large")
        try:
            if names[0].lower().endswith(".json") or _is_json(archive, info):
                with _member_text(archive, info) as text:
                    yield from _json_rows(text.read())
                return
            with _member_text(archive, info) as text:
                yield from _csv_rows(text)
        except MalformedResponse:
            raise
        except (csv.Error, RecursionError, json.JSONDecodeError) as exc:
            # csv refuses fields over its size limit; json refuses nesting beyond the stack.
            raise MalformedResponse(f"unreadable report file: {type(exc).__name__}") from exc
        except _DAMAGED as exc:
            raise MalformedResponse(f"report zip is damaged: {type(exc).__name__}") from exc


def _csv_rows(text: IO[str]) -> Iterator[dict[str, str]]:
    """Rows as csv.DictReader reads them (blank lines skipped, a short row's missing cells
    empty, cells beyond the header dropped), names stripped once for the whole file rather
    than per row: one dict per row is built instead of two."""
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    names = [name.strip() for name in header]
    width = len(names)
    for row in reader:
        if not row:
            continue
        if len(row) < width:
            row += [""] * (width - len(row))
        yield dict(zip(names, row, strict=False))


def _key(data: Mapping[str, Any], name: str) -> Any:
    """A property whatever the case of its name: Intune writes ``Schema``/``Values``, older
    exports ``schema``/``values``."""
    if name in data:
        return data[name]
    lowered = name.lower()
    return next((v for k, v in data.items() if str(k).lower() == lowered), None)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _json_rows(text: str) -> list[dict[str, str]]:
    """Rows of a JSON export: ``{"TotalRowCount", "Schema": [{"Column", "PropertyType"}],
    "Values": [[...]]}`` in any letter case, or ``{"value": [{...}]}``. A row that does not
    match the schema, or fewer rows than the file counts, means the file cannot be trusted:
    reading part of it could make a device look absent."""
    data = json.loads(text)
    if isinstance(data, Mapping):
        schema, values = _key(data, "Schema"), _key(data, "Values")
        if isinstance(schema, list) and isinstance(values, list):
            columns = []
            for entry in schema:
                column = _key(entry, "Column") if isinstance(entry, Mapping) else None
                if not isinstance(column, str) or not column.strip():
                    raise MalformedResponse("report JSON schema entry without a column name")
                columns.append(column.strip())
            rows = []
            for row in values:
                if not isinstance(row, list) or len(row) != len(columns):
                    raise MalformedResponse("report JSON row does not match its schema")
                rows.append({c: _cell(v) for c, v in zip(columns, row, strict=True)})
            total = _key(data, "TotalRowCount")
            if isinstance(total, int) and not isinstance(total, bool) and total > len(rows):
                raise MalformedResponse(f"report JSON holds {len(rows)} of {total} rows")
            return rows
        data = _key(data, "value")
        if data is None:
            data = values
    if not isinstance(data, list):
        raise MalformedResponse("report JSON has no rows")
    if not all(isinstance(row, Mapping) for row in data):
        raise MalformedResponse("report JSON row that is not an object")
    return [{str(k): _cell(v) for k, v in row.items()} for row in data]


_FRACTION = re.compile(
    r"^(?P<head>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?\s*(?P<tz>Z|[+-]\d\d:?\d\d)?$",
    re.IGNORECASE | re.ASCII,
)


# Times outside this range are corrupt data; refusing them keeps every later sum of a time and
# a duration representable (datetime overflows at year 1 and 9999).
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _plain_report_time(text: str) -> datetime | None:
    """The report's own shape, '2026-07-19 15:35:56.3022384', and the audit log's,
    '2026-07-19T15:35:56.3022384Z', read without the regex: every report row holds one or two
    and every audit event one, and this is a third of the general path's cost. None for any
    other shape, which the general path reads."""
    size = len(text)
    if (
        not (size == 27 or (size == 28 and text[27] in "Zz"))
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in " T"
        or text[13] != ":"
        or text[16] != ":"
        or text[19] != "."
        or text[26] not in _DIGITS
    ):
        return None
    try:
        # fromisoformat reads ASCII digits only; the seventh fractional digit is dropped, as
        # the general path drops it.
        parsed = datetime.fromisoformat(text[:26] + "+00:00")
    except ValueError:
        return None
    return parsed if EARLIEST_TIME <= parsed < LATEST_TIME else None


_DIGITS = frozenset("0123456789")


def parse_report_time(value: str) -> datetime:
    """'2026-07-19 15:35:56.3022384' (seven fractional digits, no zone, UTC) and ISO forms."""
    plain = _plain_report_time(value)
    if plain is not None:
        return plain
    text = value.strip().replace("T", " ")
    match = _FRACTION.match(text)
    if not match:
        raise MalformedResponse(f"unreadable report time {value!r}")
    frac = (match.group("frac") or "0")[:6].ljust(6, "0")
    tz = (match.group("tz") or "").upper()
    try:
        # fromisoformat: the regex has fixed the shape, and it is ~40x faster than strptime
        # over the tens of thousands of report rows a scan reads.
        parsed = datetime.fromisoformat(f"{match.group('head')}.{frac}")
    except ValueError as exc:
        raise MalformedResponse(f"unreadable report time {value!r}") from exc
    if not EARLIEST_TIME <= parsed.replace(tzinfo=UTC) < LATEST_TIME:
        raise MalformedResponse(f"report time out of range {value[:40]!r}")
    if tz not in ("", "Z"):
        sign = 1 if tz[0] == "+" else -1
        hours, minutes = int(tz[1:3]), int(tz[-2:])
        parsed -= sign * timedelta(hours=hours, minutes=minutes)
    return parsed.replace(tzinfo=UTC)


_LABELS = {
    "in progress": DeploymentStatus.IN_PROGRESS,
    "inprogress": DeploymentStatus.IN_PROGRESS,
    "success": DeploymentStatus.SUCCESS,
    "succeeded": DeploymentStatus.SUCCESS,
    "completed": DeploymentStatus.SUCCESS,
    "failed": DeploymentStatus.FAILED,
    "failure": DeploymentStatus.FAILED,
}
# Undocumented numeric codes, seen on live tenants: 2 success, 3 failed (1 presumed running).
_CODES = {
    "1": DeploymentStatus.IN_PROGRESS,
    "2": DeploymentStatus.SUCCESS,
    "3": DeploymentStatus.FAILED,
}


def deployment_status(row: Mapping[str, str]) -> tuple[DeploymentStatus, str]:
    label = (row.get("DeploymentStatus_loc") or "").strip()
    if label and label.lower() in _LABELS:
        return _LABELS[label.lower()], label
    code = (row.get("DeploymentStatus") or "").strip()
    if code.lower() in _LABELS:
        return _LABELS[code.lower()], code
    if code in _CODES:
        return _CODES[code], label or code
    return DeploymentStatus.UNKNOWN, label or code


def _opt(row: Mapping[str, str], key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def _shared(value: str | None, seen: dict[str, str] | None) -> str | None:
    """One copy of a value that repeats over the rows (a status, a phase, a user) instead of
    one per row, at 100,000 deployments tens of megabytes; ``seen`` lives as long as one
    parse, so values that do not repeat cost nothing after it."""
    if value is None or seen is None:
        return value
    return seen.setdefault(value, value)


def parse_deployment_row(
    row: Mapping[str, str],
    seen: dict[str, str] | None = None,
    enrolled_at: datetime | None = None,
) -> Deployment:
    """``enrolled_at``: the row's enrollment time when the caller has read it already."""
    device_id = _opt(row, "DeviceId")
    enrolled = _opt(row, "EnrollmentTimeInUtc")
    if not device_id or not enrolled:
        raise MalformedResponse("deployment row without DeviceId or EnrollmentTimeInUtc")
    status, label = deployment_status(row)
    duration_text = _opt(row, "DeploymentDurationTimeInSeconds")
    duration = None
    if duration_text is not None:
        seconds = finite_number(duration_text)
        if seconds is None:
            raise MalformedResponse(f"unreadable duration {duration_text[:40]!r}")
        if not 0 <= seconds <= MAX_DEPLOYMENT_SECONDS:
            raise MalformedResponse(f"deployment duration out of range: {seconds:g} s")
        duration = int(seconds)
    return Deployment(
        managed_device_id=device_id.lower(),
        enrolled_at=enrolled_at or parse_report_time(enrolled),
        status=status,
        status_label=_shared(label, seen) or "",
        device_name=_opt(row, "DeviceName"),
        serial_number=_opt(row, "SerialNumber"),
        user_principal_name=_shared(_opt(row, "UPN") or _opt(row, "UserPrincipalName"), seen),
        duration_seconds=duration,
        result_code=_shared(_opt(row, "ResultCode"), seen),
        phase=_shared(_opt(row, "Phase_loc") or _opt(row, "Phase"), seen),
        current_phase=_shared(
            _opt(row, "CurrentProvisioningPhase_loc") or _opt(row, "CurrentProvisioningPhase"),
            seen,
        ),
    )


def parse_install_rows(
    rows: Sequence[Mapping[str, str]], kind: str
) -> dict[str, list[InstallItem]]:
    """Per managed device id, the app or script rows of the detailed reports, read by the
    documented column names (APP_COLUMNS, SCRIPT_COLUMNS)."""
    out: dict[str, list[InstallItem]] = {}
    name_key, id_key = (
        ("ApplicationName", "ApplicationId")
        if kind == "app"
        else (
            "DisplayName",
            "PolicyId",
        )
    )
    for row in rows:
        device = _opt(row, "DeviceId")
        if not device:
            continue
        status = _opt(row, "PolicyInstallStatus_loc") or _opt(row, "PolicyInstallStatus") or ""
        out.setdefault(device.lower(), []).append(
            InstallItem(
                kind,
                _opt(row, id_key) or "",
                _opt(row, name_key) or _opt(row, id_key) or "?",
                status,
            )
        )
    return out


# A row of the deployment report that cannot be read: named by the report, not an endpoint.
DEPLOYMENT_ROW = Endpoint(f"{DEPLOYMENT_REPORT} row", None)


@dataclass(frozen=True, slots=True)
class DeploymentReport:
    rows: int  # rows in the export, readable or not
    deployments: dict[str, Deployment]  # by deployment key
    malformed: tuple[Unverified, ...]  # one per row that could not be read


# Whether a deployment, by key and enrollment time, is one the caller will judge.
Wanted = Callable[[str, datetime], bool]
# Which ones, once the caller knows: asked when the rows are about to be read.
WantedLater = Callable[[], Awaitable[Wanted | None]]


def _identity(row: Mapping[str, str]) -> tuple[str, datetime]:
    """A row's deployment key and enrollment time: all that deciding whether to read it
    takes."""
    device_id = _opt(row, "DeviceId")
    enrolled = _opt(row, "EnrollmentTimeInUtc")
    if not device_id or not enrolled:
        raise MalformedResponse("deployment row without DeviceId or EnrollmentTimeInUtc")
    at = parse_report_time(enrolled)
    return deployment_key(device_id.lower(), at), at


class _RowParser:
    """Deployments from report rows fed to it in any number of pieces."""

    def __init__(self, wanted: Wanted | None) -> None:
        self.wanted = wanted
        self.out: dict[str, Deployment] = {}
        self.bad: list[Unverified] = []
        self.seen: dict[str, str] = {}
        self.count = 0

    def feed(self, rows: Iterable[Mapping[str, str]]) -> None:
        wanted, out, seen = self.wanted, self.out, self.seen
        for row in rows:
            self.count += 1
            try:
                enrolled_at = None
                if wanted is not None:
                    key, enrolled_at = _identity(row)
                    if not wanted(key, enrolled_at):
                        continue
                deployment = parse_deployment_row(row, seen, enrolled_at)
            except ValueError as exc:  # MalformedResponse included
                self.bad.append(
                    DEPLOYMENT_ROW.unverified(UnverifiedReason.MALFORMED, str(exc)[:200])
                )
                continue
            out[deployment.key] = deployment

    def report(self) -> DeploymentReport:
        return DeploymentReport(self.count, self.out, tuple(self.bad))


def parse_deployment_rows(
    rows: Iterable[Mapping[str, str]], wanted: Wanted | None = None
) -> DeploymentReport:
    """Every readable row as a deployment, each row let go once read; an unreadable row is
    reported, never skipped silently, and does not hide the others. With ``wanted``, rows it
    declines are counted but not read further: an incremental scan judges only the newest of a
    week of rows, and reading every row whole was most of its time."""
    parser = _RowParser(wanted)
    parser.feed(rows)
    return parser.report()


# Report rows read between two turns of the event loop: 100,000 rows read at once held back,
# for seconds, the audit log pages read meanwhile; 2,000 still held them for 30 ms a turn,
# 500 for 10 ms.
ROWS_PER_TURN = 200


async def _parse_between_turns(
    rows: Iterable[Mapping[str, str]], wanted: Wanted | None
) -> DeploymentReport:
    """``parse_deployment_rows``, letting the other reads in flight go on every few rows."""
    parser = _RowParser(wanted)
    pending = iter(rows)
    while piece := list(itertools.islice(pending, ROWS_PER_TURN)):
        parser.feed(piece)
        await asyncio.sleep(0)
    return parser.report()


@graph_call(
    f"POST /beta/deviceManagement/reports/exportJobs ({DEPLOYMENT_REPORT})",
    permissions.REPORT_EXPORT,
)
async def deployment_report(
    graph: GraphClient, wanted: WantedLater | None = None
) -> DeploymentReport:
    """The device preparation deployments Intune reports (AutopilotV2DeploymentStatus), read
    row by row from the download: only the deployments ``wanted`` are kept, never the rows."""
    url = await export_url(graph, DEPLOYMENT_REPORT, DEPLOYMENT_COLUMNS)
    async with downloaded(graph, url) as archive:
        keep = await wanted() if wanted is not None else None
        return await _parse_between_turns(export_rows(archive), keep)


@graph_call("POST exportJobs (detailed app and script reports)", permissions.REPORT_EXPORT)
async def install_items(graph: GraphClient) -> dict[str, tuple[InstallItem, ...]]:
    """Per managed device id, the apps and scripts of its deployment and how each installed."""
    app_rows, script_rows = await asyncio.gather(
        export_report(graph, APP_REPORT), export_report(graph, SCRIPT_REPORT)
    )
    merged: dict[str, list[InstallItem]] = {}
    for source in (parse_install_rows(app_rows, "app"), parse_install_rows(script_rows, "script")):
        for device, items in source.items():
            merged.setdefault(device, []).extend(items)
    return {k: tuple(v) for k, v in merged.items()}
