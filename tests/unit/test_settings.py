import dataclasses
import json

import pytest

from monitors.settings import (
    GLOBAL_GRAPH,
    SCHEDULE_SETTINGS,
    SETTINGS,
    Settings,
    SettingsError,
    parse_schedule,
)

BASE = {"ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true"}


def test_defaults_target_global_graph_with_managed_identity():
    s = Settings.from_env(BASE)
    assert s.graph_endpoint == "https://graph.microsoft.com"
    assert s.graph_credential == "default"
    assert s.graph_v1 == "https://graph.microsoft.com/v1.0"
    assert s.graph_beta == "https://graph.microsoft.com/beta"
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert s.table_prefix == "etg"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://graph.microsoft.us",
        "https://dod-graph.microsoft.us/",
        "https://microsoftgraph.chinacloudapi.cn",
    ],
)
def test_national_clouds_are_accepted_and_versions_appended(endpoint):
    s = Settings.from_env({**BASE, "ETG_GRAPH_ENDPOINT": endpoint})
    assert s.graph_v1 == endpoint.rstrip("/") + "/v1.0"


@pytest.mark.parametrize("host", ["127.0.0.1:8123", "localhost:9000", "[::1]:8000"])
def test_loopback_simulator_accepts_credential_none(host):
    s = Settings.from_env(
        {**BASE, "ETG_GRAPH_ENDPOINT": f"http://{host}", "ETG_GRAPH_CREDENTIAL": "none"}
    )
    assert s.graph_credential == "none"
    assert s.graph_is_loopback


def test_credential_none_is_refused_for_a_real_cloud():
    with pytest.raises(SettingsError, match="only when ETG_GRAPH_ENDPOINT is a loopback"):
        Settings.from_env({**BASE, "ETG_GRAPH_CREDENTIAL": "none"})


def test_endpoint_with_version_suffix_is_refused_with_a_hint():
    with pytest.raises(SettingsError, match=r"appends /v1\.0 and /beta itself"):
        Settings.from_env({**BASE, "ETG_GRAPH_ENDPOINT": "https://graph.microsoft.com/v1.0"})


def test_unknown_graph_host_is_refused_so_tokens_never_go_elsewhere():
    with pytest.raises(SettingsError, match="must be one of"):
        Settings.from_env({**BASE, "ETG_GRAPH_ENDPOINT": "https://graph.evil.example"})


def test_storage_is_required_and_exclusive():
    with pytest.raises(SettingsError, match="set ETG_STORAGE_CONNECTION"):
        Settings.from_env({})
    with pytest.raises(SettingsError, match="only one of"):
        Settings.from_env({**BASE, "ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net"})


def test_identity_based_table_url_is_accepted():
    s = Settings.from_env({"ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net/"})
    assert s.storage_table_url == "https://acct.table.core.windows.net"
    assert s.storage_connection is None


@pytest.mark.parametrize("prefix", ["1abc", "etg-test", "x" * 41, "has space"])
def test_table_prefix_must_be_a_valid_table_name_start(prefix):
    with pytest.raises(SettingsError, match="ETG_TABLE_PREFIX"):
        Settings.from_env({**BASE, "ETG_TABLE_PREFIX": prefix})


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {
                "ETG_GRAPH_CREDENTIAL": "magic",
                "ETG_TABLE_PREFIX": "-",
                "ETG_GRAPH_CONCURRENCY": "lots",
            }
        )
    assert len(err.value.problems) == 4


def test_connection_string_never_appears_in_the_error():
    secret = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0c2VjcmV0"
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"ETG_STORAGE_CONNECTION": secret, "ETG_TABLE_PREFIX": "-"})
    assert "c2VjcmV0" not in str(err.value)


def test_secrets_never_appear_in_the_settings_repr():
    s = Settings.from_env(
        {
            "ETG_STORAGE_CONNECTION": "AccountName=a;AccountKey=S3CRET-KEY",
            "ETG_TEAMS_WEBHOOK_URL": "https://prod.logic.azure.com/x?sig=S3CRET-SIG",
            "ETG_NOTIFICATION_URL": "https://app.azurewebsites.net/api/graph/notifications?code=S3CRET-CODE",
            "ETG_CLIENT_STATE": "S3CRET-client-state-value",
        }
    )
    assert "S3CRET" not in repr(s)


def test_notification_url_needs_a_client_state_of_sane_length():
    with pytest.raises(SettingsError, match="needs ETG_CLIENT_STATE"):
        Settings.from_env({**BASE, "ETG_NOTIFICATION_URL": "https://a.example/api/x"})
    with pytest.raises(SettingsError, match="16 to 128"):
        Settings.from_env({**BASE, "ETG_CLIENT_STATE": "short"})


def test_an_unresolved_key_vault_reference_is_refused_with_the_fix():
    with pytest.raises(SettingsError, match="Key Vault reference that did not resolve"):
        Settings.from_env({**BASE, "ETG_CLIENT_STATE": "@Microsoft.KeyVault(SecretUri=x)"})


def test_an_unresolved_key_vault_reference_is_the_only_problem_reported_for_its_setting():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "ETG_TEAMS_WEBHOOK_URL": "@Microsoft.KeyVault(SecretUri=x)"})
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("ETG_TEAMS_WEBHOOK_URL is a Key Vault reference")


def test_dataclass_defaults_agree_with_the_table_defaults():
    # Code that builds Settings directly (tests, tools) gets what an empty environment gets.
    read = Settings.from_env(BASE)
    declared = {f.name: f for f in dataclasses.fields(Settings)}
    for setting in SETTINGS:
        declared_default = declared[setting.field].default
        if declared_default is not dataclasses.MISSING:
            assert getattr(read, setting.field) == declared_default, setting.name
    assert (
        read.schedules
        == Settings(
            graph_endpoint=GLOBAL_GRAPH,
            graph_credential="default",
            storage_connection=None,
            storage_table_url=None,
            table_prefix="etg",
        ).schedules
    )


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.type in ("int", "float")], ids=lambda s: s.name
)
def test_every_number_setting_is_held_to_its_bounds_by_name(setting):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, setting.name: str(setting.high + 1)})
    assert err.value.problems == [
        f"{setting.name} must be between {setting.low} and {setting.high}, got {setting.high + 1}"
    ]
    with pytest.raises(SettingsError, match=f"{setting.name} must be a whole number"):
        Settings.from_env({**BASE, setting.name: "lots"})
    edge = Settings.from_env({**BASE, setting.name: f" {setting.low} "})
    assert getattr(edge, setting.field) == setting.low


def test_choices_name_every_accepted_value():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "ETG_LOG_FORMAT": "XML", "ETG_GRAPH_CREDENTIAL": "magic"})
    assert err.value.problems == [
        "ETG_GRAPH_CREDENTIAL must be default or none, got 'magic'",
        "ETG_LOG_FORMAT must be auto, json or console, got 'xml'",
    ]
    assert Settings.from_env({**BASE, "ETG_LOG_FORMAT": "JSON"}).log_format == "json"


# A value of each secret setting that its check refuses, each holding the marker S3CRET.
REFUSED_SECRETS = {
    "ETG_STORAGE_CONNECTION": "AccountKey=S3CRET",
    "ETG_TEAMS_WEBHOOK_URL": "http://prod.logic.azure.com/x?sig=S3CRET",
    "ETG_NOTIFICATION_URL": "ftp://app.example/api/graph/notifications?code=S3CRET",
    "ETG_CLIENT_STATE": "S3CRET",
    "ETG_PAGERDUTY_ROUTING_KEY": "S3CRET",
    "ETG_ALERT_WEBHOOK_SECRET": "S3CRET",
    "ETG_CONSOLE_SECRET": "S3CRET",
}


def test_the_table_flags_exactly_the_settings_that_hold_credentials():
    assert {s.name for s in SETTINGS if s.secret} == set(REFUSED_SECRETS)


@pytest.mark.parametrize("name", sorted(REFUSED_SECRETS))
def test_a_refused_secret_is_named_but_never_quoted(name):
    env = {"ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net"}
    if name == "ETG_STORAGE_CONNECTION":
        env = {}
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**env, name: REFUSED_SECRETS[name]})
    assert any(problem.startswith(name) for problem in err.value.problems)
    assert "S3CRET" not in str(err.value)


def test_every_secret_field_is_kept_out_of_the_repr():
    by_name = {f.name: f for f in dataclasses.fields(Settings)}
    assert all(not by_name[s.field].repr for s in SETTINGS if s.secret)


def test_secrets_lists_the_value_of_each_secret_that_is_set():
    env = {
        "ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net",
        "ETG_TEAMS_WEBHOOK_URL": "https://prod.logic.azure.com/x?sig=abc",
        "ETG_NOTIFICATION_URL": "https://app.azurewebsites.net/api/graph/notifications?code=k",
        "ETG_CLIENT_STATE": "a-client-state-of-enough-length",
        "ETG_TENANT_ID": "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
    }
    assert sorted(Settings.from_env(env).secrets()) == sorted(
        env[name] for name in ("ETG_TEAMS_WEBHOOK_URL", "ETG_NOTIFICATION_URL", "ETG_CLIENT_STATE")
    )
    assert (
        Settings.from_env({"ETG_STORAGE_TABLE_URL": env["ETG_STORAGE_TABLE_URL"]}).secrets() == []
    )
    assert Settings.from_env(BASE).secrets() == ["UseDevelopmentStorage=true"]


ACCEPTED_CONNECTIONS = [
    "UseDevelopmentStorage=true",
    "usedevelopmentstorage=TRUE",
    "AccountName=acct;AccountKey=a2V5",
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;",
    "TableEndpoint=https://acct.table.core.windows.net;SharedAccessSignature=sv=2024&sig=c2ln",
    "AccountName=acct;SharedAccessSignature=sv=2024&sig=c2ln",
]
REFUSED_CONNECTIONS = [
    "not a connection string",
    "AccountName=acct;AccountKey",
    "AccountName=acct;;AccountKey=a2V5",
    "AccountName=acct;accountname=other;AccountKey=a2V5",
    "TableEndpoint=https://acct.table.core.windows.net;AccountKey=a2V5",
    "SharedAccessSignature=sv=2024&sig=c2ln",
    "UseDevelopmentStorage=true;AccountKey=a2V5",
]


@pytest.mark.parametrize(
    "connection,accepted",
    [(c, True) for c in ACCEPTED_CONNECTIONS] + [(c, False) for c in REFUSED_CONNECTIONS],
)
def test_connection_strings_are_judged_as_azure_data_tables_judges_them(connection, accepted):
    from azure.data.tables import TableServiceClient

    try:
        TableServiceClient.from_connection_string(connection).close()
        sdk_accepts = True
    except ValueError:
        sdk_accepts = False
    assert sdk_accepts is accepted, "the expectation itself disagrees with azure-data-tables"
    if accepted:
        assert Settings.from_env({"ETG_STORAGE_CONNECTION": connection}).storage_connection
    else:
        with pytest.raises(SettingsError) as err:
            Settings.from_env({"ETG_STORAGE_CONNECTION": connection})
        [problem] = err.value.problems
        assert problem.startswith("ETG_STORAGE_CONNECTION ")
        assert "a2V5" not in problem and "c2ln" not in problem


def test_policy_groups_name_every_entry_that_is_not_a_group_id():
    group = "5f0c3a1e-0000-4000-8000-000000000001"
    s = Settings.from_env(
        {**BASE, "ETG_POLICY_GROUPS": json.dumps({"Contoso - Kiosks": group.upper()})}
    )
    assert s.policy_groups == {"contoso - kiosks": group}
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {**BASE, "ETG_POLICY_GROUPS": json.dumps({"a": "nope", "b": group, "c": 7})}
        )
    assert err.value.problems == [
        "ETG_POLICY_GROUPS entries 'a', 'c' must map a policy id or name to a group id"
    ]


def test_schedules_are_read_with_todays_defaults_filled_in():
    s = Settings.from_env({**BASE, "SCAN_SCHEDULE": " 0 0 * * * * "})
    assert s.schedules == {
        "CONFIG_CHECK_SCHEDULE": "0 0 * * * *",
        "SCAN_SCHEDULE": "0 0 * * * *",
        "ALERTS_SCHEDULE": "0 */5 * * * *",
        "SUMMARY_SCHEDULE": "0 0 7 * * 1",
        "SUBSCRIPTIONS_SCHEDULE": "0 15 * * * *",
        "NOTIFICATIONS_SCHEDULE": "0 * * * * *",
    }
    assert set(s.schedules) == set(SCHEDULE_SETTINGS)


@pytest.mark.parametrize(
    "expression,fragment",
    [
        ("0 */10 * * *", "six fields"),  # a five-field crontab, no seconds
        ("00:10:00", "six fields"),  # a TimeSpan: App Service plans only, not Flex Consumption
        ("@hourly", "six fields"),
        ("0 0 25 * * *", "has 25 in its hour field, which takes 0-23"),
        ("0 0 7 * * 7", "has 7 in its day-of-week field, which takes 0-6"),
        ("0 0 7 L * *", "day field"),
        ("0 0 7 ? * 1", "day field"),
        ("0 0 7 * * 1#2", "day-of-week field"),
        ("0 */0 * * * *", "minute field"),
        ("0 0 7 * Smarch *", "'Smarch' in its month field"),
        ("0 0 0 31 2 *", "never fires"),
    ],
)
def test_a_schedule_the_functions_host_would_refuse_stops_the_app(expression, fragment):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "SCAN_SCHEDULE": expression})
    [problem] = err.value.problems
    assert problem.startswith("SCAN_SCHEDULE ") and fragment in problem


@pytest.mark.parametrize(
    "expression,as_read",
    [
        ("0 30 9 * Jan Mon", "0 30 9 * 1 1"),
        ("0 30 9 * jan-MAR Tuesday", "0 30 9 * 1-3 2"),
        ("0 0 12 * * Fri-Mon", "0 0 12 * * 1-5"),  # NCrontab swaps a reversed range
        ("0 5/15 * * * *", "0 5-59/15 * * * *"),
        ("0  0 7  * * 1", "0 0 7 * * 1"),
    ],
)
def test_ncrontab_names_ranges_and_steps_are_read_as_the_host_reads_them(expression, as_read):
    assert parse_schedule(expression) == as_read
    assert (
        Settings.from_env({**BASE, "SUMMARY_SCHEDULE": expression}).schedules["SUMMARY_SCHEDULE"]
        == expression.strip()
    )
