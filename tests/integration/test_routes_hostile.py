"""Every HTTP route of the function app against whatever a caller can send: any query string,
any parameters, any body. Each route answers (never raises), with one of its documented
statuses (never a 500), a short plain-text reason or its normal content, and never hands an
input back in a form a browser would interpret."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitors.summary.compute import IsoWeek
from tests.helpers import call_route, serve_webhook_from_env

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
CLIENT_STATE = "Hq3v9Tn6Wc2xLp8rZb5mKd7s"
# Every reason a route gives in plain text is a short sentence of these characters, so none
# can carry markup, a control character or a line break to whoever reads it.
PLAIN_REASON = re.compile(r"[A-Za-z0-9 ,.;:()/-]{1,100}")
ROUTES = settings(
    max_examples=max(100, settings.default.max_examples // 10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- what a caller can send ---------------------------------------------------------------------

MARKUP = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</title><h1>owned</h1>",
    "&lt;b&gt;",
    "{{7*7}}${7*7}",
    "%3Cscript%3E",
    "2026-W47<script>",
]
unicode_digits = st.text(st.characters(categories=["Nd"]), min_size=1, max_size=6)
weeks = st.one_of(
    # well formed, over every year and week number the pattern admits
    st.builds(lambda y, w: f"{y:04d}-W{w:02d}", st.integers(0, 9999), st.integers(0, 99)),
    # the edges of the calendar and of datetime
    st.sampled_from(["0001-W01", "0001-W08", "9999-W51", "9999-W52", "9999-W53", "0000-W01"]),
    # numbers of any size and sign
    st.builds(lambda y, w: f"{y}-W{w}", st.integers(-(10**30), 10**30), st.integers(-9, 10**30)),
    # digits of other scripts, which int() reads
    st.builds(lambda y, w: f"{y}-W{w}", unicode_digits, unicode_digits),
    # padding, case and separators
    st.builds(
        lambda pad, w, end: f"{pad}{w}{end}",
        st.sampled_from(["", " ", "\t", "\n", "\x00", "\u00a0", "\ufeff"]),
        st.sampled_from(["2026-W47", "2026-w47", "2026W47", "2026-W47-1", "2026-47"]),
        st.sampled_from(["", " ", "\n", "\x00", "\u202e"]),
    ),
    st.sampled_from(MARKUP),
    st.text(max_size=80),
)
values = weeks | st.text(st.characters(codec="utf-8"), max_size=200)
keys = (
    st.sampled_from(["week", "week", "Week", "WEEK", "code", "validationToken"])
    | st.sampled_from(MARKUP)
    | st.text(max_size=20)
)
# Parameters as the host hands them over, or decoded from a raw query string as it would.
query_params = st.dictionaries(keys, values, max_size=4) | st.builds(
    lambda qs: dict(parse_qsl(qs, keep_blank_values=True)),
    st.text(max_size=200) | st.sampled_from(["week=2026-W47&week=<b>", "week=%00", "=&&=="]),
)


def assert_plain_reason(response):
    assert response.mimetype == "text/plain"
    reason = response.get_body().decode()
    assert PLAIN_REASON.fullmatch(reason), reason


# Fragments only the payloads above carry, so finding one in an answer means it was echoed
# (the report's own HTML has tags too, so a bare "<b>" drawn at random proves nothing).
MARKERS = ("<script", "onerror=", "<img", "<h1>owned")


def assert_not_echoed(params, body):
    """No input that carries markup comes back as it was sent."""
    for text in (*params, *params.values()):
        if any(marker in text for marker in MARKERS):
            assert text not in body, text


# --- GET reports/weekly -------------------------------------------------------------------------


def expected_week(text):
    """The week the route must report, or None when it must answer 400."""
    now = datetime.now(UTC)
    if not text:
        return IsoWeek.last_complete(now)
    try:
        week = IsoWeek.parse(text)
    except ValueError:
        return None
    return week if week.start <= now else None


@pytest.mark.parametrize(
    "week,status",
    [
        ("0001-W01", 400),  # its trend would start before year 1: was an OverflowError
        ("0001-W07", 400),
        ("0001-W08", 200),  # the first week whose trend fits the calendar
        ("9999-W51", 400),  # not started yet
        ("9999-W52", 400),  # ends after the last representable day
        ("0000-W01", 400),
        ("2026-W99", 400),
        ("99999999999999999999-W01", 400),
        ("٢٠٢٦-W47", 400),  # Arabic-Indic digits
        ("２０２６-Ｗ47", 400),  # full-width
        ("2026-W47", 200),
        (" 2026-W47\n", 200),
    ],
)
def test_report_route_answers_edge_weeks_with_a_report_or_a_short_400(app_env, week, status):
    response = call_route("weekly_report", "GET", "reports/weekly", params={"week": week})
    assert response.status_code == status
    if status == 400:
        assert_plain_reason(response)
    else:
        assert response.mimetype == "text/html"
        assert f"ETG compliance, week {IsoWeek.parse(week)}" in response.get_body().decode()


def test_report_route_answers_any_query_with_a_report_or_a_short_400(app_env):
    @ROUTES
    @given(params=query_params)
    @example(params={"week": "0001-W01"})
    @example(params={"week": "9999-W52"})
    @example(params={"week": "2026-W47", "<script>": "<script>alert(1)</script>"})
    @example(params={})
    def check(params):
        response = call_route("weekly_report", "GET", "reports/weekly", params=params)
        seen[response.status_code] += 1
        body = response.get_body().decode()
        week = expected_week(params.get("week"))
        if week is None:
            assert response.status_code == 400
            assert_plain_reason(response)
        else:
            assert response.status_code == 200 and response.mimetype == "text/html"
            assert f"ETG compliance, week {week}" in body
        assert_not_echoed(params, body)

    seen: Counter[int] = Counter()
    check()
    assert set(seen) == {200, 400}, seen  # both answers were reached, whatever was drawn


# --- GET health ---------------------------------------------------------------------------------


def health_body(response):
    """The health report without the moment it was made."""
    body = json.loads(response.get_body())
    body.pop("checked_at", None)
    return body


def test_health_route_ignores_any_query(app_env):
    plain = call_route("health", "GET", "health")
    assert plain.status_code in (200, 503) and plain.mimetype == "application/json"
    expected = health_body(plain)

    @ROUTES
    @given(params=query_params)
    @example(params={"status": "<script>alert(1)</script>", "code": "x"})
    def check(params):
        response = call_route("health", "GET", "health", params=params)
        assert response.status_code == plain.status_code
        assert response.mimetype == "application/json"
        assert health_body(response) == expected  # nothing of the query reaches the answer

    check()


# --- POST graph/notifications -------------------------------------------------------------------

NOTIFICATION_ANSWERS = {202, 400, 403, 413, 415}
bodies = st.binary(max_size=1024) | st.builds(
    lambda v: json.dumps(v).encode(),
    st.dictionaries(
        st.sampled_from(["value", "validationToken", "clientState"]),
        st.lists(
            st.dictionaries(
                st.sampled_from(["subscriptionId", "clientState", "resource", "changeType"]),
                values,
                max_size=4,
            ),
            max_size=3,
        )
        | values,
        max_size=2,
    ),
)
content_types = st.sampled_from(["application/json", "text/plain", "", "text/html"]) | st.text(
    st.characters(codec="latin-1", exclude_categories=["Cs", "Cc"]), max_size=40
)


@pytest.fixture
def webhook_env(app_env, monkeypatch):
    serve_webhook_from_env(monkeypatch, dataclasses.replace(app_env, client_state=CLIENT_STATE))


def valid_token(params):
    token = params.get("validationToken")
    return token if token and len(token) <= 1024 and token.isprintable() else None


def test_notification_route_answers_any_query_and_body_with_a_documented_status(webhook_env):
    @ROUTES
    @given(params=query_params, body=bodies, content_type=content_types)
    @example(params={"validationToken": "<script>alert(1)</script>"}, body=b"", content_type="")
    @example(params={"validationToken": "a\nb"}, body=b"", content_type="text/html")
    @example(params={"validationToken": ""}, body=b"{}", content_type="application/json")
    @example(params={"week": "x"}, body=b'{"value": [{}]}', content_type="application/json")
    def check(params, body, content_type):
        response = call_route(
            "graph_notifications",
            "POST",
            "graph/notifications",
            params=params,
            headers={"content-type": content_type},
            body=body,
        )
        seen[response.status_code] += 1
        answer = response.get_body().decode()
        token = valid_token(params)
        if token is not None:
            # The handshake: Graph requires the token back verbatim, as text, never markup.
            assert response.status_code == 200 and response.mimetype == "text/plain"
            assert answer == token
            return
        assert response.status_code in NOTIFICATION_ANSWERS
        if response.status_code == 202:
            assert answer == ""
        else:
            assert_plain_reason(response)
            assert CLIENT_STATE not in answer
        assert_not_echoed(params, answer)

    seen: Counter[int] = Counter()
    check()
    assert {200, 400, 403, 415} <= set(seen), seen
