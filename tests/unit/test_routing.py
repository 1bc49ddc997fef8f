"""ETG_ALERT_ROUTES: parsing, precedence and what settings refuse."""

from __future__ import annotations

import pytest

from monitors.alerts.routing import DEFAULT_ROUTES, Channel, parse_routes, routes_text
from monitors.rules.kinds import KINDS, Severity
from monitors.settings import Settings, SettingsError

BASE = {"ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true"}
TEAMS = "https://example.invalid/teams?sig=abc"
ROUTING_KEY = "R" * 32


def critical_kind() -> str:
    return next(k.name for k in KINDS.values() if k.severity is Severity.CRITICAL)


def high_kind() -> str:
    return next(k.name for k in KINDS.values() if k.severity is Severity.HIGH)


def test_empty_routes_send_every_kind_to_teams_only():
    for kind in KINDS:
        assert DEFAULT_ROUTES.channels(kind) == (Channel.TEAMS,)
    assert parse_routes("  ") == DEFAULT_ROUTES


def test_a_kind_entry_wins_over_its_severity_entry():
    routes = parse_routes("critical=teams,pagerduty;etg_missing=webhook")
    assert routes.channels("etg_missing") == (Channel.WEBHOOK,)
    assert routes.channels(critical_kind()) == (Channel.TEAMS, Channel.PAGERDUTY)


def test_a_kind_neither_named_nor_of_a_named_severity_goes_to_teams():
    routes = parse_routes("critical=pagerduty")
    assert routes.channels(high_kind()) == (Channel.TEAMS,)


def test_channels_are_deduplicated_and_case_insensitive():
    routes = parse_routes("HIGH = Webhook, teams ,webhook")
    assert routes.channels(high_kind()) == (Channel.TEAMS, Channel.WEBHOOK)
    assert routes.named() == {Channel.TEAMS, Channel.WEBHOOK}


def test_routes_text_parses_back_to_the_same_routes():
    routes = parse_routes("critical=teams,pagerduty;etg_missing=teams,pagerduty,webhook")
    assert parse_routes(routes_text(routes)) == routes


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("bogus_kind=teams", "neither an anomaly kind nor a severity"),
        ("medium=teams", "neither an anomaly kind nor a severity"),
        ("critical=slack", "unknown channel 'slack'"),
        ("critical=", "names no channel"),
        ("critical", "must be name=channel"),
        ("critical=teams;critical=pagerduty", "given twice"),
    ],
)
def test_a_wrong_entry_is_refused_naming_it(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_routes(text)


def test_settings_refuse_an_unknown_channel_in_a_route():
    env = {**BASE, "ETG_TEAMS_WEBHOOK_URL": TEAMS, "ETG_ALERT_ROUTES": "critical=sms"}
    with pytest.raises(SettingsError, match="ETG_ALERT_ROUTES entry 'critical' names unknown"):
        Settings.from_env(env)


def test_settings_refuse_a_route_to_a_channel_not_configured():
    env = {**BASE, "ETG_TEAMS_WEBHOOK_URL": TEAMS, "ETG_ALERT_ROUTES": "critical=teams,pagerduty"}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert refused.value.problems == [
        "ETG_ALERT_ROUTES names the pagerduty channel but ETG_PAGERDUTY_ROUTING_KEY is not set"
    ]


def test_settings_accept_routes_to_configured_channels():
    env = {
        **BASE,
        "ETG_TEAMS_WEBHOOK_URL": TEAMS,
        "ETG_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "ETG_ALERT_WEBHOOK_URL": "https://hooks.example.invalid/etg",
        "ETG_ALERT_WEBHOOK_SECRET": "s" * 40,
        "ETG_ALERT_ROUTES": "critical=teams,pagerduty;etg_missing=teams,pagerduty,webhook",
    }
    settings = Settings.from_env(env)
    assert settings.alert_routes.channels("etg_missing") == tuple(Channel)
    assert settings.pagerduty_events_url == "https://events.pagerduty.com/v2/enqueue"
    assert ROUTING_KEY in settings.secrets() and "s" * 40 in settings.secrets()
    assert ROUTING_KEY not in repr(settings) and "s" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"ETG_PAGERDUTY_ROUTING_KEY": "short"}, "ETG_PAGERDUTY_ROUTING_KEY must be the 32"),
        ({"ETG_PAGERDUTY_EVENTS_URL": "http://events.example.com/v2"}, "must be an https URL"),
        ({"ETG_ALERT_WEBHOOK_URL": "http://hooks.example.com/"}, "must be an https URL"),
        ({"ETG_ALERT_WEBHOOK_URL": "https://hooks.example.com/"}, "needs ETG_ALERT_WEBHOOK_SECRET"),
        ({"ETG_ALERT_WEBHOOK_SECRET": "too short"}, "must be 32 to 256 printable"),
    ],
)
def test_settings_refuse_a_wrong_channel_setting(extra, problem):
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env({**BASE, **extra})


def test_a_wrong_routing_key_is_never_quoted_in_the_problem():
    secret = "not-a-routing-key-but-secret-text"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({**BASE, "ETG_PAGERDUTY_ROUTING_KEY": secret})
    assert secret not in str(refused.value)


def test_loopback_http_is_accepted_for_the_simulator():
    env = {
        **BASE,
        "ETG_PAGERDUTY_EVENTS_URL": "http://127.0.0.1:8080/pagerduty/v2/enqueue",
        "ETG_ALERT_WEBHOOK_URL": "http://127.0.0.1:8080/alert-webhook/alerts",
        "ETG_ALERT_WEBHOOK_SECRET": "x" * 32,
    }
    assert Settings.from_env(env).alert_webhook_url == env["ETG_ALERT_WEBHOOK_URL"]
