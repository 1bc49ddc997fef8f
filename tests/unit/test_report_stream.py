"""The deployment report read as a stream: the download spooled to a temporary file, the one
member of its zip decompressed, decoded and parsed a row at a time, each row let go once it is
a Deployment. Downloads are served from a loopback aiohttp server, so the real client runs."""

from __future__ import annotations

import asyncio
import csv
import io
import struct
import tempfile
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from monitors.graph import reports
from monitors.graph.client import GraphClient
from monitors.graph.errors import MalformedResponse
from monitors.models import DeploymentStatus, Unverified, UnverifiedReason
from tests.helpers import loopback_settings, serving

HEADER = ",".join(reports.DEPLOYMENT_COLUMNS) + ",DeploymentStatus_loc\r\n"


def device_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def report_csv(rows: int, *, name: str = "") -> bytes:
    lines = [HEADER]
    for n in range(rows):
        lines.append(
            f"{device_id(n)},{name or f'PC-{n}'},SN{n},user{n % 97}@contoso.com,"
            f"2026-07-{1 + n % 28:02d} 10:{n % 60:02d}:00.1234567,2,{600 + n % 300},"
            f"Completed,Completed,0,Success\r\n"
        )
    return "".join(lines).encode()


def zipped(content: bytes, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr("AutopilotV2DeploymentStatus.csv", content)
    return buffer.getvalue()


def with_wrong_crc(blob: bytes) -> bytes:
    """The archive with its central directory's CRC-32 changed: every byte of the member
    decompresses, and only the check at its end can find the damage."""
    out = bytearray(blob)
    at = out.rindex(b"PK\x01\x02") + 16
    (crc,) = struct.unpack_from("<I", out, at)
    struct.pack_into("<I", out, at, crc ^ 0xFFFFFFFF)
    return bytes(out)


def test_a_large_csv_export_gives_every_deployment_read_from_a_spooled_file():
    rows = 30_000
    with tempfile.SpooledTemporaryFile(max_size=reports.SPOOL_BYTES) as spool:
        spool.write(zipped(report_csv(rows)))
        spool.seek(0)
        report = reports.parse_deployment_rows(reports.export_rows(spool))
    assert report.rows == rows and len(report.deployments) == rows and not report.malformed
    last = next(d for d in report.deployments.values() if d.managed_device_id == device_id(29_999))
    assert last.device_name == "PC-29999" and last.serial_number == "SN29999"
    assert last.status is DeploymentStatus.SUCCESS and last.status_label == "Success"
    assert last.enrolled_at == datetime(2026, 7, 1 + 29_999 % 28, 10, 29_999 % 60, 0, 123456, UTC)
    assert last.duration_seconds == 600 + 29_999 % 300


def test_rows_come_one_at_a_time_and_a_damage_found_at_the_end_still_makes_it_malformed():
    rows = reports.export_rows(io.BytesIO(with_wrong_crc(zipped(report_csv(5_000)))))
    # The first row is there before the member has been read to its end...
    assert next(rows)["DeviceId"] == device_id(0)
    read = 1
    # ...and the CRC, checked at the end, turns the whole export into MalformedResponse.
    with pytest.raises(MalformedResponse, match="damaged: BadZipFile"):
        for _ in rows:
            read += 1
    assert 1 < read <= 5_000


def test_a_damaged_member_makes_the_deployment_report_malformed_not_partial():
    with pytest.raises(MalformedResponse, match="damaged"):
        reports.parse_deployment_rows(
            reports.export_rows(io.BytesIO(with_wrong_crc(zipped(report_csv(2_000)))))
        )


def test_a_deflate_stream_cut_short_is_malformed():
    blob = zipped(report_csv(3_000))
    start = blob.index(b"AutopilotV2DeploymentStatus.csv") + 31
    # The local header, then the first half of the compressed data, then the directory.
    cut = blob[: start + (blob.rindex(b"PK\x01\x02") - start) // 2]
    with pytest.raises(MalformedResponse):
        reports.parse_export(cut)


def test_a_field_over_the_csv_field_limit_makes_the_export_malformed():
    content = report_csv(3, name="x" * (csv.field_size_limit() + 1))
    with pytest.raises(MalformedResponse, match="unreadable report file: Error"):
        reports.parse_deployment_rows(reports.export_rows(io.BytesIO(zipped(content))))


def test_a_json_member_is_still_read_whole_and_whitespace_before_it_is_skipped():
    body = b" \r\n" * 5000 + b'{"value": [{"DeviceId": "d1", "DeviceName": null}]}'
    rows = reports.parse_export(zipped(body))
    assert rows == [{"DeviceId": "d1", "DeviceName": ""}]


# --- the download, over HTTP ---------------------------------------------------------------

JOB = "AutopilotV2DeploymentStatus_00000000-0000-0000-0000-000000000001"


def serve(
    download: Callable[[], web.StreamResponse],
    call: Callable[[GraphClient, str], Awaitable[Any]],
    *,
    retries: int = 0,
) -> Any:
    """An export job that is complete at once and whose file is ``download``'s answer."""

    async def main() -> Any:
        async def job(request: web.Request) -> web.Response:
            url = f"{request.scheme}://{request.host}/download/report.zip"
            return web.json_response({"id": JOB, "status": "completed", "url": url})

        async def file(_request: web.Request) -> web.StreamResponse:
            return download()

        app = web.Application()
        app.router.add_post("/beta/deviceManagement/reports/exportJobs", job)
        app.router.add_get("/download/report.zip", file)
        async with serving(app) as base:
            settings = loopback_settings(
                base, graph_max_retries=retries, export_timeout_seconds=30.0
            )
            async with GraphClient(settings, retry_budget_seconds=5.0 * retries) as graph:
                return await call(graph, f"{base}/download/report.zip")

    return asyncio.run(main())


def test_a_download_larger_than_the_spool_is_read_through_a_temporary_file():
    blob = zipped(report_csv(40_000), zipfile.ZIP_STORED)
    assert len(blob) > reports.SPOOL_BYTES

    async def scan_report(graph: GraphClient, _url: str) -> Any:
        return await reports.deployment_report(graph), dict(graph.counts)

    report, counts = serve(
        lambda: web.Response(body=blob, content_type="application/zip"), scan_report
    )
    assert not isinstance(report, Unverified)
    assert report.rows == 40_000 and len(report.deployments) == 40_000
    # Counted like every other request: the export's create and its one download.
    assert counts == {
        "POST /beta/deviceManagement/reports/exportJobs": 1,
        "GET /download/report.zip": 1,
    }


def test_a_download_over_the_cap_is_refused_before_it_is_read_whole():
    written = io.BytesIO()

    async def fetch(graph: GraphClient, url: str) -> Any:
        try:
            await graph.download(url, written, max_bytes=200_000)
        except MalformedResponse as exc:
            return exc
        return None

    refused = serve(lambda: web.Response(body=b"\0" * 2_000_000), fetch)
    assert isinstance(refused, MalformedResponse) and "implausibly large" in str(refused)
    assert 0 < len(written.getvalue()) <= 200_000


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, UnverifiedReason.FORBIDDEN), (500, UnverifiedReason.UNAVAILABLE)],
)
def test_a_download_storage_refuses_leaves_the_report_unverified(status, reason):
    async def scan_report(graph: GraphClient, _url: str) -> Any:
        return await reports.deployment_report(graph)

    result = serve(lambda: web.Response(status=status, text="<Error/>"), scan_report)
    assert isinstance(result, Unverified)
    assert result.reason is reason and result.status == status


def test_a_throttled_download_is_retried_like_any_graph_call():
    answers = iter(
        [
            web.Response(status=503, headers={"Retry-After": "0"}),
            web.Response(body=zipped(report_csv(10)), content_type="application/zip"),
        ]
    )

    async def scan_report(graph: GraphClient, _url: str) -> Any:
        return await reports.deployment_report(graph), graph.counts["GET /download/report.zip"]

    report, downloads = serve(lambda: next(answers), scan_report, retries=1)
    assert not isinstance(report, Unverified) and report.rows == 10
    assert downloads == 2


def test_values_repeated_over_the_rows_are_kept_once():
    report = reports.parse_deployment_rows(reports.export_rows(io.BytesIO(zipped(report_csv(200)))))
    first, other = (
        next(d for d in report.deployments.values() if d.managed_device_id == device_id(n))
        for n in (0, 97)
    )
    # user0@ enrolled both; every row says Success, Completed and 0
    assert first.user_principal_name == other.user_principal_name == "user0@contoso.com"
    assert first.user_principal_name is other.user_principal_name
    assert first.status_label is other.status_label and first.phase is other.phase
    assert first.result_code is other.result_code


def test_rows_the_scan_will_not_judge_are_counted_but_not_read():
    rows = list(reports.export_rows(io.BytesIO(zipped(report_csv(60)))))
    rows.append({"DeviceId": "", "EnrollmentTimeInUtc": "2026-07-01 10:00:00"})
    # an old row (2026-07-02, before ``since``, not pending) with an unreadable duration
    rows.append({**rows[1], "DeploymentDurationTimeInSeconds": "not a number"})
    since = datetime(2026, 7, 20, tzinfo=UTC)
    pending = {next(k for k in reports.parse_deployment_rows(rows[:1]).deployments)}

    def wanted(key: str, enrolled: datetime) -> bool:
        return enrolled >= since or key in pending

    report = reports.parse_deployment_rows(rows, wanted)
    everything = reports.parse_deployment_rows(rows)
    assert report.rows == everything.rows == 62
    assert set(report.deployments) == {
        k for k, d in everything.deployments.items() if d.enrolled_at >= since or k in pending
    }
    assert 0 < len(report.deployments) < len(everything.deployments)
    # A row without its identity is reported either way; a bad duration only where it is read.
    assert len(everything.malformed) == 2
    assert [u.detail for u in report.malformed] == [everything.malformed[0].detail]
    assert "DeviceId" in report.malformed[0].detail


def test_rows_read_between_turns_of_the_event_loop_give_the_report_read_at_once():
    rows = list(reports.export_rows(io.BytesIO(zipped(report_csv(2 * reports.ROWS_PER_TURN + 7)))))
    rows.insert(reports.ROWS_PER_TURN + 1, {"DeviceId": "", "EnrollmentTimeInUtc": "x"})
    turns = 0

    async def read() -> reports.DeploymentReport:
        nonlocal turns

        async def count_turns() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        counter = asyncio.ensure_future(count_turns())
        try:
            return await reports._parse_between_turns(iter(rows), None)
        finally:
            counter.cancel()

    between = asyncio.run(read())
    at_once = reports.parse_deployment_rows(rows)
    assert between.rows == at_once.rows == len(rows)
    assert between.deployments == at_once.deployments
    assert [u.detail for u in between.malformed] == [u.detail for u in at_once.malformed]
    # Other work ran while the rows were read: the loop turned between the pieces.
    assert turns >= 2
