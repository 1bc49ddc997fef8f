"""The console's settings: what each accepts and the rule that keeps the dev principal local."""

import pytest

from monitors.settings import Settings, SettingsError

AZURE = {
    "ETG_GRAPH_ENDPOINT": "https://graph.microsoft.com",
    "ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net",
}
LOCAL = {
    "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:8080",
    "ETG_GRAPH_CREDENTIAL": "none",
    "ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true",
}
SECRET = "s" * 40


def problems(env):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    return err.value.problems


def test_defaults_leave_the_console_without_buttons_operators_or_forms():
    s = Settings.from_env(AZURE)
    assert (s.public_base_url, s.console_operators_group, s.console_secret) == (None, None, None)
    assert s.console_dev_principal is None and s.remind_after_hours == 24


def test_console_settings_are_read_and_normalized():
    s = Settings.from_env(
        {
            **AZURE,
            "ETG_PUBLIC_BASE_URL": "https://func-x.azurewebsites.net/",
            "ETG_CONSOLE_OPERATORS_GROUP": "0B8A5D7E-1C2F-4E3A-9B6D-7F8E9A0B1C2D",
            "ETG_CONSOLE_SECRET": SECRET,
            "ETG_REMIND_AFTER_HOURS": "48",
        }
    )
    assert s.public_base_url == "https://func-x.azurewebsites.net"
    assert s.console_operators_group == "0b8a5d7e-1c2f-4e3a-9b6d-7f8e9a0b1c2d"
    assert s.remind_after_hours == 48
    assert SECRET in s.secrets() and SECRET not in repr(s)


def test_development_principal_is_refused_against_a_real_tenant():
    found = problems({**AZURE, "ETG_CONSOLE_DEV_PRINCIPAL": "dev@contoso.com"})
    assert found == [
        "ETG_CONSOLE_DEV_PRINCIPAL is accepted only when ETG_GRAPH_ENDPOINT is a loopback "
        "address (the simulated tenant)"
    ]


def test_development_principal_is_accepted_with_the_simulated_tenant():
    s = Settings.from_env({**LOCAL, "ETG_CONSOLE_DEV_PRINCIPAL": "dev@contoso.com"})
    assert s.console_dev_principal == "dev@contoso.com"


@pytest.mark.parametrize(
    "name,value",
    [
        ("ETG_PUBLIC_BASE_URL", "http://func-x.azurewebsites.net"),
        ("ETG_PUBLIC_BASE_URL", "https://func-x.azurewebsites.net/api"),
        ("ETG_PUBLIC_BASE_URL", "https://func-x.azurewebsites.net?code=S3CRET"),
        ("ETG_CONSOLE_OPERATORS_GROUP", "operators"),
        ("ETG_CONSOLE_SECRET", "S3CRET"),
        ("ETG_REMIND_AFTER_HOURS", "0"),
        ("ETG_CONSOLE_DEV_PRINCIPAL", "<script>"),
    ],
)
def test_bad_console_values_are_named_and_secrets_never_quoted(name, value):
    env = LOCAL if name == "ETG_CONSOLE_DEV_PRINCIPAL" else AZURE
    found = problems({**env, name: value})
    assert len(found) == 1 and found[0].startswith(name)
    assert "S3CRET" not in found[0]
