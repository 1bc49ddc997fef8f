"""Coverage-guided fuzzing of every parser that reads outside input, with atheris (libFuzzer).

`make fuzz` runs it after the property tests. The first byte picks the parser; the rest is the
input. A parser may answer with a value or its own documented refusal (Rejected from the
webhook, MalformedResponse from a Graph parser); anything else is a crash and a finding.

    python tests/fuzz/atheris_parsers.py -atheris_runs=300000
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from monitors.graph.audit import parse_audit_event
    from monitors.graph.devices import parse_managed_device
    from monitors.graph.errors import MalformedResponse
    from monitors.graph.policies import parse_etg_response, parse_policy
    from monitors.graph.reports import (
        parse_deployment_row,
        parse_export,
        parse_install_rows,
        parse_report_time,
    )
    from monitors.notifications.webhook import Rejected, parse_notifications, validation_token

STATE = "fuzz-client-state-0123456789"
SUB = "6f0c2a4e-1b3d-4e5f-8a9b-0c1d2e3f4a5b"
REFUSALS = (Rejected, MalformedResponse)


def _json(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _mapping(data: bytes) -> dict[str, object]:
    value = _json(data)
    return value if isinstance(value, dict) else {"value": value}


def _report_rows(data: bytes, name: str) -> list[dict[str, str]]:
    """The bytes as the one file of an export zip, read the way the scan reads a download."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return parse_export(buffer.getvalue())


def webhook(data: bytes) -> None:
    parse_notifications(
        data, "application/json", client_state=STATE, known_subscriptions={SUB}, tenant_id=None
    )


def token(data: bytes) -> None:
    echoed = validation_token({"validationToken": data.decode("utf-8", "replace")})
    assert echoed is None or echoed.isprintable()


def deployment_row(data: bytes) -> None:
    for row in _report_rows(data, "AutopilotV2DeploymentStatus.csv"):
        with contextlib.suppress(MalformedResponse):
            parse_deployment_row(row)


def install_rows(data: bytes) -> None:
    parse_install_rows(_report_rows(data, "report.json" if data[:1] == b"{" else "r.csv"), "app")


def etg(data: bytes) -> None:
    parse_etg_response(_json(data), "fuzz")


def items(data: bytes) -> None:
    item = _mapping(data)
    for parse in (parse_policy, parse_managed_device):
        with contextlib.suppress(MalformedResponse):
            parse(item)
    parse_audit_event(item)


def export(data: bytes) -> None:
    parse_export(data)


def report_time(data: bytes) -> None:
    parse_report_time(data.decode("utf-8", "replace"))


TARGETS: list[Callable[[bytes], None]] = [
    webhook,
    token,
    deployment_row,
    install_rows,
    etg,
    items,
    export,
    report_time,
]


def one_input(data: bytes) -> None:
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    with contextlib.suppress(REFUSALS):
        target(data[1:])


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
