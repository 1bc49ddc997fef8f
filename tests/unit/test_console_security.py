"""The console's principal parsing, authorization and CSRF tokens, on hostile input."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from monitors.console.security import (
    CSRF_LIFETIME,
    MAX_PRINCIPAL_HEADER,
    Principal,
    Refusal,
    authorize,
    csrf_token,
    csrf_valid,
    principal_from_headers,
    request_is_loopback,
)

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
OPERATORS = "0b8a5d7e-1c2f-4e3a-9b6d-7f8e9a0b1c2d"
SECRET = "a-console-secret-of-at-least-32-characters"
APP = "https://func-x.azurewebsites.net/api/console/anomalies"


def principal_header(*groups, extra=()):
    claims = [{"typ": "groups", "val": g} for g in groups] + list(extra)
    body = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(body).encode()).decode()


def signed_in(*groups, name="megan.bowen@contoso.com"):
    return {
        "x-ms-client-principal": principal_header(*groups),
        "x-ms-client-principal-name": name,
        "x-ms-client-principal-id": "5d6e7f80-1111-2222-3333-444455556666",
    }


def test_principal_is_read_from_app_service_headers_with_its_groups():
    p = principal_from_headers(signed_in(OPERATORS.upper(), "other"))
    assert p == Principal(
        "megan.bowen@contoso.com",
        "5d6e7f80-1111-2222-3333-444455556666",
        frozenset({OPERATORS, "other"}),
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ms-client-principal-name": "megan@contoso.com"},  # no claims header
        {"x-ms-client-principal": principal_header(OPERATORS)},  # no name
        {**signed_in(OPERATORS), "x-ms-client-principal": "not base64!"},
        {**signed_in(OPERATORS), "x-ms-client-principal": base64.b64encode(b"[1,2]").decode()},
        {**signed_in(OPERATORS), "x-ms-client-principal": base64.b64encode(b"{").decode()},
        {**signed_in(OPERATORS), "x-ms-client-principal-name": "<script>alert(1)</script>"},
        {**signed_in(OPERATORS), "x-ms-client-principal-name": "a\nb"},
        {**signed_in(OPERATORS), "x-ms-client-principal": "A" * (MAX_PRINCIPAL_HEADER + 4)},
    ],
)
def test_missing_malformed_or_oversized_principal_headers_are_no_principal(headers):
    assert principal_from_headers(headers) is None
    assert authorize(headers, APP, OPERATORS, None, platform_auth=True) is Refusal.NO_PRINCIPAL


def test_claims_that_are_not_typ_val_strings_are_ignored():
    bad = [{"typ": "groups", "val": 7}, {"typ": ["groups"], "val": OPERATORS}, "groups"]
    headers = {**signed_in(), "x-ms-client-principal": principal_header(extra=bad)}
    assert authorize(headers, APP, OPERATORS, None, platform_auth=True) is Refusal.NOT_OPERATOR


def test_member_of_the_operators_group_is_let_in():
    who = authorize(signed_in(OPERATORS), APP, OPERATORS, None, platform_auth=True)
    assert isinstance(who, Principal) and who.name == "megan.bowen@contoso.com"


def test_signed_in_principal_outside_the_operators_group_is_refused():
    assert (
        authorize(signed_in("someone-else"), APP, OPERATORS, None, platform_auth=True)
        is Refusal.NOT_OPERATOR
    )


def test_without_a_configured_operators_group_nobody_signed_in_is_let_in():
    assert (
        authorize(signed_in(OPERATORS), APP, None, None, platform_auth=True) is Refusal.NOT_OPERATOR
    )


def test_principal_headers_are_ignored_unless_app_service_authentication_is_on():
    # Without the platform in front, nothing strips these headers: anyone could send them.
    assert authorize(signed_in(OPERATORS), APP, OPERATORS, None) is Refusal.NO_PRINCIPAL
    who = authorize(signed_in(OPERATORS), APP, OPERATORS, None, platform_auth=True)
    assert isinstance(who, Principal)


def test_development_principal_is_injected_only_on_a_loopback_host():
    local = "http://127.0.0.1:7071/api/console/anomalies"
    who = authorize({"host": "127.0.0.1:7071"}, local, OPERATORS, "dev@contoso.com")
    assert isinstance(who, Principal) and who.development and who.name == "dev@contoso.com"
    assert authorize({}, APP, OPERATORS, "dev@contoso.com") is Refusal.NO_PRINCIPAL
    # A Host header naming another site over a loopback connection is not local use.
    forged = {"host": "func-x.azurewebsites.net"}
    assert authorize(forged, local, OPERATORS, "dev@contoso.com") is Refusal.NO_PRINCIPAL


@pytest.mark.parametrize(
    "url,host,loopback",
    [
        ("http://127.0.0.1:8080/x", "127.0.0.1:8080", True),
        ("http://localhost/x", None, True),
        ("http://[::1]:80/x", "[::1]:80", True),
        ("https://func-x.azurewebsites.net/x", "func-x.azurewebsites.net", False),
        ("http://127.0.0.1/x", "evil.example", False),
        ("http://127.0.0.1/x", "[bad", False),
    ],
)
def test_loopback_means_both_the_url_and_the_host_header(url, host, loopback):
    assert request_is_loopback(url, host) is loopback


def test_csrf_token_is_valid_for_its_principal_and_anomaly_until_it_expires():
    token = csrf_token(SECRET, "megan", "etg_missing.ZGV2aWNl", NOW)
    assert csrf_valid(SECRET, token, "megan", "etg_missing.ZGV2aWNl", NOW + timedelta(minutes=5))
    assert not csrf_valid(SECRET, token, "megan", "etg_missing.ZGV2aWNl", NOW + CSRF_LIFETIME)


@pytest.mark.parametrize(
    "principal,anomaly,secret",
    [
        ("adele", "etg_missing.ZGV2aWNl", SECRET),
        ("megan", "etg_late.ZGV2aWNl", SECRET),
        ("megan", "etg_missing.ZGV2aWNl", SECRET + "x"),
    ],
)
def test_csrf_token_of_another_principal_anomaly_or_secret_is_refused(principal, anomaly, secret):
    token = csrf_token(SECRET, "megan", "etg_missing.ZGV2aWNl", NOW)
    assert not csrf_valid(secret, token, principal, anomaly, NOW)


@pytest.mark.parametrize("token", [None, "", "x", "1.2", "9999999999." + "A" * 43, "a" * 5000])
def test_malformed_or_forged_csrf_tokens_are_refused(token):
    assert not csrf_valid(SECRET, token, "megan", "etg_missing.ZGV2aWNl", NOW)


def test_a_token_with_a_later_expiry_spliced_in_is_refused():
    token = csrf_token(SECRET, "megan", "a.b", NOW)
    expires, mac = token.split(".")
    assert not csrf_valid(SECRET, f"{int(expires) + 86400}.{mac}", "megan", "a.b", NOW)
