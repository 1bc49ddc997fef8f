"""Entity group transactions written without azure-core's multipart encoding, against a real
Azurite: what they store, what they answer and how they fail are what the SDK's own
``submit_transaction`` stores, answers and raises."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace as dataclass_replace
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.data.tables import (
    EdmType,
    EntityProperty,
    RequestTooLargeError,
    TableTransactionError,
    UpdateMode,
)
from azure.data.tables.aio import TableClient, TableServiceClient

from monitors.models import Deployment, DeploymentStatus
from monitors.store import transactions
from monitors.store.scan_state import DeploymentRecord, ScanState
from monitors.store.tables import escape_key
from tests.helpers import in_store, settings_for

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
REPLACE = {"mode": UpdateMode.REPLACE}


class Colour(StrEnum):
    RED = "red"


def with_table(azurite: Any, work: Callable[[TableClient], Awaitable[Any]]) -> Any:
    """``work(table)`` on a fresh table of the session's Azurite."""

    async def go() -> Any:
        async with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
            table = await svc.create_table("t" + uuid.uuid4().hex[:12])
            try:
                return await work(table)
            finally:
                await table.delete_table()

    return asyncio.run(go())


async def rows(table: TableClient) -> dict[str, Any]:
    return {e["RowKey"]: e async for e in table.list_entities()}


def every_type(pk: str, rk: str) -> dict[str, Any]:
    return {
        "PartitionKey": pk,
        "RowKey": rk,
        "Text": "plain",
        "Unicode": "Zoë — 東京 ✓ \"quoted\" 'single' \\ back\nline",
        "Empty": "",
        "TextTyped": ("typed", EdmType.STRING),
        "Yes": True,
        "No": False,
        "Small": 7,
        "Negative": -(2**31),
        "Int32Typed": (12, EdmType.INT32),
        "Big": (2**40, EdmType.INT64),
        "BigNegative": (-(2**62), "Edm.Int64"),
        "Float": 1.5,
        "Whole": 2.0,
        "Tiny": 1e-300,
        "NaN": float("nan"),
        "Inf": float("inf"),
        "NegInf": float("-inf"),
        "When": datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
        "WhenOffset": datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
        "WhenWhole": datetime(2024, 1, 1, tzinfo=UTC),
        "WhenEarly": datetime(1601, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "Bytes": b"\x00\x01\xfe\xff",
        "Id": uuid.UUID("0b8f3d8e-7c9a-4b6f-9a51-3c2d1e0f9a8b"),
        "Colour": Colour.RED,
        "Missing": None,
    }


def comparable(entity: Any) -> dict[str, tuple[str, str, str]]:
    """Each property's Python type, EDM type and value, so two rows compare exactly (NaN
    included)."""
    out = {}
    for name, value in entity.items():
        if name == "RowKey":
            continue
        edm = value.edm_type.value if isinstance(value, EntityProperty) else ""
        raw = value.value if isinstance(value, EntityProperty) else value
        shown = "nan" if isinstance(raw, float) and math.isnan(raw) else repr(raw)
        out[name] = (type(value).__name__, edm, shown)
    return out


# --- what is stored -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [("upsert", REPLACE), ("upsert", {"mode": UpdateMode.MERGE}), ("create", None)],
    ids=["upsert-replace", "upsert-merge", "create"],
)
def test_every_property_type_is_stored_as_the_sdks_own_transaction_stores_it(azurite, operation):
    name, options = operation

    def op(entity: dict[str, Any]) -> tuple[Any, ...]:
        return (name, entity) if options is None else (name, entity, options)

    async def work(table: TableClient) -> tuple[Any, Any, list[dict[str, Any]]]:
        await table.submit_transaction([op(every_type("p", "sdk"))])
        answer = await transactions.submit(table, [op(every_type("p", "ours"))])
        return await table.get_entity("p", "sdk"), await table.get_entity("p", "ours"), answer

    theirs, ours, answer = with_table(azurite, work)
    assert comparable(ours) == comparable(theirs)
    assert isinstance(ours["Big"], EntityProperty) and ours["Big"].edm_type is EdmType.INT64
    assert ours["When"] == every_type("p", "x")["When"]
    assert "Missing" not in ours
    assert answer == [{"etag": ours.metadata["etag"]}]


def test_an_update_replaces_or_merges_the_row_as_the_sdk_does(azurite):
    async def work(table: TableClient) -> dict[str, Any]:
        for rk in ("sdk", "ours"):
            await table.create_entity({"PartitionKey": "p", "RowKey": rk, "Kept": 1, "Gone": 2})
        base = {"PartitionKey": "p", "Kept": 10, "New": "n"}
        await table.submit_transaction(
            [("update", {**base, "RowKey": "sdk"}, {"mode": UpdateMode.MERGE})]
        )
        await transactions.submit(
            table, [("update", {**base, "RowKey": "ours"}, {"mode": "merge"})]
        )
        merged = await rows(table)
        await table.submit_transaction([("update", {**base, "RowKey": "sdk"}, REPLACE)])
        await transactions.submit(table, [("update", {**base, "RowKey": "ours"}, REPLACE)])
        return {"merged": merged, "replaced": await rows(table)}

    got = with_table(azurite, work)
    for stage in ("merged", "replaced"):
        assert comparable(got[stage]["ours"]) == comparable(got[stage]["sdk"])
    assert got["merged"]["ours"]["Gone"] == 2 and "Gone" not in got["replaced"]["ours"]


def test_the_etags_answered_are_the_etags_of_the_stored_rows_in_order(azurite):
    async def work(table: TableClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        await table.create_entity({"PartitionKey": "p", "RowKey": "b", "V": 0})
        old = (await table.get_entity("p", "b")).metadata["etag"]
        answer = await transactions.submit(
            table,
            [
                ("create", {"PartitionKey": "p", "RowKey": "c", "V": 1}),
                (
                    "update",
                    {"PartitionKey": "p", "RowKey": "b", "V": 2},
                    {**REPLACE, "etag": old, "match_condition": MatchConditions.IfNotModified},
                ),
                ("upsert", {"PartitionKey": "p", "RowKey": "a", "V": 3}, REPLACE),
            ],
        )
        return answer, await rows(table)

    answer, stored = with_table(azurite, work)
    assert [a["etag"] for a in answer] == [stored[k].metadata["etag"] for k in ("c", "b", "a")]
    assert [stored[k]["V"] for k in ("c", "b", "a")] == [1, 2, 3]


KEYS = [
    "it's",
    "''double''",
    "with space",
    "Zoë 東京 ✓",
    "100% & a+b=c (x)",
    "semi;colon,comma:@$!*~",
    "emoji 😀",
]


def test_keys_with_quotes_spaces_and_unicode_are_written_updated_and_deleted(azurite):
    pk = "part 'é' ✓"

    def row(rk: str, v: int, partition: str = pk) -> dict[str, Any]:
        return {"PartitionKey": partition, "RowKey": rk, "V": v}

    async def work(table: TableClient) -> tuple[dict[str, Any], dict[tuple[str, str], int]]:
        await transactions.submit(table, [("upsert", row(rk, 1), REPLACE) for rk in KEYS])
        written = {rk: await table.get_entity(pk, rk) for rk in KEYS}
        await transactions.submit(
            table,
            [
                *(
                    (
                        "update",
                        row(rk, 2),
                        {
                            **REPLACE,
                            "etag": written[rk].metadata["etag"],
                            "match_condition": MatchConditions.IfNotModified,
                        },
                    )
                    for rk in KEYS
                ),
                *(("create", row(rk + " second", 3)) for rk in KEYS),
            ],
        )
        await transactions.submit(table, [("delete", row(KEYS[0] + " second", 0))])
        for key in KEYS:  # the same keys as partition keys
            await transactions.submit(table, [("upsert", row(key, 4, key), REPLACE)])
        stored = {(e["PartitionKey"], e["RowKey"]): e["V"] async for e in table.list_entities()}
        return written, stored

    written, stored = with_table(azurite, work)
    assert set(written) == set(KEYS)
    assert {rk: v for (p, rk), v in stored.items() if p == pk and v == 2} == dict.fromkeys(KEYS, 2)
    assert {rk for (p, rk), v in stored.items() if v == 3} == {k + " second" for k in KEYS[1:]}
    assert {p for (p, rk), v in stored.items() if v == 4 and p == rk} == set(KEYS)


# --- how it fails -----------------------------------------------------------------------------


async def both_ways(table: TableClient, ops: list[tuple[Any, ...]]) -> list[BaseException]:
    """The exception of the SDK's transaction and of ours, for the same operations."""
    raised: list[BaseException] = []
    for send in (table.submit_transaction, lambda o: transactions.submit(table, o)):
        try:
            await send(ops)
        except Exception as exc:
            raised.append(exc)
        else:
            raise AssertionError("the transaction succeeded")
    return raised


def assert_same_error(theirs: BaseException, ours: BaseException) -> None:
    assert type(ours) is type(theirs)
    for attr in ("status_code", "error_code", "index", "reason"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    # The messages differ only in the request id and time Azurite puts in them.
    assert (
        str(getattr(ours, "message", "")).split("\n")[0]
        == str(getattr(theirs, "message", "")).split("\n")[0]
    )


def test_a_create_of_an_existing_row_fails_the_whole_transaction_naming_it(azurite):
    async def work(table: TableClient) -> tuple[list[BaseException], dict[str, Any]]:
        await table.create_entity({"PartitionKey": "p", "RowKey": "b", "V": "first"})
        ops = [
            ("upsert", {"PartitionKey": "p", "RowKey": "a", "V": "new"}, REPLACE),
            ("create", {"PartitionKey": "p", "RowKey": "b", "V": "new"}),
            ("upsert", {"PartitionKey": "p", "RowKey": "c", "V": "new"}, REPLACE),
        ]
        return await both_ways(table, ops), await rows(table)

    (theirs, ours), stored = with_table(azurite, work)
    assert isinstance(ours, TableTransactionError)
    assert ours.index == 1 and ours.error_code == "EntityAlreadyExists" and ours.status_code == 409
    assert_same_error(theirs, ours)
    assert {k: e["V"] for k, e in stored.items()} == {"b": "first"}  # nothing of it written


def test_a_stale_etag_among_good_upserts_fails_the_transaction_and_writes_nothing(azurite):
    async def work(table: TableClient) -> tuple[list[BaseException], dict[str, Any]]:
        await table.create_entity({"PartitionKey": "p", "RowKey": "x", "V": 0})
        stale = (await table.get_entity("p", "x")).metadata["etag"]
        await table.upsert_entity({"PartitionKey": "p", "RowKey": "x", "V": 1})  # someone else
        condition = {"etag": stale, "match_condition": MatchConditions.IfNotModified}
        ops = [
            *(
                ("upsert", {"PartitionKey": "p", "RowKey": f"u{i}", "V": 2}, REPLACE)
                for i in range(3)
            ),
            ("update", {"PartitionKey": "p", "RowKey": "x", "V": 2}, {**REPLACE, **condition}),
            ("upsert", {"PartitionKey": "p", "RowKey": "u9", "V": 2}, REPLACE),
        ]
        return await both_ways(table, ops), await rows(table)

    (theirs, ours), stored = with_table(azurite, work)
    assert isinstance(ours, TableTransactionError)
    assert ours.index == 3 and ours.error_code == "UpdateConditionNotSatisfied"
    assert_same_error(theirs, ours)
    assert {k: e["V"] for k, e in stored.items()} == {"x": 1}


def test_a_delete_of_a_missing_row_fails_like_the_sdks(azurite):
    async def work(table: TableClient) -> list[BaseException]:
        ops = [
            ("upsert", {"PartitionKey": "p", "RowKey": "a"}, REPLACE),
            ("delete", {"PartitionKey": "p", "RowKey": "gone"}),
        ]
        return await both_ways(table, ops)

    theirs, ours = with_table(azurite, work)
    assert isinstance(ours, TableTransactionError) and ours.error_code == "ResourceNotFound"
    assert_same_error(theirs, ours)


def test_a_transaction_on_a_missing_table_raises_what_the_sdk_raises(azurite):
    async def work() -> list[BaseException]:
        async with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
            table = svc.get_table_client("t" + uuid.uuid4().hex[:12])
            return await both_ways(table, [("upsert", {"PartitionKey": "p", "RowKey": "a"})])

    theirs, ours = asyncio.run(work())
    assert isinstance(ours, TableTransactionError) and ours.error_code == "TableNotFound"
    assert_same_error(theirs, ours)


# --- the limits -------------------------------------------------------------------------------


def test_a_hundred_operations_pass_and_a_hundred_and_one_are_refused_before_sending(azurite):
    def ops(n: int) -> list[tuple[Any, ...]]:
        return [("upsert", {"PartitionKey": "p", "RowKey": f"{i:03}"}, REPLACE) for i in range(n)]

    async def work(table: TableClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await transactions.submit(table, ops(100)), await rows(table)

    async def too_many() -> None:
        async with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
            # A table that does not exist: sent, this would fail with TableNotFound.
            with pytest.raises(ValueError, match="at most 100"):
                await transactions.submit(svc.get_table_client("nosuchtable"), ops(101))

    answer, stored = with_table(azurite, work)
    assert len(answer) == 100 and [a["etag"] for a in answer] == [
        stored[f"{i:03}"].metadata["etag"] for i in range(100)
    ]
    asyncio.run(too_many())


def test_operations_on_two_partitions_are_refused_before_sending(azurite):
    async def work(table: TableClient) -> dict[str, Any]:
        with pytest.raises(ValueError, match="Partition"):
            await transactions.submit(
                table,
                [
                    ("upsert", {"PartitionKey": "p", "RowKey": "a"}, REPLACE),
                    ("upsert", {"PartitionKey": "q", "RowKey": "a"}, REPLACE),
                ],
            )
        return await rows(table)

    assert with_table(azurite, work) == {}


def test_no_operations_send_nothing_and_answer_nothing(azurite):
    async def work() -> list[dict[str, Any]]:
        async with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
            # A table that does not exist: any request would fail.
            return await transactions.submit(svc.get_table_client("nosuchtable"), [])

    assert asyncio.run(work()) == []


def big(n: int) -> list[tuple[Any, ...]]:
    """``n`` entities of 64,000 characters each, in two properties under the 64 KiB limit of
    one property."""
    return [
        ("upsert", {"PartitionKey": "p", "RowKey": f"{i:03}", "X": "x" * 32_000, "Y": "y" * 32_000})
        for i in range(n)
    ]


def test_a_body_over_4_mib_is_refused_by_the_service_and_raised_as_the_sdk_raises_it(azurite):
    async def work(table: TableClient) -> tuple[list[BaseException], dict[str, Any]]:
        return await both_ways(table, big(66)), await rows(table)  # 4.22 MB

    (theirs, ours), stored = with_table(azurite, work)
    # Azurite 3.35.0 answers the whole request 413 RequestBodyTooLarge.
    assert isinstance(ours, RequestTooLargeError)
    assert ours.status_code == 413 and ours.error_code == "RequestBodyTooLarge"
    assert_same_error(theirs, ours)
    assert stored == {}


def test_a_body_just_under_4_mib_is_stored_whole(azurite):
    async def work(table: TableClient) -> dict[str, Any]:
        await transactions.submit(table, big(64))  # 4.11 MB with the multipart around it
        return await rows(table)

    stored = with_table(azurite, work)
    assert len(stored) == 64 and all(len(e["X"] + e["Y"]) == 64_000 for e in stored.values())


# --- the callers ------------------------------------------------------------------------------


@pytest.fixture
def store_settings(azurite, table_prefix):
    # Graph is never called by these tests.
    return settings_for("http://127.0.0.1:9", azurite.connection_string, table_prefix)


def record(n: int, day: int, name: str | None = None) -> DeploymentRecord:
    deployment = Deployment(
        managed_device_id=f"dev-{n}",
        enrolled_at=NOW.replace(day=day) + timedelta(minutes=n),
        status=DeploymentStatus.SUCCESS,
        device_name=name or f"PC-{n}",
        duration_seconds=600,
    )
    return DeploymentRecord(deployment, outcome="on_time", state="concluded", summary="ok")


def test_records_of_many_days_are_all_stored_with_the_columns_read_back(store_settings):
    records = [record(n, 10 + n % 12) for n in range(1300)]  # 12 days, several 100-row chunks

    async def work(store: Any) -> tuple[dict[str, DeploymentRecord], list[Any]]:
        state = ScanState(store)
        await state.save_records(records, NOW)
        found = await state.records_for_days({r.day for r in records})
        return found, await state.summary_rows(NOW.replace(day=1), NOW.replace(day=28))

    found, summary = in_store(store_settings, work)
    assert set(found) == {r.key for r in records}
    assert all(found[r.key].to_json() == r.to_json() for r in records[:50])
    assert all(f.updated_at == NOW for f in found.values())
    assert len(summary) == len(records) and {s.outcome for s in summary} == {"on_time"}
    assert all(s.completed_at == s.enrolled_at + timedelta(seconds=600) for s in summary)


def test_saving_records_raises_a_refused_transaction_after_the_others_finished(store_settings):
    # A device name past the 64 KiB limit of a property makes the service refuse its day.
    good = [record(n, 10 + n % 3) for n in range(30)]
    refused = record(99, 20, name="x" * 70_000)

    async def work(store: Any) -> tuple[BaseException, dict[str, DeploymentRecord], set[Any]]:
        state = ScanState(store)
        with pytest.raises(TableTransactionError) as raised:
            await state.save_records([*good[:15], refused, *good[15:]], NOW)
        running = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        found = await state.records_for_days({r.day for r in good} | {refused.day})
        return raised.value, found, running

    error, found, running = in_store(store_settings, work)
    assert error.error_code == "PropertyValueTooLarge"
    assert running == set()  # nothing left writing behind the error
    assert set(found) == {r.key for r in good}  # the other days, in flight together, landed


def test_pending_replays_one_by_one_when_a_removal_finds_its_row_gone(store_settings):
    a, b, c = (record(n, 12) for n in range(3))

    async def work(store: Any) -> tuple[dict[str, str], dict[str, str]]:
        state = ScanState(store)
        await state.set_pending([a, b], [])
        before = await state.pending()
        # c was never pending: its delete fails the transaction, which is replayed.
        await state.set_pending([c], [a.key, "never_20261112T000000"])
        return before, await state.pending()

    before, after = in_store(store_settings, work)
    assert set(before) == {escape_key(a.key), escape_key(b.key)}
    assert after == {escape_key(b.key): b.day, escape_key(c.key): c.day}


def test_a_failed_anomaly_batch_is_saved_one_by_one(store_settings):
    from monitors.models import Anomaly, Scope, Status, Subject
    from monitors.store.tables import ConcurrentUpdate

    def anomaly(n: int) -> Anomaly:
        subject = Subject(Scope.DEVICE, device_name=f"PC-{n}", deployment_key=f"d{n}_20261120")
        return Anomaly(
            kind="etg_missing",
            subject=subject,
            status=Status.OPEN,
            first_seen=NOW,
            last_seen=NOW,
            explanation="never joined",
            fix="add it",
            evidence={"n": n},
        )

    items = [anomaly(n) for n in range(4)]

    async def work(store: Any) -> tuple[BaseException, dict[str, Any]]:
        await store.anomalies.save(items[1])
        items[1].etag = None  # as if another run created it meanwhile
        with pytest.raises(ConcurrentUpdate) as raised:
            await store.anomalies.save_many([(a, None) for a in items])
        return raised.value, await store.anomalies.by_key(["etg_missing"])

    conflict, stored = in_store(store_settings, work)
    assert items[1].key in str(conflict)
    assert set(stored) == {items[0].key, items[1].key}  # the one before it was saved alone
    assert items[0].etag == stored[items[0].key].etag


# --- hour partitions, and rows stored in day partitions before them ---------------------------


async def _legacy_row(store: Any, r: DeploymentRecord, summary: str = "stored by day") -> None:
    """A row as written before partitions were hours: in its enrollment day's partition."""
    from monitors.store.scan_state import DEPLOYMENTS, _record_entity

    table = await store.table(DEPLOYMENTS)
    entity = _record_entity(r, r.day, NOW)
    entity["Summary"] = summary
    await table.upsert_entity(entity)


async def _partitions(store: Any) -> dict[str, set[str]]:
    from monitors.store.scan_state import DEPLOYMENTS

    table = await store.table(DEPLOYMENTS)
    out: dict[str, set[str]] = {}
    async for e in table.list_entities(select=["PartitionKey", "RowKey"]):
        out.setdefault(e["RowKey"], set()).add(e["PartitionKey"])
    return out


def test_each_record_is_stored_in_the_partition_of_its_enrollment_hour(store_settings):
    records = [record(n, 12) for n in range(0, 240, 7)]  # minutes 0..233: four hours

    async def work(store: Any) -> dict[str, set[str]]:
        await ScanState(store).save_records(records, NOW)
        return await _partitions(store)

    stored = in_store(store_settings, work)
    assert stored == {escape_key(r.key): {f"{r.deployment.enrolled_at:%Y%m%d%H}"} for r in records}
    assert len({p for ps in stored.values() for p in ps}) == 4


def test_a_record_stored_by_day_is_read_and_moves_to_its_hour_when_stored_again(store_settings):
    old, kept = record(1, 12), record(2, 12)

    async def work(store: Any) -> tuple[Any, ...]:
        state = ScanState(store)
        await _legacy_row(store, old)
        await _legacy_row(store, kept)
        by_key = await state.records_by_keys([old.key, kept.key])
        by_day = await state.records_for_days({old.day})
        summary = await state.summary_rows(NOW.replace(day=1), NOW.replace(day=28))
        await state.save_records([by_key[old.key]], NOW)
        return by_key, by_day, summary, await _partitions(store)

    by_key, by_day, summary, stored = in_store(store_settings, work)
    assert set(by_key) == set(by_day) == {old.key, kept.key}
    assert by_key[old.key].summary == "stored by day"
    assert len(summary) == 2
    # Stored again, the record lives in its hour alone; the one not stored again stays put.
    assert stored[escape_key(old.key)] == {f"{old.deployment.enrolled_at:%Y%m%d%H}"}
    assert stored[escape_key(kept.key)] == {old.day}


def test_a_deployment_in_both_a_day_and_an_hour_partition_is_read_once_as_its_hour_row(
    store_settings,
):
    # A crash between storing the hour row and removing the day row leaves both.
    r = record(3, 14)

    async def work(store: Any) -> tuple[Any, ...]:
        state = ScanState(store)
        await _legacy_row(store, dataclass_replace(r, outcome="missing"), summary="older")
        await state.save_records([r], NOW)
        return (
            await state.records_by_keys([r.key]),
            await state.records_for_days({r.day}),
            await state.records_by_keys([f"other_{n}_20261114T000000" for n in range(2001)]),
            await state.summary_rows(NOW.replace(day=1), NOW.replace(day=28)),
        )

    by_key, by_day, none_found, summary = in_store(store_settings, work)
    assert by_key[r.key].summary == by_day[r.key].summary == "ok"
    assert none_found == {}
    assert [s.outcome for s in summary] == ["on_time"]


def test_keys_that_name_no_day_find_nothing_and_raise_nothing(store_settings):
    async def work(store: Any) -> dict[str, DeploymentRecord]:
        await ScanState(store).save_records([record(4, 12)], NOW)
        return await ScanState(store).records_by_keys(["no-time-here", "x_notadayT0000", "'_'"])

    assert in_store(store_settings, work) == {}
