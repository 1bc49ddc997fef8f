"""Microsoft's documented example answers, read by the monitor's own parsers.

The examples (../shared/reference/graph-examples, README there names each source page) carry
placeholders ("id-value", "Target Id value") and vary in casing and wrapping. Each must be read
without a crash and without a fact the answer does not state: a placeholder names no device,
group or join. Reads that go through HTTP are served from a loopback aiohttp server, so the
real functions run, the typed msgraph-sdk ones included.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from monitors.graph import audit, batch, delta, devices, directory, policies, reports
from monitors.graph import subscriptions as subs
from monitors.graph.client import GraphClient
from monitors.graph.errors import GraphCallError, MalformedResponse, single_object
from monitors.models import (
    Group,
    MembershipOp,
    Owner,
    ProvisioningClient,
    Unverified,
    UnverifiedReason,
)
from monitors.notifications.webhook import Rejected, parse_notifications
from tests.helpers import loopback_settings, serving

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "graph-examples"
GRAPH_ROOT = "https://graph.microsoft.com"
GROUP = "0b7c4f43-6d6e-4c8e-9a55-3a1f2a7f9c10"
DEVICE_OBJECT = "6a1d3c44-1f2e-4b7a-8f3c-2d9e0a4b5c61"
PLACEHOLDERS = ("id-value", "Target Id value", "Target value", "Azure ADDevice Id value")


def example(name: str) -> Any:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"Microsoft's example answers are not beside the clone ({name})")
    return json.loads(path.read_text(encoding="utf-8"))


def on(base: str, payload: Any) -> Any:
    """The example with its absolute Graph links pointing at the loopback server."""
    return json.loads(json.dumps(payload).replace(GRAPH_ROOT, base))


Handler = Callable[[web.Request, Any], Any]


class Loopback:
    """A tiny Graph stand-in: (method, path) -> answer, every request recorded."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, Any]] = []
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.seen.append((request.method, request.path_qs, body))
        answer = self.routes.get((request.method, request.path))
        if answer is None:
            return web.json_response(
                {"error": {"code": "Request_ResourceNotFound", "message": "no such route"}},
                status=404,
            )
        if callable(answer):
            answer = answer(request, body)
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="application/zip")
        return web.json_response(on(self.base, answer))

    def sent(self, method: str, fragment: str) -> list[Any]:
        return [b for m, p, b in self.seen if m == method and fragment in p]


def run(routes: dict[tuple[str, str], Any], call: Callable[[GraphClient], Awaitable[Any]]) -> Any:
    server = Loopback(routes)

    async def main() -> Any:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        async with serving(app) as base:
            server.base = base
            settings = loopback_settings(base, graph_max_retries=0, export_timeout_seconds=30.0)
            async with GraphClient(settings, retry_budget_seconds=0.0) as graph:
                return await call(graph)

    _SERVERS[:] = [server]
    return asyncio.run(main())


_SERVERS: list[Loopback] = []


def last_server() -> Loopback:
    return _SERVERS[-1]


def batch_of(*bodies: Any, status: int = 200) -> Handler:
    """A $batch endpoint answering each sub-request with the next body, by the request's id."""

    def answer(_request: web.Request, sent: Any) -> Any:
        return {
            "responses": [
                {"id": r["id"], "status": status, "body": copy.deepcopy(b)}
                for r, b in zip(sent["requests"], bodies, strict=False)
            ]
        }

    return answer


# --- directory audit ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audit-list-1.json", "audit-list-2.json", "audit-get.json"])
def test_audit_examples_hold_no_device_join(name):
    # Example 1 and the get page add a user (Type "User") to a group; example 2 is another
    # activity. None of them is a device joining a group.
    items = example(name)["value"]
    assert items
    assert [audit.parse_audit_event(i) for i in items] == [None] * len(items)


def _with_device(item: dict[str, Any], key: str) -> dict[str, Any]:
    """The example's event with its user target replaced by a device, keeping its casing."""
    event = copy.deepcopy(item)
    event["id"] = "Directory_0f6a2b1c"
    targets = event[key]
    targets[0]["id"] = GROUP
    targets[1] = {
        "id": DEVICE_OBJECT,
        "displayName": "CPC-1",
        "Type": "Device",
        "modifiedProperties": [
            {"displayName": "Group.ObjectID", "oldValue": None, "newValue": f'"{GROUP}"'}
        ],
    }
    return event


@pytest.mark.parametrize(
    "name,key", [("audit-list-1.json", "targetResources"), ("audit-get.json", "targetResource")]
)
def test_audit_target_type_and_list_are_read_whatever_their_spelling(name, key):
    event = audit.parse_audit_event(_with_device(example(name)["value"][0], key))
    assert event is not None
    assert (event.op, event.group_id, event.device_object_id) == (
        MembershipOp.ADD,
        GROUP,
        DEVICE_OBJECT,
    )
    assert event.at == datetime(2018, 1, 9, 21, 20, 2, 721537, tzinfo=UTC)
    assert event.actor == "bob@wingtiptoysonline.com" and not event.by_provisioning_client


def test_audit_device_with_a_placeholder_id_is_no_device():
    item = _with_device(example("audit-list-1.json")["value"][0], "targetResources")
    item["targetResources"][1]["id"] = "id-value"
    assert audit.parse_audit_event(item) is None


# --- managed devices ------------------------------------------------------------------------

MANAGED_ID = "705c034c-034c-705c-4c03-5c704c035c70"


def test_managed_device_list_example_has_no_entra_id_to_look_up():
    (item,) = example("managed-list.json")["value"]
    device = devices.parse_managed_device(item)
    assert device.id == MANAGED_ID
    # "Azure ADDevice Id value" is a placeholder: the Entra id is unknown, not that string.
    assert device.azure_ad_device_id is None
    assert device.enrolled_at == datetime(2017, 1, 1, 7, 59, 43, 797191, tzinfo=UTC)
    assert device.enrollment_profile_name is None


@pytest.mark.parametrize("wrapped", [False, True])
def test_managed_device_get_is_read_bare_or_wrapped_in_value(wrapped):
    (item,) = example("managed-list.json")["value"]
    item = {**item, "azureADDeviceId": "4c299165-6e8f-4b45-a5ba-c5d250a707ff"}
    body = (
        {"@odata.context": f"{GRAPH_ROOT}/v1.0/$metadata#deviceManagement/managedDevices/$entity"}
        | {"value": item}
        if wrapped
        else item
    )
    found = run(
        {("POST", "/v1.0/$batch"): batch_of(body)},
        lambda g: devices.managed_devices_by_id(g, [MANAGED_ID]),
    )
    assert list(found) == [MANAGED_ID]
    assert found[MANAGED_ID].azure_ad_device_id == "4c299165-6e8f-4b45-a5ba-c5d250a707ff"


def test_managed_device_get_answered_with_a_collection_is_malformed():
    listing = example("managed-list.json")
    answer = run(
        {("POST", "/v1.0/$batch"): batch_of(listing)},
        lambda g: devices.managed_devices_by_id(g, [MANAGED_ID]),
    )
    assert answer == Unverified(
        "GET /v1.0/deviceManagement/managedDevices/{id}",
        UnverifiedReason.MALFORMED,
        "managed device: a collection where one object was expected",
    )
    with pytest.raises(MalformedResponse):
        run(
            {("POST", "/v1.0/$batch"): batch_of(listing)},
            lambda g: devices.managed_devices_by_id.fetch(g, [MANAGED_ID]),
        )


# --- Entra devices and membership checks ----------------------------------------------------


def test_device_list_example_placeholder_id_is_not_an_entra_object():
    answer = example("device-list.json")
    found = run(
        {("POST", "/v1.0/$batch"): batch_of(answer)},
        lambda g: devices.entra_object_ids(g, ["4c299165-6e8f-4b45-a5ba-c5d250a707ff"]),
    )
    assert isinstance(found, Unverified) and found.reason is UnverifiedReason.MALFORMED
    assert found.source == devices.entra_object_ids.source
    assert "deviceId" in found.detail


def test_check_member_groups_example_gives_the_groups_it_lists():
    asked = example("cmg-1-req.json")
    answer = example("cmg-1.json")
    found = run(
        {("POST", "/v1.0/$batch"): batch_of(answer)},
        lambda g: devices.member_groups(g, {DEVICE_OBJECT: asked}),
    )
    assert found == {DEVICE_OBJECT: set(answer["value"])}
    assert "bd7c6263-4dd5-4ae8-8c96-556e1c0bece6" not in found[DEVICE_OBJECT]
    (sent,) = last_server().sent("POST", "$batch")
    (request,) = sent["requests"]
    assert request["headers"] == {"Content-Type": "application/json"}
    assert sorted(request["body"]["groupIds"]) == sorted(asked)


# --- group delta ----------------------------------------------------------------------------


def _delta(first: Any, then: Any) -> Handler:
    def answer(request: web.Request, _body: Any) -> Any:
        return then if "$skiptoken" in request.query or "$deltatoken" in request.query else first

    return answer


def test_group_delta_example_pages_hold_no_device_change():
    # Response 1 pages on to the final page; its members are users of a group without an id.
    first, final = example("group-delta-1.json"), example("dq-final.json")
    result = run(
        {("GET", "/v1.0/groups/delta"): _delta(first, final)},
        lambda g: delta.member_delta(g, GROUP, None),
    )
    assert result.changes == [] and result.full_sync
    assert result.delta_link is not None and result.delta_link.endswith(
        final["@odata.deltaLink"].split("?", 1)[1]
    )
    assert len(last_server().seen) == 2


@pytest.mark.parametrize(
    "name,group",
    [
        ("dq-changes.json", "2e5807ce-58f3-4a94-9b37-ffff2e085957"),
        ("dq-empty.json", GROUP),
        ("dq-final.json", "bed7f0d4-750e-4e7e-ffff-169002d06fc9"),
    ],
)
def test_delta_query_examples_give_no_device_change_and_keep_the_delta_link(name, group):
    page = example(name)

    async def call(graph: GraphClient) -> Any:
        link = graph.v1("groups/delta", **{"$deltatoken": "saved"})
        return await delta.member_delta(graph, group, link)

    result = run({("GET", "/v1.0/groups/delta"): _delta(page, page)}, call)
    # dq-changes adds and removes users: the monitor tracks devices only.
    assert result.changes == [] and not result.full_sync
    assert result.delta_link == on(last_server().base, page)["@odata.deltaLink"]


# --- groups, owners, service principals (typed msgraph-sdk) --------------------------------


def test_group_get_example_through_the_sdk():
    answer = example("group-get.json")
    group_id = answer["id"]
    group = run(
        {("GET", f"/v1.0/groups/{group_id}"): answer},
        lambda g: directory.read_group(g, group_id),
    )
    assert group == Group(
        id=group_id,
        display_name="HR Taskforce",
        security_enabled=False,
        mail_enabled=True,
        group_types=("Unified",),
        is_assignable_to_role=False,
        membership_rule=None,
    )


def test_owners_example_through_the_sdk_lists_users_only():
    answer = example("owners.json")
    owners = run(
        {("GET", f"/v1.0/groups/{GROUP}/owners"): answer},
        lambda g: directory.read_owners(g, GROUP),
    )
    assert owners == tuple(
        Owner(o["id"], "#microsoft.graph.user", o["displayName"], None) for o in answer["value"]
    )


def test_service_principal_list_example_is_not_the_provisioning_client():
    answer = example("sp-list.json")
    found = run(
        {("GET", "/v1.0/servicePrincipals"): answer},
        directory.find_provisioning_client,
    )
    assert found == ProvisioningClient(object_id=None)


# --- device preparation policies and their ETG ----------------------------------------------


def test_policy_list_example_is_not_a_device_preparation_policy():
    answer = example("policy-list.json")
    (item,) = answer["value"]
    assert not policies.is_device_preparation(item)
    policy = policies.parse_policy(item)
    assert (policy.id, policy.timeout_minutes, policy.allowed_app_ids) == (
        "3ffd7cd0-7cd0-3ffd-d07c-fd3fd07cfd3f",
        None,
        (),
    )
    found = run(
        {("GET", "/beta/deviceManagement/configurationPolicies"): answer},
        policies.list_device_preparation_policies,
    )
    assert found == []


def test_etg_action_example_placeholder_target_is_no_group():
    with pytest.raises(MalformedResponse):
        policies.parse_etg_response(example("etg.json"), policies.ETG_ACTION)


def test_jit_action_example_placeholder_target_is_no_group():
    with pytest.raises(MalformedResponse):
        policies.parse_etg_response(example("jit.json"), policies.JIT_ACTION)


@pytest.mark.parametrize("name", ["etg.json", "jit.json"])
def test_etg_action_examples_with_a_real_group_id_name_that_group(name):
    text = json.dumps(example(name))
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, GROUP)
    lookup = policies.parse_etg_response(json.loads(text), "x")
    assert lookup.group_ids == (GROUP,)
    # validationSucceeded true: the error code beside it is not a validation failure.
    assert lookup.validation_errors == ()


# --- report exports -------------------------------------------------------------------------


def _wrapped(job: dict[str, Any]) -> dict[str, Any]:
    context = f"{GRAPH_ROOT}/beta/$metadata#deviceManagement/reports/exportJobs/$entity"
    return {"@odata.context": context, "value": job}


@pytest.mark.parametrize("wrap", [False, True])
def test_export_create_example_bare_or_wrapped(wrap):
    job = example("export-create.json")
    parsed = reports.parse_export_job(_wrapped(job) if wrap else job)
    # "Url value" is a placeholder, not a download.
    assert parsed == reports.ExportJob("9ddfb995-b995-9ddf-95b9-df9d95b9df9d", "notstarted", None)


def test_memdocs_export_create_example():
    parsed = reports.parse_export_job(example("mem-create.json"))
    assert parsed == reports.ExportJob(
        "Devices_05e62361-783b-4cec-b635-0aed0ecf14a3", "notstarted", None
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"value": [{"id": "a", "status": "completed"}]},
        {"value": "a"},
        {"status": "completed"},
        ["x"],
        None,
    ],
)
def test_export_job_answer_that_names_no_single_job_is_malformed(payload):
    with pytest.raises(MalformedResponse):
        reports.parse_export_job(payload)


def _zip(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


APP_ROWS = {
    "TotalRowCount": 2,
    "Schema": [{"Column": c, "PropertyType": "String"} for c in reports.APP_COLUMNS]
    + [{"Column": "PolicyInstallStatus_loc", "PropertyType": "String"}],
    "Values": [
        [
            "c6228d3a-59fc-4df0-be41-eb37f322a966",
            "Microsoft 365 Apps for Windows 10 and later",
            "OfficeSuiteApp",
            MANAGED_ID,
            True,
            "2",
            "Installed",
        ],
        ["8d1e0f5a-0c36-4b47-9d3b-0f3c5b1f8a20", "VPN", "Win32LobApp", MANAGED_ID, True, "4", ""],
    ],
}


def test_export_whose_poll_is_wrapped_completes_and_asks_for_the_documented_columns():
    created = example("mem-create.json")
    job_path = f"/beta/deviceManagement/reports/exportJobs('{created['id']}')"
    polls = iter(
        [
            # completed a moment before the url is set: poll again
            _wrapped({**created, "status": "completed", "url": None}),
            _wrapped({**created, "status": "completed", "url": f"{GRAPH_ROOT}/download/r.zip"}),
        ]
    )
    routes = {
        ("POST", "/beta/deviceManagement/reports/exportJobs"): created,
        ("GET", job_path): lambda _r, _b: next(polls),
        ("GET", "/download/r.zip"): _zip("r.json", json.dumps(APP_ROWS).encode()),
    }
    rows = run(routes, lambda g: reports.export_report(g, reports.APP_REPORT, poll_seconds=0.2))
    (sent,) = last_server().sent("POST", "exportJobs")
    assert sent["reportName"] == reports.APP_REPORT
    assert sent["select"] == [
        "ApplicationId",
        "ApplicationName",
        "AppType",
        "DeviceId",
        "IsAdminSelected",
        "PolicyInstallStatus",
    ]
    assert len(last_server().sent("GET", "exportJobs")) == 2
    items = reports.parse_install_rows(rows, "app")[MANAGED_ID]
    assert [(i.id, i.name, i.status) for i in items] == [
        (
            "c6228d3a-59fc-4df0-be41-eb37f322a966",
            "Microsoft 365 Apps for Windows 10 and later",
            "Installed",
        ),
        ("8d1e0f5a-0c36-4b47-9d3b-0f3c5b1f8a20", "VPN", "4"),
    ]


def test_script_report_asks_for_and_reads_the_documented_columns():
    assert reports.REPORT_COLUMNS[reports.SCRIPT_REPORT] == [
        "DeviceId",
        "DisplayName",
        "PolicyId",
        "PolicyInstallStatus",
    ]
    row = {
        "DeviceId": MANAGED_ID.upper(),
        "DisplayName": "Set time zone",
        "PolicyId": "5e0c1d2b-9a8f-4c3e-b1d0-7f6a5e4d3c2b",
        "PolicyInstallStatus": "3",
        "PolicyInstallStatus_loc": "Failed",
    }
    (item,) = reports.parse_install_rows([row], "script")[MANAGED_ID]
    assert (item.kind, item.id, item.name, item.status) == (
        "script",
        "5e0c1d2b-9a8f-4c3e-b1d0-7f6a5e4d3c2b",
        "Set time zone",
        "Failed",
    )


def _cased(data: Any, case: Callable[[str], str]) -> Any:
    if isinstance(data, dict):
        return {case(k): _cased(v, case) for k, v in data.items()}
    if isinstance(data, list):
        return [_cased(v, case) for v in data]
    return data


@pytest.mark.parametrize(
    "case", [lambda k: k, lambda k: k[0].lower() + k[1:], str.lower, str.upper]
)
def test_json_export_is_read_whatever_the_case_of_its_keys(case):
    rows = reports.parse_export(_zip("r.json", json.dumps(_cased(APP_ROWS, case)).encode()))
    assert [r["ApplicationName"] for r in rows] == [
        "Microsoft 365 Apps for Windows 10 and later",
        "VPN",
    ]
    assert rows[0]["IsAdminSelected"] == "True" and rows[1]["PolicyInstallStatus_loc"] == ""


@pytest.mark.parametrize(
    "broken",
    [
        {**APP_ROWS, "TotalRowCount": 3},  # a row is missing
        {**APP_ROWS, "Values": [APP_ROWS["Values"][0][:-1]]},  # a row short of the schema
        {**APP_ROWS, "Values": ["not a row"]},
        {**APP_ROWS, "Schema": [{"PropertyType": "String"}]},
    ],
)
def test_json_export_that_does_not_add_up_is_malformed(broken):
    with pytest.raises(MalformedResponse):
        reports.parse_export(_zip("r.json", json.dumps(broken).encode()))


# --- subscriptions and notifications --------------------------------------------------------


def test_subscription_create_example_names_no_group():
    answer = example("sub-create.json")
    created = run(
        {("POST", "/v1.0/subscriptions"): answer},
        lambda g: subs.create_subscription(
            g, GROUP, "https://example.invalid/api/notify", "state", datetime.now(UTC)
        ),
    )
    assert created.id == "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
    assert created.resource == "me/mailFolders('Inbox')/messages"
    assert created.group_id is None
    assert created.expires_at == datetime(2016, 11, 20, 18, 23, 45, 935691, tzinfo=UTC)


SUBSCRIPTION = "3d4c5b6a-7e8f-4a1b-9c2d-0e1f2a3b4c5d"


def _notify(payload: Any, state: str, known: set[str]) -> Any:
    return parse_notifications(
        json.dumps(payload).encode(),
        "application/json",
        client_state=state,
        known_subscriptions=known,
        tenant_id=None,
    )


def test_change_notification_example_is_refused():
    payload = example("change-notification.json")
    with pytest.raises(Rejected) as placeholder:
        _notify(payload, "secretClientValue", {SUBSCRIPTION})
    assert placeholder.value.status == 403
    # With a real, known subscription id it is still a message, not one of the monitor's groups.
    payload["value"][0]["subscriptionId"] = SUBSCRIPTION
    with pytest.raises(Rejected) as message:
        _notify(payload, "secretClientValue", {SUBSCRIPTION})
    assert message.value.status == 403


def test_lifecycle_example_placeholders_are_refused_and_its_filled_form_accepted():
    payload = example("lifecycle.json")
    with pytest.raises(Rejected) as placeholder:
        _notify(payload, "<secretClientState>", {SUBSCRIPTION})
    assert placeholder.value.status == 403
    item = payload["value"][0]
    item["subscriptionId"] = SUBSCRIPTION
    item["lifecycleEvent"] = "reauthorizationRequired"
    accepted, refused = _notify(payload, "<secretClientState>", {SUBSCRIPTION})
    assert refused == 0
    (note,) = accepted
    assert (note.subscription_id, note.lifecycle_event, note.group_id) == (
        SUBSCRIPTION,
        "reauthorizationRequired",
        None,
    )


# --- $batch ---------------------------------------------------------------------------------


def test_batch_example_answers_are_matched_by_id_and_failures_kept():
    answer = example("batch.json")
    items = [batch.BatchItem("GET", f"/users/{n}") for n in range(6)]
    results = run({("POST", "/v1.0/$batch"): answer}, lambda g: batch.send_batch(g, items))
    # The example answers ids 1-5; request 0 got no answer, which is not a success.
    assert [r.status for r in results] == [599, 200, 403, 403, 405, 200]
    assert results[1].json()["value"][0]["displayName"] == "User Administrator"
    with pytest.raises(GraphCallError) as denied:
        results[3].json()
    assert (denied.value.status, denied.value.code) == (403, "Authorization_RequestDenied")
    with pytest.raises(GraphCallError):
        results[0].json()


def test_batch_write_sub_requests_carry_a_body_and_content_type():
    items = [
        batch.BatchItem("GET", "/devices?$select=id"),
        batch.BatchItem("POST", "/deviceManagement/configurationPolicies('p')/retrieveX"),
        batch.BatchItem("PATCH", "/subscriptions/s", {"expirationDateTime": "2030-01-01T00:00Z"}),
        batch.BatchItem("put", "/x/y"),
        batch.BatchItem("DELETE", "/subscriptions/s"),
    ]
    answer = {"responses": [{"id": str(n), "status": 204} for n in range(len(items))]}
    run({("POST", "/beta/$batch"): answer}, lambda g: batch.send_batch(g, items, beta=True))
    (sent,) = last_server().sent("POST", "/beta/$batch")
    assert sent == {
        "requests": [
            {"id": "0", "method": "GET", "url": "/devices?$select=id"},
            {
                "id": "1",
                "method": "POST",
                "url": "/deviceManagement/configurationPolicies('p')/retrieveX",
                "body": {},
                "headers": {"Content-Type": "application/json"},
            },
            {
                "id": "2",
                "method": "PATCH",
                "url": "/subscriptions/s",
                "body": {"expirationDateTime": "2030-01-01T00:00Z"},
                "headers": {"Content-Type": "application/json"},
            },
            {
                "id": "3",
                "method": "put",
                "url": "/x/y",
                "body": {},
                "headers": {"Content-Type": "application/json"},
            },
            {"id": "4", "method": "DELETE", "url": "/subscriptions/s"},
        ]
    }


# --- single objects -------------------------------------------------------------------------


def test_single_object_unwraps_only_an_object_value():
    job = {"id": "j", "status": "completed"}
    assert single_object(job, "job") == job
    assert single_object({"@odata.context": "c", "value": job}, "job") == job
    for payload in (
        {"value": [job]},
        {"@odata.context": "c", "value": []},
        {"value": None},
        {"value": job, "id": "other"},
        [job],
        "job",
    ):
        with pytest.raises(MalformedResponse):
            single_object(payload, "job")


# --- what a call that fails reports, and filters -------------------------------------------


def test_a_failed_graph_call_is_unverified_under_the_endpoint_and_permission_it_declares():
    # No route: the loopback answers 404 to the batch itself.
    answer = run({}, lambda g: devices.managed_devices_by_id(g, [MANAGED_ID]))
    assert answer == Unverified(
        "GET /v1.0/deviceManagement/managedDevices/{id}",
        UnverifiedReason.REJECTED,
        "no such route",
        status=404,
    )
    assert devices.managed_devices_by_id.endpoint.permission == (
        "DeviceManagementManagedDevices.Read.All"
    )
    # The permission is named only when it is the permission that was missing.
    assert answer.permission is None
    forbidden = devices.managed_devices_by_id.failed(GraphCallError(403, None, "denied"))
    assert forbidden.to_json() == {
        "source": "GET /v1.0/deviceManagement/managedDevices/{id}",
        "reason": "forbidden",
        "detail": "denied",
        "permission": "DeviceManagementManagedDevices.Read.All",
        "status": 403,
    }


def test_the_call_itself_still_raises_for_callers_that_combine_calls():
    from monitors.graph.errors import GRAPH_ERRORS, status_of

    with pytest.raises(GRAPH_ERRORS) as raised:
        run({}, lambda g: devices.managed_devices_by_id.fetch(g, [MANAGED_ID]))
    assert status_of(raised.value) == 404


def _renewed(request: web.Request, body: Any) -> Any:
    return {
        "id": SUBSCRIPTION,
        "resource": f"groups/{GROUP}",
        "notificationUrl": "https://example.invalid/api/notify",
        "expirationDateTime": "2026-12-30T10:00:00Z",
    }


def test_a_refused_reauthorization_falls_back_to_renewing():
    renewed = run(
        {("PATCH", f"/v1.0/subscriptions/{SUBSCRIPTION}"): _renewed},
        lambda g: subs.keep_authorized(g, SUBSCRIPTION, datetime(2026, 12, 1, tzinfo=UTC)),
    )
    assert renewed == datetime(2026, 12, 30, 10, 0, tzinfo=UTC)
    assert [m for m, _, _ in last_server().seen] == ["POST", "PATCH"]
    reauthorized = run(
        {("POST", f"/v1.0/subscriptions/{SUBSCRIPTION}/reauthorize"): {}},
        lambda g: subs.keep_authorized(g, SUBSCRIPTION, datetime(2026, 12, 1, tzinfo=UTC)),
    )
    assert reauthorized is None and len(last_server().seen) == 1


def test_reauthorization_and_renewal_both_refused_is_named_after_the_reauthorization():
    failed = run(
        {}, lambda g: subs.keep_authorized(g, SUBSCRIPTION, datetime(2026, 12, 1, tzinfo=UTC))
    )
    assert isinstance(failed, Unverified)
    assert (failed.source, failed.reason, failed.status) == (
        "POST /v1.0/subscriptions/{id}/reauthorize",
        UnverifiedReason.REJECTED,
        404,
    )


def test_filter_values_are_substituted_as_odata_literals():
    from monitors.graph.odata import odata_filter

    when = datetime(2026, 11, 19, 10, 0, 5, 123, tzinfo=UTC)
    assert (
        odata_filter("activityDateTime ge @t and id eq @id", t=when, id="o'brien")
        == "activityDateTime ge 2026-11-19T10:00:05Z and id eq 'o''brien'"
    )
    assert odata_filter("deviceId in @ids", ids=["a", "b"]) == "deviceId in ('a','b')"
    with pytest.raises(KeyError):
        odata_filter("id eq @id")
    with pytest.raises(ValueError):
        odata_filter("activityDateTime ge @t", t=datetime(2026, 11, 19))


def test_the_audit_filter_names_the_group_and_the_time_it_reads_from():
    found = run(
        {("GET", "/v1.0/auditLogs/directoryAudits"): {"value": []}},
        lambda g: audit.membership_events(g, GROUP, datetime(2026, 11, 19, 8, 0, tzinfo=UTC)),
    )
    assert found == []
    ((_, path, _),) = last_server().seen
    assert "activityDateTime+ge+2026-11-19T08:00:00Z" in path.replace("%20", "+")
    assert f"targetResources/any(t:t/id+eq+'{GROUP}')" in path.replace("%20", "+").replace(
        "%27", "'"
    )


COVERED = {
    "audit-get.json",
    "audit-list-1.json",
    "audit-list-2.json",
    "batch.json",
    "change-notification.json",
    "cmg-1-req.json",
    "cmg-1.json",
    "device-list.json",
    "dq-changes.json",
    "dq-empty.json",
    "dq-final.json",
    "etg.json",
    "export-create.json",
    "group-delta-1.json",
    "group-get.json",
    "jit.json",
    "lifecycle.json",
    "managed-list.json",
    "mem-create.json",
    "owners.json",
    "policy-list.json",
    "sp-list.json",
    "sub-create.json",
}


def test_every_example_answer_has_a_test_here():
    if not EXAMPLES.is_dir():
        pytest.skip("Microsoft's example answers are not beside the clone")
    assert {p.name for p in EXAMPLES.glob("*.json")} == COVERED
