"""Fixtures shared by the integration tests (Azurite and the simulated tenant come from
tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from monitors.settings import Settings
from tests.helpers import app_functions


@pytest.fixture
def scan_settings(settings: Settings) -> Settings:
    """The scan as the demo runs it: with the detailed app and script reports."""
    return dataclasses.replace(settings, detailed_reports=True)


@pytest.fixture
def alert_settings(settings: Settings, tenant: Any) -> Settings:
    """Alerts delivered to the simulated tenant's Teams channel."""
    return dataclasses.replace(settings, teams_webhook_url=tenant.teams_url, detailed_reports=True)


@pytest.fixture
def function_host() -> Iterator[Any]:
    """The function app's HTTP functions served on a loopback port, as Graph reaches them."""
    from devtools.simtenant.funchost import FunctionHost

    with FunctionHost(list(app_functions().values())) as host:
        yield host
