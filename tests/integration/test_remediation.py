"""Remediation end to end: the demo tenant over HTTP, state in Azurite, writes counted by the
simulated tenant. Every "never", the cap, idempotency, 403, 404 and a crash between the write
and its log entry."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from devtools.simtenant.faults import FaultRule
from monitors import cli, service
from monitors.models import (
    ETG_SOURCE_SETTINGS,
    Anomaly,
    Status,
)
from monitors.rules.enrollment import RESOLVED_BY_ELIMINATION
from monitors.settings import Settings
from tests.helpers import etg_of, in_store, outbox, scenario_device, stored_anomalies

pytestmark = pytest.mark.integration

FINANCE_DEVICES = {"CTSO-FT9R9ZU", "CTSO-1606069"}
ADDABLE = FINANCE_DEVICES | {"CTSO-J5NB1GX"}  # etg_missing devices whose ETG is assigned
DYNAMIC = {"ENG-9PR4P42", "ENG-6124HUH"}  # the Engineering ETG is dynamic in the demo


def with_mode(settings: Settings, mode: str, **more: Any) -> Settings:
    return dataclasses.replace(settings, detailed_reports=True, remediation=mode, **more)


def scan(settings: Settings, tenant: Any) -> Any:
    return asyncio.run(service.scan(settings, clock=tenant.clock))


def check_config(settings: Settings, tenant: Any) -> Any:
    return asyncio.run(service.check_config(settings, clock=tenant.clock))


def remediate(settings: Settings, tenant: Any, **kwargs: Any) -> Any:
    ran = asyncio.run(service.remediate(settings, clock=tenant.clock, **kwargs))
    assert ran.report is not None, ran.skipped
    return ran.report


def member_writes(tenant: Any) -> list[Any]:
    return [w for w in tenant.state.writes() if w.path.endswith("/members/$ref")]


def log(settings: Settings) -> list[Any]:
    return in_store(settings, lambda store: store.remediations.all())


def recorded_run_of(settings: Settings) -> Any:
    """The remediation job's run record, which health reads."""
    from monitors.store.runs import RunRepository

    return in_store(settings, lambda store: RunRepository(store).all())["remediation"]


def anomaly_of(settings: Settings, kind: str, device: str | None = None) -> Anomaly:
    return next(
        a
        for a in stored_anomalies(settings)
        if a.kind == kind and (device is None or a.subject.device_name == device)
    )


def items_by_device(report: Any) -> dict[str, Any]:
    return {i.target.device_name: i for i in report.items if i.target.device_name}


def rewrite_evidence(settings: Settings, device: str, **policy: Any) -> None:
    """Store the anomaly as a scan records it when its policy facts were weaker."""
    anomaly = anomaly_of(settings, "etg_missing", device)
    anomaly.evidence = {
        **anomaly.evidence,
        "policy": {**anomaly.evidence["policy"], **policy},  # type: ignore[dict-item]
    }
    in_store(settings, lambda store: store.anomalies.save(anomaly))


# --- off and dry-run --------------------------------------------------------------------------


def test_off_by_default_never_runs_remediation_and_writes_nothing(settings, tenant):
    assert settings.remediation == "off"
    ran = scan(dataclasses.replace(settings, detailed_reports=True), tenant)
    assert ran.remediated is None
    assert tenant.state.writes() == []
    assert log(settings) == []


def test_dry_run_writes_nothing_and_the_anomaly_and_its_queued_card_name_the_command(
    settings, tenant
):
    dry = with_mode(settings, "dry-run")
    ran = scan(dry, tenant)
    assert ran.remediated is not None and ran.remediated.report.mode == "dry-run"
    assert tenant.state.writes() == []
    assert log(dry) == []
    anomaly = anomaly_of(dry, "etg_missing", "CTSO-FT9R9ZU")
    assert anomaly.remediation is not None and anomaly.remediation["state"] == "planned"
    assert anomaly.history[-1]["why"] == (
        "remediation (dry run): would add it to its ETG; run "
        "`etg-monitor remediate --apply --device CTSO-FT9R9ZU`"
    )
    queued = [
        i.payload
        for i in outbox(dry)
        if i.payload.get("device_name") == "CTSO-FT9R9ZU" and i.change == "opened"
    ]
    assert queued and all(p["remediation"]["state"] == "planned" for p in queued)
    # The same plan on the next run is not news: no second history line.
    tenant.clock.advance(600)
    scan(dry, tenant)
    again = anomaly_of(dry, "etg_missing", "CTSO-FT9R9ZU")
    assert len(again.history) == len(anomaly.history)


# --- auto: the device is added and the next scan resolves it as remediated --------------------


def test_auto_adds_missing_devices_and_the_next_scan_resolves_them_as_remediated(
    settings, tenant, scenario
):
    auto = with_mode(settings, "auto")
    ran = scan(auto, tenant)
    report = ran.remediated.report
    written = {w.path.split("/")[-3] for w in member_writes(tenant)}
    assert [w.status for w in member_writes(tenant)] == [204] * len(ADDABLE)
    expected = {etg_of(scenario, scenario_device(scenario, n)) for n in ADDABLE}
    assert written == expected
    entries = log(auto)
    assert {e.device_name for e in entries if e.action == "add_member"} == ADDABLE
    assert all(e.state == "done" and e.request_id for e in entries if e.action == "add_member")
    done = anomaly_of(auto, "etg_missing", "CTSO-J5NB1GX")
    assert done.remediation is not None and done.remediation["written"] is True
    assert done.history[-1]["why"].startswith("remediation: added to its ETG automatically at ")
    assert items_by_device(report)["ENG-9PR4P42"].reason.startswith("the ETG is a dynamic group")

    tenant.clock.advance(2 * 3600)
    scan(auto, tenant)
    resolved = anomaly_of(auto, "etg_missing", "CTSO-J5NB1GX")
    assert resolved.status is Status.RESOLVED
    why = resolved.history[-1]["why"]
    assert why.startswith("remediated: added to its ETG by etg-monitor at ")
    assert "after provisioning completed" in why  # the late join, as the scan words it
    assert resolved.remediation["resolved_as"] == "remediated"
    assert len(member_writes(tenant)) == len(ADDABLE)  # nothing was written again
    # Only additions: every write the tenant received is a POST of a reference.
    assert {(w.method, w.path.rsplit("/", 2)[-2]) for w in tenant.state.writes()} <= {
        ("POST", "members"),
        ("POST", "owners"),
    }


def test_a_second_run_writes_nothing_and_already_a_member_counts_as_done(
    settings, tenant, scenario
):
    auto = with_mode(settings, "auto")
    spec = scenario_device(scenario, "CTSO-J5NB1GX")
    scan(with_mode(settings, "off"), tenant)
    tenant.state.add_member_now(etg_of(scenario, spec), spec.object_id, actor="admin")
    first = remediate(auto, tenant)
    assert items_by_device(first)["CTSO-J5NB1GX"].decision.value == "present"
    assert len(member_writes(tenant)) == len(FINANCE_DEVICES)
    second = remediate(auto, tenant)
    assert len(member_writes(tenant)) == len(FINANCE_DEVICES)
    decisions = {n: i.decision.value for n, i in items_by_device(second).items()}
    assert {decisions[n] for n in FINANCE_DEVICES} == {"verified"}


def test_a_400_already_exists_answer_counts_as_done(settings, tenant, scenario):
    from monitors.graph.client import GraphClient
    from monitors.graph.writes import Relation, WriteResult, add_reference

    spec = scenario_device(scenario, "CTSO-J5NB1GX")
    group = etg_of(scenario, spec)
    tenant.state.add_member_now(group, spec.object_id, actor="admin")

    async def go() -> Any:
        async with GraphClient(settings) as graph:
            return await add_reference(graph, Relation.MEMBERS, group, spec.object_id)

    outcome = asyncio.run(go())
    assert outcome.result is WriteResult.ALREADY and outcome.result.in_place
    assert [w.status for w in tenant.state.writes()] == [400]


# --- the cap ------------------------------------------------------------------------------------


def test_the_cap_writes_the_oldest_and_defers_the_rest_saying_so(settings, tenant):
    capped = with_mode(settings, "auto", remediation_max_per_run=1)
    ran = scan(capped, tenant)
    assert len(member_writes(tenant)) == 1
    deferred = [i for i in ran.remediated.report.items if i.decision.value == "deferred"]
    assert len(deferred) == len(ADDABLE) - 1
    assert {i.reason for i in deferred} == {
        "waits for the next run: the cap of 1 per run was reached"
    }
    waiting = anomaly_of(capped, "etg_missing", deferred[0].target.device_name)
    assert waiting.remediation["state"] == "deferred"
    remediate(capped, tenant)
    assert len(member_writes(tenant)) == 2


# --- every "never" --------------------------------------------------------------------------


def test_an_etg_known_only_from_settings_or_a_policy_resolved_by_elimination_is_refused(
    settings, tenant
):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    rewrite_evidence(auto, "CTSO-FT9R9ZU", etg_source=ETG_SOURCE_SETTINGS)
    rewrite_evidence(auto, "CTSO-1606069", resolved_by=RESOLVED_BY_ELIMINATION)
    report = remediate(auto, tenant)
    items = items_by_device(report)
    assert "known only from the policy's settings" in items["CTSO-FT9R9ZU"].reason
    assert "resolved only by elimination" in items["CTSO-1606069"].reason
    written = {w.body["@odata.id"].rsplit("/", 1)[-1] for w in member_writes(tenant)}
    assert written == {items["CTSO-J5NB1GX"].target.object_id}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"group_types": ["DynamicMembership"]}, "dynamic"),
        ({"is_assignable_to_role": True}, "role-assignable"),
        ({"mail_enabled": True}, "mail-enabled"),
        ({"security_enabled": False}, "not a security group"),
        ({"deleted": True}, "does not exist"),
    ],
)
def test_groups_the_monitor_never_writes_to_are_refused_live(
    settings, tenant, scenario, fields, words
):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    spec = scenario_device(scenario, "CTSO-J5NB1GX")
    tenant.state.update_group(etg_of(scenario, spec), **fields)
    report = remediate(auto, tenant, device="CTSO-J5NB1GX")
    [item] = report.items
    assert item.decision.value == "refused" and words in item.reason
    assert tenant.state.writes() == []


def test_a_suppressed_anomaly_is_not_acted_on(settings, tenant):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    anomaly = anomaly_of(auto, "etg_missing", "CTSO-J5NB1GX")
    anomaly.status = Status.SUPPRESSED
    in_store(auto, lambda store: store.anomalies.save(anomaly))
    [item] = remediate(auto, tenant, device="CTSO-J5NB1GX").items
    assert item.decision.value == "refused" and item.reason.startswith("suppressed")
    assert tenant.state.writes() == []


def test_an_unreadable_group_is_unverified_reported_as_health_and_never_written(
    settings, tenant, scenario
):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    group = etg_of(scenario, scenario_device(scenario, "CTSO-J5NB1GX"))
    tenant.faults.add(FaultRule(endpoint=f"/groups/{group}$", kind="status", status=500))
    report = remediate(auto, tenant, device="CTSO-J5NB1GX")
    [item] = report.items
    assert item.decision.value == "unverified"
    assert report.unverified and report.outcome == "unverified"
    assert tenant.state.writes() == []
    run = recorded_run_of(auto)
    assert run.last_outcome == "unverified" and run.unverified


# --- Graph's refusals ---------------------------------------------------------------------------


def test_a_403_names_the_missing_permission_in_health_and_does_not_crash(settings, tenant):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    tenant.state.set_write_permissions([])
    report = remediate(auto, tenant, device="CTSO-J5NB1GX")
    [entry] = log(auto)
    assert entry.state == "forbidden"
    assert [u.permission for u in report.unverified] == [
        "GroupMember.ReadWrite.All and Device.ReadWrite.All"
    ]
    run = recorded_run_of(auto)
    assert run.missing_permissions == ["GroupMember.ReadWrite.All and Device.ReadWrite.All"]
    _healthy, health = asyncio.run(service.health(auto, clock=tenant.clock))
    assert "GroupMember.ReadWrite.All and Device.ReadWrite.All" in health["missing_permissions"]
    assert health["jobs"]["remediation"]["last_outcome"] == "unverified"
    assert health["status"] != "healthy"
    anomaly = anomaly_of(auto, "etg_missing", "CTSO-J5NB1GX")
    assert anomaly.status is Status.OPEN and anomaly.remediation["state"] == "forbidden"


def test_a_404_is_recorded_as_gone_and_not_retried_blindly(settings, tenant, scenario):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    gone = "00000000-0000-4000-8000-000000000404"  # an Entra device object that does not exist
    anomaly = anomaly_of(auto, "etg_missing", "CTSO-J5NB1GX")
    anomaly.evidence = {**anomaly.evidence, "device_object_id": gone}
    in_store(auto, lambda store: store.anomalies.save(anomaly))
    remediate(auto, tenant, device="CTSO-J5NB1GX")
    assert [e.state for e in log(auto)] == ["gone"]
    [item] = remediate(auto, tenant, device="CTSO-J5NB1GX").items
    assert item.decision.value == "refused" and "404" in item.reason
    assert [w.status for w in tenant.state.writes()] == [404]


# --- a crash between the write and its log entry ---------------------------------------------


class Crash(Exception):
    pass


def test_a_crash_after_the_write_neither_repeats_it_nor_loses_the_log(
    settings, tenant, monkeypatch
):
    from tests.helpers import on_storage_writes

    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)

    def crash_once_written(_n: int, _name: str) -> None:
        if tenant.state.writes() and not fired:
            fired.append(True)
            raise Crash("the host died after Graph answered")

    fired: list[bool] = []
    restore = on_storage_writes(monkeypatch, crash_once_written)
    with pytest.raises(Crash):
        asyncio.run(service.remediate(auto, clock=tenant.clock, device="CTSO-J5NB1GX"))
    restore()
    assert fired
    [interrupted] = log(auto)
    assert interrupted.state == "started"

    [item] = remediate(auto, tenant, device="CTSO-J5NB1GX").items
    assert item.decision.value == "verified"
    assert len(tenant.state.writes()) == 1
    [entry] = log(auto)
    assert (entry.state, entry.detail) == ("done", "verified after an interrupted run")


def test_a_write_whose_answer_was_lost_is_found_in_place_by_the_next_run(settings, tenant):
    auto = with_mode(settings, "auto")
    scan(with_mode(settings, "off"), tenant)
    tenant.state.lose_write_answers(1, status=500)
    remediate(auto, tenant, device="CTSO-J5NB1GX")
    assert [e.state for e in log(auto)] == ["failed"]
    [item] = remediate(auto, tenant, device="CTSO-J5NB1GX").items
    assert item.decision.value == "present"
    assert len(tenant.state.writes()) == 1


# --- the owner ------------------------------------------------------------------------------


def test_a_restored_owner_and_the_next_check_config_resolving_it_as_remediated(settings, tenant):
    auto = with_mode(settings, "auto")
    ran = check_config(auto, tenant)
    owner_writes = [w for w in tenant.state.writes() if w.path.endswith("/owners/$ref")]
    assert [w.status for w in owner_writes] == [204]
    anomaly = anomaly_of(auto, "etg_owner_missing")
    assert anomaly.remediation["written"] is True
    assert ran.remediated.report.counts().get("done") == 1
    tenant.clock.advance(3600)
    check_config(auto, tenant)
    resolved = anomaly_of(auto, "etg_owner_missing")
    assert resolved.status is Status.RESOLVED
    assert resolved.history[-1]["why"].startswith(
        "remediated: restored the Intune Provisioning Client as owner of its ETG by etg-monitor"
    )


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_remediate_without_apply_shows_the_plan_and_writes_nothing(app_env, tenant, capsys):
    scan(with_mode(app_env, "off"), tenant)
    capsys.readouterr()
    assert cli.main(["remediate", "--json"]) == cli.EXIT_FINDINGS
    plan = json.loads(capsys.readouterr().out)
    assert plan["writes"] is False and plan["mode"] == "preview"
    assert {i["device_name"] for i in plan["items"] if i["decision"] == "write"} == ADDABLE
    assert tenant.state.writes() == []
    assert cli.main(["remediate"]) == cli.EXIT_FINDINGS
    assert "WOULD ADD CTSO-J5NB1GX" in capsys.readouterr().out


def test_cli_apply_while_remediation_is_off_is_refused_with_exit_2(app_env, tenant, capsys):
    scan(with_mode(app_env, "off"), tenant)
    assert cli.main(["remediate", "--apply"]) == cli.EXIT_USAGE
    assert "ETG_REMEDIATION" in capsys.readouterr().err
    assert tenant.state.writes() == []


def test_cli_apply_for_one_device_then_the_log_lists_it(app_env, tenant, monkeypatch, capsys):
    monkeypatch.setenv("ETG_REMEDIATION", "dry-run")
    scan(with_mode(app_env, "off"), tenant)
    capsys.readouterr()
    assert cli.main(["remediate", "--apply", "--device", "CTSO-J5NB1GX"]) == cli.EXIT_OK
    capsys.readouterr()
    assert len(member_writes(tenant)) == 1
    assert cli.main(["remediations", "--json"]) == cli.EXIT_OK
    [row] = json.loads(capsys.readouterr().out)
    assert (row["device_name"], row["state"], row["mode"]) == ("CTSO-J5NB1GX", "done", "apply")
