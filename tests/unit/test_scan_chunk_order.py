"""The order in which a scan takes deployments into chunks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitors.models import Deployment, DeploymentStatus
from monitors.scan.pipeline import CHUNK, TAPER, _in_time_order, chunked
from monitors.store.scan_state import DeploymentRecord

START = datetime(2026, 11, 13, 8, 0, tzinfo=UTC)


def _record(device: str, hours: float) -> DeploymentRecord:
    return DeploymentRecord(
        Deployment(
            managed_device_id=device,
            enrolled_at=START + timedelta(hours=hours),
            status=DeploymentStatus.SUCCESS,
        )
    )


def test_deployments_are_taken_in_enrollment_order_so_chunks_fill_few_hour_partitions() -> None:
    records = {r.key: r for r in (_record(d, h) for d, h in [("c", 5), ("a", 30), ("b", 1)])}
    order = _in_time_order(records)
    assert [records[k].deployment.managed_device_id for k in order] == ["b", "c", "a"]


def test_a_device_enrolled_twice_keeps_its_deployments_together_at_its_first() -> None:
    twice = [_record("z", 2), _record("z", 50)]
    others = [_record("a", 1), _record("m", 3), _record("q", 40)]
    records = {r.key: r for r in [*twice, *others]}
    order = [records[k] for k in _in_time_order(records)]
    assert [(r.deployment.managed_device_id) for r in order] == ["a", "z", "z", "m", "q"]
    assert order[1].deployment.enrolled_at < order[2].deployment.enrolled_at


def test_chunks_keep_every_key_once_in_order_and_taper_to_the_smallest_last() -> None:
    for n in (0, 1, 299, 300, 4500, 4501, 20000, 100000):
        keys = [f"k{i:06d}" for i in range(n)]
        chunks = chunked(keys)
        assert [k for chunk in chunks for k in chunk] == keys
        assert all(0 < len(chunk) <= CHUNK for chunk in chunks)
        if n >= sum(TAPER):
            assert tuple(len(c) for c in chunks[-len(TAPER) :]) == TAPER
    # What is left over from whole chunks and the taper comes first, not at the end.
    assert [len(c) for c in chunked([str(i) for i in range(20000)])] == [
        500,
        *[CHUNK] * 5,
        *TAPER,
    ]
