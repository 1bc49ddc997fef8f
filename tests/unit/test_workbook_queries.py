"""The workbook's and the alert rules' Kusto queries read only what the app really logs.

Each query reads a log record as ``r = parse_json(message)`` (structlog's JSON line is the
trace's message in Application Insights) and picks records by ``r.event``. The records here
are the ones the app writes: a scan and a config check against the simulated tenant, a job that
fails and a job that cannot start, rendered by the app's own JSON logging and read back from
stderr. A query that names an event or field nobody logs would chart nothing in Azure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from monitors.logs import configure_logging
from monitors.models import UnverifiedReason
from monitors.rules.enrollment import EtgOutcome
from monitors.rules.lifecycle import Change
from tests.helpers import app_functions, config_check, scan

APP = Path(__file__).resolve().parents[2] / "infra" / "app"
WORKBOOK = APP / "workbook.json"
ALERT_QUERIES = APP / "alert-queries.json"

_EVENT_EQ = re.compile(r'\br\.event\s*==\s*"([^"]+)"')
_EVENT_IN = re.compile(r"\br\.event\s+in\s*\(([^)]*)\)")
_FIELD = re.compile(r"\br(?:\.([A-Za-z_]\w*)|\[\"([^\"]+)\"\])((?:\.[A-Za-z_]\w*)*)")
_OUTCOME_LITERALS = re.compile(r'\boutcome\s*(?:==\s*"([^"]+)"|in\s*\(([^)]*)\))')
_STRING = re.compile(r'"([^"]*)"')


def workbook_queries() -> dict[str, str]:
    items = json.loads(WORKBOOK.read_text(encoding="utf-8"))["items"]
    return {i["name"]: i["content"]["query"] for i in items if i["type"] == 3}


def alert_queries() -> dict[str, str]:
    rules = json.loads(ALERT_QUERIES.read_text(encoding="utf-8"))
    return {name: rule["query"] for name, rule in rules.items()}


def trace_queries() -> dict[str, str]:
    """Every query over the app's log records (the health alert reads `requests` instead)."""
    queries = {f"workbook {k}": q for k, q in workbook_queries().items()}
    queries |= {f"alert {k}": q for k, q in alert_queries().items()}
    return {k: q for k, q in queries.items() if q.lstrip().startswith("traces")}


def events_of(query: str) -> set[str]:
    events = set(_EVENT_EQ.findall(query))
    for listed in _EVENT_IN.findall(query):
        events |= set(_STRING.findall(listed))
    return events


def fields_of(query: str) -> dict[str, set[str]]:
    """Top-level record fields the query reads -> the nested keys it reads under them."""
    fields: dict[str, set[str]] = defaultdict(set)
    for dotted, quoted, rest in _FIELD.findall(query):
        name = dotted or quoted
        if name == "event":
            continue
        fields[name] |= {part for part in rest.split(".") if part}
    return dict(fields)


def _capture_records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    records = []
    for line in capsys.readouterr().err.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _failing_job(settings: Any, tenant: Any) -> None:
    from monitors.jobs.context import open_context, recorded_run

    async def body() -> None:
        raise RuntimeError("the job broke")

    async def go() -> None:
        async with open_context(settings, clock=tenant.clock, with_graph=False) as ctx:
            await recorded_run(ctx, "config_check", body, lambda _: ("ok", {}, []))

    with pytest.raises(RuntimeError):
        asyncio.run(go())


def _job_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitors import entry, service

    monkeypatch.setattr(entry, "_settings", None)
    monkeypatch.setenv("ETG_SCAN_LOOKBACK_HOURS", "not a number")
    asyncio.run(entry.run_job(service.Job.SCAN))


@pytest.fixture
def logged(settings, tenant, capsys, monkeypatch) -> dict[str, list[dict[str, Any]]]:
    """The app's log records of a scan, a config check, a failed job and a job not run, by
    event."""
    configure_logging("json", logging.INFO)
    capsys.readouterr()
    config_check(settings, tenant)
    scan(settings, tenant)
    _failing_job(settings, tenant)
    _job_that_cannot_start(monkeypatch)
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in _capture_records(capsys):
        by_event[record["event"]].append(record)
    return dict(by_event)


def test_the_query_parser_finds_events_and_fields_in_every_query():
    queries = trace_queries()
    assert len(queries) >= 7, sorted(queries)  # six workbook panels and the job alert
    for name, query in queries.items():
        assert events_of(query), f"{name}: no r.event filter found"
        assert fields_of(query), f"{name}: no record field found"
    assert fields_of('r.job, r["outcome"], r.unverified_reasons.throttled') == {
        "job": set(),
        "outcome": set(),
        "unverified_reasons": {"throttled"},
    }


@pytest.mark.integration  # needs Azurite and the simulated tenant
def test_every_event_a_query_picks_is_one_the_app_logged(logged):
    # The scan and the config check log "anomaly." + the change of every transition but an
    # update, from one call each: one run opens anomalies, the other changes need history.
    changes = {f"anomaly.{c.value}" for c in Change if c is not Change.UPDATED}
    assert "anomaly.opened" in logged
    missing = {
        name: sorted(
            e
            for e in events_of(query)
            if e not in logged and e not in changes and e not in LEGACY_EVENTS
        )
        for name, query in trace_queries().items()
    }
    assert not {k: v for k, v in missing.items() if v}, f"events nobody logged: {missing}"


@pytest.mark.integration  # needs Azurite and the simulated tenant
def test_every_field_a_query_reads_is_logged_on_one_of_its_events(logged):
    unknown = {}
    for name, query in trace_queries().items():
        records = [r for e in events_of(query) for r in logged.get(e, [])]
        assert records, f"{name}: none of its events was logged"
        absent = sorted(f for f in fields_of(query) if not any(f in r for r in records))
        if absent:
            unknown[name] = absent
    assert not unknown, f"fields the app does not log on the query's events: {unknown}"


def test_nested_keys_the_queries_read_are_unverified_reasons():
    reasons = {r.value for r in UnverifiedReason}
    for name, query in trace_queries().items():
        for field, keys in fields_of(query).items():
            assert field == "unverified_reasons" or not keys, f"{name}: r.{field}.{keys}"
            assert keys <= reasons, f"{name}: unknown reasons {keys - reasons}"


def test_outcomes_the_queries_compare_are_etg_outcomes():
    outcomes = {o.value for o in EtgOutcome}
    compared = set()
    for query in trace_queries().values():
        for single, listed in _OUTCOME_LITERALS.findall(query):
            compared |= {single} if single else set(_STRING.findall(listed))
    assert compared, "expected the compliance and lead time queries to compare outcomes"
    assert compared <= outcomes, compared - outcomes


# Written by earlier versions, a line per deployment: the queries still read them, so a
# workbook's history spans an upgrade.
LEGACY_EVENTS = {"deployment.settled"}
_EXPANDED = re.compile(r"\bd\.([A-Za-z_]\w*)")


@pytest.mark.integration  # needs Azurite and the simulated tenant
def test_settled_deployments_carry_their_outcome_and_lead_time(logged):
    lines = logged["deployments.settled"]
    assert all(0 < len(r["deployments"]) <= 100 for r in lines)
    settled = [d for r in lines for d in r["deployments"]]
    assert len({d["deployment"] for d in settled}) == len(settled)
    on_time = [r for r in settled if r["outcome"] == EtgOutcome.ON_TIME]
    assert on_time, "the demo tenant has devices that joined their ETG on time"
    assert all(isinstance(r["lead_minutes"], int | float) for r in on_time)
    assert all(r["lead_minutes"] >= 0 for r in on_time)


@pytest.mark.integration  # needs Azurite and the simulated tenant
def test_job_records_name_the_job_and_count_unverified_facts_by_reason(logged):
    finished = {r["job"]: r for r in logged["job.finished"]}
    assert {"scan", "config_check"} <= set(finished)
    for record in finished.values():
        reasons = record["unverified_reasons"]
        assert sum(reasons.values()) == record["unverified"]
    assert [r["job"] for r in logged["job.failed"]] == ["config_check"]
    assert [r["job"] for r in logged["job.not_run"]] == ["scan"]


def test_the_health_alert_reads_the_health_functions_requests():
    query = alert_queries()["healthUnavailable"]
    assert query.lstrip().startswith("requests")
    names = re.findall(r'\bname\s*==\s*"([^"]+)"', query)
    assert names and set(names) <= set(app_functions()), names
    assert '"503"' in query


@pytest.mark.integration  # needs Azurite and the simulated tenant
def test_fields_read_from_each_settled_deployment_are_logged_on_it(logged):
    items = [d for r in logged["deployments.settled"] for d in r["deployments"]]
    expanded = {
        name: set(_EXPANDED.findall(query))
        for name, query in trace_queries().items()
        if "mv-expand d" in query
    }
    assert set(expanded) >= {"workbook compliance", "workbook lead_time"}, sorted(expanded)
    for name, fields in expanded.items():
        assert fields and all(any(f in d for d in items) for f in fields), (name, fields)
