import json
import logging

import pytest
import structlog

from monitors.logs import REDACTED, configure_logging, redact_secrets, register_secret, scrub


def test_fields_named_like_secrets_are_masked_whatever_they_hold():
    out = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "client_state": "abc123xyz",
            "webhook_url": "https://x",
            "nested": {"token": "t0k3n"},
        },
    )
    assert out["client_state"] == REDACTED
    assert out["webhook_url"] == REDACTED
    assert out["nested"]["token"] == REDACTED


def test_secret_shapes_inside_free_text_are_masked():
    text = (
        "POST https://prod.westus.logic.azure.com/workflows/1/triggers?sig=AbCdEf123&api=1 "
        "AccountKey=Zm9vYmFy; Authorization: Bearer eyJ0eXAi.eyJzdWIi.sig"
    )
    cleaned = scrub(text)
    assert "AbCdEf123" not in cleaned
    assert "Zm9vYmFy" not in cleaned
    assert "eyJ0eXAi" not in cleaned
    assert cleaned.count(REDACTED) == 3


@pytest.mark.parametrize(
    "text,secret",
    [
        ("https://x/triggers?SIG=AbCdEf123&api=1", "AbCdEf123"),
        (f"https://x/triggers?{chr(0x17F)}ig=AbCdEf123", "AbCdEf123"),  # long s folds to s
        ("ACCOUNTKEY=Zm9vYmFy;", "Zm9vYmFy"),
        (f"Account{chr(0x212A)}ey=Zm9vYmFy;", "Zm9vYmFy"),  # the Kelvin sign folds to k
        ("sharedaccesssignature=sv-2020&x", "sv-2020"),
        ("authorization: BEARER eyJ0eXAi.eyJzdWIi", "eyJ0eXAi"),
        ("?ValidationToken=Validation%3a+Testing", "Validation%3a"),
        ('{"ClientState": "abc123xyz"}', "abc123xyz"),
        ("clientstate=abc123xyz", "abc123xyz"),
    ],
)
def test_secret_shapes_are_masked_in_any_case_the_patterns_ignore(text: str, secret: str) -> None:
    cleaned = scrub(text)
    assert secret not in cleaned and REDACTED in cleaned


def test_registered_secret_values_are_masked_anywhere(capsys):
    register_secret("s3cr3t-client-state-value")
    configure_logging("json", logging.INFO)
    structlog.get_logger("t").error("boom", detail="state was s3cr3t-client-state-value ok")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "s3cr3t-client-state-value" not in line
    assert record["detail"] == f"state was {REDACTED} ok"


def test_exception_tracebacks_are_scrubbed(capsys):
    configure_logging("json", logging.INFO)
    try:
        raise RuntimeError("failed posting to https://h/x?sig=TOPSECRETSIG")
    except RuntimeError:
        structlog.get_logger("t").exception("send.failed")
    err = capsys.readouterr().err
    assert "TOPSECRETSIG" not in err
    assert "send.failed" in err


class _Capture(logging.Handler):
    """Stands where the Functions Python worker puts its handler: on the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_in_azure_records_reach_the_root_handler_with_their_severity(monkeypatch, capsys):
    monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")
    register_secret("worker-secret-value-42")
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        configure_logging("auto", logging.INFO)
        log = structlog.get_logger("etg_monitor.alerts")
        log.debug("too.quiet")
        log.info("job.started", job="scan")
        log.warning("alert.retry_scheduled", error="HTTP 502")
        log.error("job.failed", error="token worker-secret-value-42 refused")
    finally:
        root.removeHandler(capture)
        monkeypatch.delenv("FUNCTIONS_WORKER_RUNTIME")
        configure_logging("json", logging.INFO)
    ours = [r for r in capture.records if r.name.startswith("etg_monitor")]
    assert [(r.levelno, json.loads(r.getMessage())["event"]) for r in ours] == [
        (logging.INFO, "job.started"),
        (logging.WARNING, "alert.retry_scheduled"),
        (logging.ERROR, "job.failed"),
    ]
    assert all(r.name == "etg_monitor.alerts" for r in ours)
    assert "worker-secret-value-42" not in ours[-1].getMessage()
    # The worker's handler is the only way out in Azure: nothing is printed besides it.
    assert capsys.readouterr().err == ""


def test_locally_records_go_to_stderr_and_not_to_other_root_handlers(capsys):
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        configure_logging("json", logging.INFO)
        structlog.get_logger("cli").warning("store.slow", seconds=3)
    finally:
        root.removeHandler(capture)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "store.slow" and line["level"] == "warning"
    assert not [r for r in capture.records if r.name.startswith("etg_monitor")]
