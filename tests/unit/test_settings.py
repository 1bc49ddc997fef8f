import pytest

from monitors.settings import Settings, SettingsError

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
