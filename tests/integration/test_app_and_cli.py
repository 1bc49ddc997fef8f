"""The function app's functions and the CLI, called the way the host and a user call them."""

from __future__ import annotations

import json

import pytest

from monitors import cli, entry
from tests.helpers import call_route, run_timer

pytestmark = pytest.mark.integration


def call_health():
    return call_route("health", "GET", "health")


def test_health_before_any_run_says_never_run(app_env):
    response = call_health()
    body = json.loads(response.get_body())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert body["jobs"]["config_check"] == {"state": "never run", "interval_minutes": 60.0}
    assert body["status"] == "healthy" and body["problems"] == []


def test_timer_runs_the_check_and_health_reports_it(app_env):
    run_timer("config_check")
    body = json.loads(call_health().get_body())
    job = body["jobs"]["config_check"]
    assert job["last_outcome"] == "ok"
    assert job["last_success"] is not None
    assert body["open_anomalies"] == {
        "etg_invalid_group": 1,
        "etg_not_configured": 1,
        "etg_owner_missing": 1,
        "payload_not_ready": 1,
    }


def test_health_is_503_with_the_problem_when_settings_are_wrong(monkeypatch):
    monkeypatch.setenv("ETG_GRAPH_CREDENTIAL", "bogus")
    monkeypatch.setattr(entry, "_settings", None)
    response = call_health()
    assert response.status_code == 503
    assert any("ETG_GRAPH_CREDENTIAL" in p for p in json.loads(response.get_body())["problems"])


def test_cli_check_then_anomalies_json_lists_the_contract_fields(app_env, capsys):
    assert cli.main(["check-config"]) == cli.EXIT_FINDINGS
    text = capsys.readouterr().out
    assert "BROKEN" in text and "OK" in text and "Fix:" in text
    assert cli.main(["anomalies", "--json"]) == cli.EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    required = {
        "kind",
        "status",
        "policy_id",
        "group_id",
        "first_seen",
        "last_seen",
        "explanation",
        "evidence",
        "managed_device_id",
        "device_name",
        "serial_number",
        "user_principal_name",
    }
    for row in rows:
        assert required <= row.keys()
        assert row["status"] == "open"


def test_cli_status_filter(app_env, capsys):
    cli.main(["check-config", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "ok"
    cli.main(["anomalies", "--json", "--status", "resolved"])
    assert json.loads(capsys.readouterr().out) == []
    cli.main(["anomalies", "--json", "--status", "all"])
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_cli_reports_bad_settings_with_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("ETG_STORAGE_CONNECTION", raising=False)
    monkeypatch.delenv("ETG_STORAGE_TABLE_URL", raising=False)
    assert cli.main(["anomalies"]) == cli.EXIT_USAGE
    assert "ETG_STORAGE_CONNECTION" in capsys.readouterr().err


def test_cli_suppress_and_unsuppress_a_policy(app_env, capsys):
    cli.main(["check-config"])
    capsys.readouterr()
    code = cli.main(
        [
            "suppress",
            "--kind",
            "etg_not_configured",
            "--reason",
            "kiosk pilot",
            "--expires",
            "7d",
            "--by",
            "oncall@contoso.com",
        ]
    )
    assert code == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "1 anomalies now suppressed" in out
    suppression_id = out.split()[1].rstrip(":")
    cli.main(["anomalies", "--json", "--status", "suppressed"])
    assert [r["kind"] for r in json.loads(capsys.readouterr().out)] == ["etg_not_configured"]
    cli.main(["suppressions", "--json"])
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["reason"] == "kiosk pilot" and listed["active"] is True
    assert cli.main(["unsuppress", suppression_id]) == cli.EXIT_OK
    capsys.readouterr()
    cli.main(["anomalies", "--json"])
    assert "etg_not_configured" in {r["kind"] for r in json.loads(capsys.readouterr().out)}
    assert cli.main(["unsuppress", "s-nonexistent"]) == cli.EXIT_USAGE


def test_cli_suppress_requires_a_reason(app_env, capsys):
    with pytest.raises(SystemExit):
        cli.main(["suppress", "--kind", "etg_late"])
    assert cli.main(["suppress", "--kind", "etg_late", "--reason", " "]) == cli.EXIT_USAGE
