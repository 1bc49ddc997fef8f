"""Property-based tests over everything that comes from outside: webhook requests, Graph
payloads, report rows. Whatever arrives, the parsers answer with a value or their own
documented error, never a crash, and never accept what they should refuse."""

from __future__ import annotations

import io
import json
import string
import zipfile
from datetime import datetime, timedelta

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from monitors.graph.audit import parse_audit_event
from monitors.graph.devices import parse_managed_device
from monitors.graph.errors import MalformedResponse
from monitors.graph.policies import parse_etg_response, parse_policy
from monitors.graph.reports import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DEPLOYMENT_SECONDS,
    parse_deployment_row,
    parse_export,
    parse_report_time,
)
from monitors.logs import REDACTED, redact_secrets, register_secret
from monitors.models import DeploymentStatus, is_guid
from monitors.notifications.webhook import (
    MAX_TOKEN_CHARS,
    Rejected,
    parse_notifications,
    validation_token,
)

pytestmark = pytest.mark.hostile
STATE = "correct-client-state-0123456789"
SUB = "6f0c2a4e-1b3d-4e5f-8a9b-0c1d2e3f4a5b"
SUBS = [SUB, "0d7a3b5c-9e1f-4a2b-8c6d-5e4f3a2b1c0d", "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b"]
GROUPS = ["19b343bb-8a01-457a-9de5-a8811aafd366", "76886726-9581-4675-9260-8ba953623b53"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=6)
    ),
    max_leaves=30,
)
# Examples per property come from the loaded profile (tests/conftest.py); only the floor is
# set here so the repeatable run stays meaningful.
FAST = settings(max_examples=max(300, settings.default.max_examples))


def webhook_item(state: str | None, subscription: str, group: str) -> dict[str, object]:
    return {
        "subscriptionId": subscription,
        "clientState": state,
        "tenantId": "t",
        "changeType": "updated",
        "resource": f"Groups/{group}",
        "resourceData": {"id": group},
    }


# Bodies that reach the per-item checks as well as bodies refused whole: the real state and
# subscription are drawn often enough that some items are accepted.
webhook_items = (
    st.builds(
        webhook_item,
        st.sampled_from([STATE, STATE, STATE[:-1], STATE + " ", "", None]),
        st.sampled_from([SUB, SUB, SUB.upper(), "0" * 36, "not-a-guid"]),
        st.sampled_from([*GROUPS, "not-a-group"]),
    )
    | json_values
)
webhook_bodies = st.binary(max_size=4096) | st.builds(
    lambda items: json.dumps({"value": items}).encode(), st.lists(webhook_items, max_size=8)
)
JSON_TYPES = ["application/json", "application/json; charset=utf-8"]


@FAST
@given(
    body=webhook_bodies,
    ctype=st.sampled_from([None, "", *JSON_TYPES, "text/plain", "\x00"]),
)
@example(
    body=json.dumps({"value": [webhook_item(STATE, SUB, GROUPS[0])]}).encode(), ctype=JSON_TYPES[1]
)
@example(
    body=json.dumps({"value": [webhook_item(STATE, SUB, GROUPS[0]), 1, None]}).encode(),
    ctype="application/json",
)
def test_webhook_body_is_refused_whole_or_each_item_is_accepted_or_counted_refused(body, ctype):
    try:
        accepted, refused = parse_notifications(
            body, ctype, client_state=STATE, known_subscriptions={SUB}, tenant_id=None
        )
    except Rejected as exc:
        assert exc.status in {400, 403, 413, 415} and len(exc.reason) < 80
        if ctype not in JSON_TYPES:
            assert exc.status == 415
        return
    assert ctype in JSON_TYPES
    items = json.loads(body)["value"]
    without_the_state = [
        i for i in items if not isinstance(i, dict) or i.get("clientState") != STATE
    ]
    # Every item is either accepted (repeats of one item count once) or counted as refused.
    assert 1 <= len(accepted) <= len(items) - refused
    assert refused >= len(without_the_state)


@FAST
@given(
    items=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "subscriptionId",
                    "clientState",
                    "resource",
                    "changeType",
                    "tenantId",
                    "lifecycleEvent",
                    "resourceData",
                    "other",
                ]
            ),
            json_values | st.just(STATE) | st.just(SUB) | st.just("Groups/" + SUB),
        ),
        max_size=8,
    )
)
def test_webhook_accepts_only_items_with_the_exact_client_state_and_known_subscription(items):
    body = json.dumps({"value": items}).encode()
    try:
        accepted, _ = parse_notifications(
            body, "application/json", client_state=STATE, known_subscriptions={SUB}, tenant_id=None
        )
    except Rejected:
        return
    valid = [
        i
        for i in items
        if i.get("clientState") == STATE and str(i.get("subscriptionId", "")).lower() == SUB
    ]
    assert accepted and len(accepted) <= len(valid)
    assert all(n.subscription_id == SUB for n in accepted)


def batch_item(kind, sub, group, n):
    common = {"subscriptionId": sub, "clientState": STATE, "tenantId": "t"}
    if kind == "lifecycle":  # names no resource (concepts/change-notifications-lifecycle-events.md)
        return {
            **common,
            "lifecycleEvent": "reauthorizationRequired",
            "subscriptionExpirationDateTime": str(n),
        }
    return {
        **common,
        "changeType": "updated",
        "resource": f"Groups/{group}",
        "resourceData": {"id": group, "sequenceNumber": n},
    }


@FAST
@given(
    shape=st.lists(
        st.tuples(
            st.sampled_from(["change", "lifecycle"]), st.sampled_from(SUBS), st.sampled_from(GROUPS)
        ),
        min_size=1,
        max_size=40,
    ),
    order=st.randoms(use_true_random=False),
)
def test_webhook_keeps_every_item_of_a_mixed_batch_under_an_id_stable_across_redelivery(
    shape, order
):
    items = [batch_item(kind, sub, group, n) for n, (kind, sub, group) in enumerate(shape)]

    def parse(value):
        accepted, refused = parse_notifications(
            json.dumps({"value": value}).encode(),
            "application/json",
            client_state=STATE,
            known_subscriptions=set(SUBS),
            tenant_id=None,
        )
        assert refused == 0
        return accepted

    accepted = parse(items)
    assert len({n.id for n in accepted}) == len(items)
    for note, (kind, _sub, group) in zip(accepted, shape, strict=True):
        assert note.group_id == (None if kind == "lifecycle" else group)
    # A redelivery, in any order, maps to the same rows.
    shuffled = list(items)
    order.shuffle(shuffled)
    assert sorted(n.id for n in parse(shuffled)) == sorted(n.id for n in accepted)


@FAST
@given(token=st.text(max_size=MAX_TOKEN_CHARS + 50))
def test_validation_token_is_echoed_only_when_printable_and_bounded(token):
    try:
        echoed = validation_token({"validationToken": token})
    except Rejected as exc:
        assert exc.status == 400
        assert not token or len(token) > MAX_TOKEN_CHARS or not token.isprintable()
    else:
        assert echoed == token and token.isprintable()


@FAST
@given(payload=json_values)
def test_etg_response_of_any_shape_is_parsed_or_malformed(payload):
    try:
        lookup = parse_etg_response(payload, "x")
    except MalformedResponse:
        return
    assert all(isinstance(g, str) and g for g in lookup.group_ids)


def items_with(fields: list[str]) -> st.SearchStrategy[dict[str, object]]:
    """Objects whose keys are mostly the fields a parser reads, with values of any shape: keys
    of random text alone would almost never reach past the parser's first check."""
    return st.dictionaries(st.sampled_from(fields) | st.text(max_size=20), json_values, max_size=8)


POLICY_FIELDS = ["id", "name", "settings", "templateReference", "priority", "assignments"]
DEVICE_FIELDS = ["id", "azureADDeviceId", "enrolledDateTime", "deviceName", "value", "@odata.type"]
AUDIT_FIELDS = [
    "id",
    "activityDateTime",
    "activityDisplayName",
    "result",
    "targetResources",
    "initiatedBy",
]
GUID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@FAST
@given(item=items_with(POLICY_FIELDS))
@example(item={"id": "p1", "settings": 5})
def test_policy_items_of_any_shape_parse_or_are_malformed(item):
    try:
        policy = parse_policy(item)
    except MalformedResponse:
        return
    assert policy.id == item["id"] and isinstance(policy.name, str)


@FAST
@given(item=items_with(DEVICE_FIELDS))
@example(item={"id": GUID, "azureADDeviceId": "00000000-0000-0000-0000-000000000000"})
def test_managed_device_items_of_any_shape_parse_or_are_malformed(item):
    try:
        device = parse_managed_device(item)
    except MalformedResponse:
        return
    assert is_guid(device.id) and device.id == device.id.lower()
    assert device.azure_ad_device_id is None or is_guid(device.azure_ad_device_id)


@FAST
@given(item=items_with(AUDIT_FIELDS))
@example(
    item={
        "id": "e1",
        "activityDateTime": "2026-11-20T09:00:00Z",
        "activityDisplayName": "Add member to group",
        "targetResources": [{"type": "Device", "id": GUID}, {"type": "Group", "id": GUID}],
    }
)
def test_audit_items_of_any_shape_give_an_event_none_or_are_malformed(item):
    try:
        event = parse_audit_event(item)
    except MalformedResponse:
        return
    assert event is None or (is_guid(event.group_id) and is_guid(event.device_object_id))


@FAST
@given(
    row=st.dictionaries(
        st.sampled_from(
            [
                "DeviceId",
                "EnrollmentTimeInUtc",
                "DeploymentStatus",
                "DeploymentStatus_loc",
                "DeploymentDurationTimeInSeconds",
                "ResultCode",
                "DeviceName",
                "UPN",
            ]
        ),
        st.text(alphabet=string.printable + "é中\u200b\ufeff", max_size=30)
        | st.sampled_from(["inf", "-Infinity", "nan", "1e400", "9" * 400, "-0", "1_000", "0x10"]),
    )
)
@example(
    row={"DeviceId": "0", "DeploymentDurationTimeInSeconds": "INFINITY", "EnrollmentTimeInUtc": "0"}
)
@example(
    row={"DeviceId": "d", "DeploymentDurationTimeInSeconds": "1e400", "EnrollmentTimeInUtc": "0"}
)
def test_report_rows_in_odd_encodings_parse_or_are_malformed(row):
    try:
        deployment = parse_deployment_row(row)
    except ValueError:  # MalformedResponse is a ValueError
        return
    assert deployment.status in DeploymentStatus
    assert deployment.enrolled_at.utcoffset() == timedelta(0)
    if deployment.duration_seconds is not None:
        # bounded, so the completion time derived from it stays representable
        assert 0 <= deployment.duration_seconds <= MAX_DEPLOYMENT_SECONDS


# Every time format Graph and the report exports use, over the whole datetime range, with and
# without fractions and offsets.
graph_times = st.builds(
    lambda when, fmt, zone: when.strftime(fmt) + zone,
    st.datetimes(),
    st.sampled_from(
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f0", "%Y-%m-%d %H:%M:%S"]
    ),
    st.sampled_from(["", "Z", "z", "+00:00", "+05:30", "-0800", "+14:00", "-12:00"]),
)


@FAST
@given(text=st.text(max_size=40) | graph_times)
@example(text="0001-01-01 00:00:00+05:00")
@example(text="9999-12-31T23:59:59.9999999-05:00")
def test_report_times_parse_to_utc_or_are_malformed(text):
    try:
        parsed = parse_report_time(text)
    except MalformedResponse:
        return
    assert parsed.utcoffset() == timedelta(0)
    # inside the accepted range (give or take a zone offset), which leaves room for any
    # deployment duration and audit window around it
    assert EARLIEST_TIME - timedelta(days=1) < parsed < LATEST_TIME + timedelta(days=1)


# The report's and the audit log's own shapes, with any one character replaced: the shortcut
# that reads them must agree with the general reader (reached through a leading space).
report_shaped = st.builds(
    lambda when, fmt, digit, at, char: (lambda t: t[:at] + char + t[at + 1 :])(
        when.strftime(fmt).replace("#", digit)
    ),
    st.datetimes(),
    st.sampled_from(["%Y-%m-%d %H:%M:%S.%f#", "%Y-%m-%dT%H:%M:%S.%f#Z"]),
    st.sampled_from("0123456789"),
    st.integers(0, 27),
    st.sampled_from(list("0123456789 -:.+TtZz\u0663a")),
)


@FAST
@given(text=report_shaped)
@example(text="2026-07-19 15:35:56.3022384")
@example(text="2026-02-30 15:35:56.3022384")
@example(text="1999-12-31 23:59:59.9999999")
@example(text="2026-07-19 15:35:56.30223\u0663")
@example(text="2026-11-13T08:02:17.9725310Z")
@example(text="2026-11-13T08:02:17.9725310+")
@example(text="2026-11-13t08:02:17.9725310Z")
def test_the_report_shape_reads_as_the_general_reader_reads_it(text):
    def read(value: str) -> datetime | str:
        try:
            return parse_report_time(value)
        except MalformedResponse:
            return "malformed"

    assert read(text) == read(" " + text)


def zipped(name: str, content: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


@FAST
@given(blob=st.binary(max_size=2048) | st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b))
@example(blob=b"")
@example(blob=b"PK\x03\x04")
@example(blob=b"DeviceId,DeviceName\r\nd1,PC-1\r\n")  # a bare CSV, not the documented zip
@example(blob=b'{"value": []}')
def test_report_download_that_is_not_a_zip_is_refused_as_malformed(blob):
    assume(not zipfile.is_zipfile(io.BytesIO(blob)))
    with pytest.raises(MalformedResponse, match="not a zip archive"):
        parse_export(blob)


@FAST
@given(
    content=st.binary(max_size=2048)
    | st.text(alphabet=string.printable + "\x00\r\u2028é", max_size=600).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode()),
    name=st.sampled_from(["report.csv", "report.json", "report"]),
)
@example(content=b"DeviceId\r\n" + b"x" * 200_000 + b"\r\n", name="report.csv")
@example(content=b"[" * 100_000, name="report.json")
@example(content=b'{"schema": [1, null], "values": [[1, 2]]}', name="report.json")
def test_any_report_file_inside_the_zip_gives_rows_or_is_malformed(content, name):
    try:
        rows = parse_export(zipped(name, content))
    except MalformedResponse:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for r in rows for k, v in r.items())


REPORT_ZIP = zipped(
    "AutopilotV2DeploymentStatus.csv",
    b"DeviceId,DeviceName\r\n" + b"".join(b"d%d,PC-%d\r\n" % (n, n) for n in range(40)),
    zipfile.ZIP_DEFLATED,
)


def damaged(blob: bytes, cut: int | None, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(blob[:cut])
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


@FAST
@given(
    cut=st.none() | st.integers(0, len(REPORT_ZIP)),
    edits=st.lists(st.tuples(st.integers(0, len(REPORT_ZIP)), st.integers(0, 255)), max_size=4),
)
@example(cut=None, edits=[(60, 0)])  # inside the deflated data
@example(cut=len(REPORT_ZIP) // 2, edits=[])  # the download cut short
def test_a_damaged_report_zip_gives_rows_or_is_malformed(cut, edits):
    try:
        rows = parse_export(damaged(REPORT_ZIP, cut, edits))
    except MalformedResponse:
        return
    # a damage the archive survives (a timestamp, say) must still give every row
    assert len(rows) == 40 and all(r["DeviceId"] for r in rows)


@FAST
@given(
    secret=st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40),
    noise=st.text(max_size=40),
)
def test_registered_secrets_never_survive_redaction(secret, noise):
    register_secret(secret)
    event = redact_secrets(
        None, "info", {"event": "x", "detail": f"{noise}{secret}{noise}", "nested": [{"v": secret}]}
    )
    assert secret not in json.dumps(event)
    assert REDACTED in event["detail"]
