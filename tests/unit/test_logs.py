import json
import logging

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
