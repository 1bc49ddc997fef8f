"""Failures in words: result codes and phases decoded, and shown on the finding, the card, the
CLI and the weekly summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitors.alerts.cards import anomaly_card
from monitors.models import (
    Anomaly,
    Deployment,
    DeploymentFacts,
    DeploymentStatus,
    Finding,
    Policy,
    PolicyMatch,
    Scope,
    Status,
    Subject,
)
from monitors.render import anomalies_text
from monitors.rules.enrollment import judge
from monitors.rules.result_codes import (
    CODES,
    PHASES,
    describe_failure,
    hex_code,
    parse_code,
    phase_name,
    win32_error,
)
from monitors.summary.card import summary_card
from monitors.summary.compute import TOP_FAILURE_CODES, IsoWeek, compute_summary
from monitors.summary.html import render_html

TIMEOUT = -2147023436  # the failed live row of the deployment report
ENROLLED = datetime(2026, 11, 17, 8, 0, tzinfo=UTC)
GRAPH = "https://graph.microsoft.com"


# hex ---------------------------------------------------------------------------------------


def test_negative_code_is_shown_as_its_32_bit_twos_complement():
    assert hex_code(TIMEOUT) == "0x800705B4"
    assert hex_code(-1) == "0xFFFFFFFF"
    assert hex_code(-(2**31)) == "0x80000000"


def test_positive_and_zero_codes_are_eight_hex_digits():
    assert hex_code(0) == "0x00000000"
    assert hex_code(5) == "0x00000005"
    assert hex_code(0x87D1041C) == "0x87D1041C"
    assert hex_code(2**32 - 1) == "0xFFFFFFFF"


@pytest.mark.parametrize("code", [2**32, -(2**31) - 1, 10**20, -(10**20)])
def test_values_outside_32_bits_are_shown_as_given_not_wrapped(code):
    text = hex_code(code)
    assert text.startswith(str(code)) and "not a 32-bit code" in text
    assert "0x" not in text


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("-2147023436", TIMEOUT),
        (" 2147943860 ", 2147943860),
        ("0x800705B4", 0x800705B4),
        ("+5", 5),
        (TIMEOUT, TIMEOUT),
        ("", None),
        ("   ", None),
        (None, None),
        ("12abc", None),
        ("١٢", None),  # other scripts' digits are not a code
        (True, None),
    ],
)
def test_report_text_parses_to_a_code_or_none(value, code):
    assert parse_code(value) == code


# the table ---------------------------------------------------------------------------------


def test_timeout_decodes_to_its_documented_name_and_meaning():
    failure = describe_failure(TIMEOUT, None)
    assert (failure.hex, failure.name, failure.meaning) == (
        "0x800705B4",
        "ERROR_TIMEOUT",
        "the operation timed out",
    )
    assert failure.win32 == 1460


def test_same_code_decodes_alike_from_signed_unsigned_and_text_forms():
    forms = [TIMEOUT, TIMEOUT + 2**32, str(TIMEOUT), "0x800705b4"]
    decoded = {describe_failure(f, None).result for f in forms}
    assert decoded == {"0x800705B4 (ERROR_TIMEOUT)"}


def test_unknown_code_shows_hex_and_unknown_code_and_no_guess():
    failure = describe_failure(-2147024891 + 1, None)  # 0x80070006: not in the table
    assert failure.hex == "0x80070006"
    assert failure.name is None and failure.win32 is None
    assert failure.meaning == "unknown code"
    assert failure.result == "0x80070006 (unknown code)"
    assert failure.sentence == "Device preparation failed: 0x80070006 (unknown code)."


def test_win32_number_is_given_only_for_a_named_facility_win32_code():
    assert win32_error(0x80070643) == 1603
    assert win32_error(0x80070006) is None  # FACILITY_WIN32, but unnamed
    assert win32_error(0x80180014) is None  # named, but not FACILITY_WIN32
    assert win32_error(2**40) is None


def test_every_table_entry_is_a_32_bit_code_with_a_name_and_lower_case_meaning():
    assert 8 <= len(CODES) <= 15
    for code, entry in CODES.items():
        assert 0 <= code < 2**32
        assert entry.name and entry.meaning
        assert entry.meaning[0].islower() and not entry.meaning.endswith(".")


def test_absent_and_unreadable_codes_say_so():
    assert describe_failure(None, None).result == "no result code"
    unreadable = describe_failure("n/a", None)
    assert unreadable.hex is None and unreadable.result == "the result code could not be read"


# phases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["App installation", "app installation", " Script installation "])
def test_documented_phase_labels_read_in_intunes_words(label):
    assert phase_name(label) == PHASES[label.strip().lower()]


@pytest.mark.parametrize(
    ("phase", "text"), [("1796", "phase 1796 (unknown)"), (6, "phase 6 (unknown)")]
)
def test_numeric_phase_is_never_mapped_to_a_name(phase, text):
    assert phase_name(phase) == text


def test_other_labels_are_intunes_own_text_and_kept_short():
    assert phase_name("Installation de l'application") == "Installation de l'application"
    assert len(phase_name("x" * 500) or "") == 60
    assert phase_name("") is None and phase_name(None) is None


def test_sentence_names_phase_code_and_meaning():
    failure = describe_failure(TIMEOUT, "App installation")
    assert failure.phase_name == "App installation"
    assert failure.sentence == (
        "Device preparation failed during App installation: "
        "0x800705B4 (ERROR_TIMEOUT), the operation timed out."
    )


# the finding -------------------------------------------------------------------------------


def failed_facts(result_code="-2147023436", phase="App installation"):
    deployment = Deployment(
        "md-1",
        ENROLLED,
        DeploymentStatus.FAILED,
        "Failed",
        device_name="PC-1",
        duration_seconds=1237,
        result_code=result_code,
        phase=phase,
        current_phase="2",
    )
    policy = PolicyMatch(Policy("pol-1", "Standard", "t", 60), ("etg-1",), "enrollmentProfileName")
    return DeploymentFacts(deployment, policy, "obj-1", (), ENROLLED + timedelta(hours=2), None)


def failed_finding(**kw):
    judgement = judge(failed_facts(**kw), ENROLLED + timedelta(hours=3))
    return next(v for v in judgement.verdicts if isinstance(v, Finding))


def test_failed_deployment_finding_explains_the_code_and_phase_in_words():
    finding = failed_finding()
    assert finding.explanation == (
        "Device preparation failed on PC-1 during App installation: "
        "0x800705B4 (ERROR_TIMEOUT), the operation timed out."
    )


def test_failed_deployment_evidence_keeps_raw_values_next_to_decoded_ones():
    evidence = failed_finding().evidence
    assert evidence["result_code"] == "-2147023436" and evidence["phase"] == "App installation"
    assert evidence["current_provisioning_phase"] == "2"
    assert evidence["result_code_hex"] == "0x800705B4"
    assert evidence["result_name"] == "ERROR_TIMEOUT"
    assert evidence["phase_name"] == "App installation"


def test_failed_deployment_text_is_identical_scan_after_scan():
    first, second = failed_finding(), failed_finding()
    assert (first.explanation, first.evidence) == (second.explanation, second.evidence)


def test_failed_deployment_with_unknown_code_and_numeric_phase_guesses_nothing():
    finding = failed_finding(result_code="-1", phase="1796")
    assert finding.explanation == (
        "Device preparation failed on PC-1 during phase 1796 (unknown): 0xFFFFFFFF (unknown code)."
    )
    assert finding.evidence["result_name"] is None


# card, CLI, summary ------------------------------------------------------------------------


def failed_anomaly(evidence, first_seen=ENROLLED):
    return Anomaly(
        "deployment_failed",
        Subject(
            Scope.DEVICE,
            policy_id="pol-1",
            policy_name="Standard",
            managed_device_id="md-1",
            device_name="PC-1",
        ),
        Status.OPEN,
        first_seen,
        first_seen,
        "Device preparation failed on PC-1.",
        "fix",
        evidence,
    )


def card_facts(card):
    return {
        f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]
    }


def test_card_shows_result_with_hex_name_and_win32_number_and_phase_in_words():
    card = anomaly_card(failed_anomaly(failed_finding().evidence).to_json(), "opened", GRAPH)
    facts = card_facts(card)
    assert facts["Result"] == (
        "0x800705B4 (ERROR_TIMEOUT, Win32 error 1460): the operation timed out"
    )
    assert facts["Phase"] == "App installation"


def test_card_decodes_an_anomaly_stored_before_the_decoder_existed():
    old = failed_anomaly({"result_code": "-2147023436", "phase": "1796"})
    facts = card_facts(anomaly_card(old.to_json(), "opened", GRAPH))
    assert facts["Result"].startswith("0x800705B4 (ERROR_TIMEOUT")
    assert facts["Phase"] == "phase 1796 (unknown)"


def test_other_kinds_carry_no_result_fact():
    other = failed_anomaly({"result_code": "-2147023436"})
    other.kind = "etg_missing"
    assert "Result" not in card_facts(anomaly_card(other.to_json(), "opened", GRAPH))


def test_cli_listing_shows_the_decoded_failure_under_a_failed_deployment_only():
    failed = failed_anomaly({"result_code": "-2147023436", "phase": "App installation"})
    other = failed_anomaly({"result_code": "-2147023436"})
    other.kind = "etg_missing"
    text = anomalies_text([failed, other])
    line = "Result: 0x800705B4 (ERROR_TIMEOUT), the operation timed out; phase: App installation"
    assert text.count(line) == 1
    assert text.count("Result:") == 1


def summary_with(anomalies):
    week = IsoWeek.of(ENROLLED)
    return compute_summary(week, [], anomalies, [], {}, week.end + timedelta(hours=7))


def test_summary_ranks_the_weeks_failure_codes_in_words():
    anomalies = [failed_anomaly({"result_code": "-2147023436"}) for _ in range(3)]
    anomalies += [failed_anomaly({"result_code": "-2145910764"})]  # 0x80180014
    anomalies += [failed_anomaly({"result_code": "-1"}), failed_anomaly({})]
    codes = summary_with(anomalies)["failure_codes"]
    assert [(c["hex"], c["name"], c["count"]) for c in codes[:2]] == [
        ("0x800705B4", "ERROR_TIMEOUT", 3),
        ("0x80180014", "MENROLL_E_DEVICENOTSUPPORTED", 1),
    ]
    rest = {c["label"]: c["count"] for c in codes[2:]}
    assert rest == {"0xFFFFFFFF (unknown code)": 1, "no result code": 1}


def test_summary_counts_failures_opened_in_the_week_only():
    week = IsoWeek.of(ENROLLED)
    before = failed_anomaly({"result_code": "-2147023436"}, week.start - timedelta(seconds=1))
    inside = failed_anomaly({"result_code": "-2147023436"}, week.start)
    codes = summary_with([before, inside])["failure_codes"]
    assert [c["count"] for c in codes] == [1]


def test_summary_lists_at_most_the_top_codes():
    anomalies = [failed_anomaly({"result_code": str(-1 - i)}) for i in range(TOP_FAILURE_CODES + 4)]
    assert len(summary_with(anomalies)["failure_codes"]) == TOP_FAILURE_CODES


def test_summary_card_and_report_show_the_top_failure_codes():
    summary = summary_with([failed_anomaly({"result_code": "-2147023436"}) for _ in range(2)])
    card_text = " ".join(
        b.get("text", "") for b in summary_card(summary)["body"] if b["type"] == "TextBlock"
    )
    assert "Failed with: 0x800705B4 (ERROR_TIMEOUT) (2)" in card_text
    html = render_html(summary)
    assert "Why deployments failed" in html
    assert "<td>0x800705B4</td><td>ERROR_TIMEOUT</td><td>the operation timed out</td>" in html


def test_summary_kept_from_before_failure_codes_still_renders():
    summary = summary_with([])
    del summary["failure_codes"]
    assert "Why deployments failed" in render_html(summary)
    assert not any("Failed with" in b.get("text", "") for b in summary_card(summary)["body"])


def test_report_says_which_failures_had_no_code_without_calling_it_unknown():
    html = render_html(summary_with([failed_anomaly({}), failed_anomaly({"result_code": "-1"})]))
    assert "<td>none</td><td></td><td>no result code</td>" in html
    assert "<td>0xFFFFFFFF</td><td>unknown code</td><td>unknown code</td>" in html
