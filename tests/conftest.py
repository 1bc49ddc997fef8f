"""Shared fixtures: one Azurite per test session, a fresh simulated tenant per test.

Each test gets its own table prefix, so tests never see each other's state while sharing one
emulator process (starting Azurite costs about a second).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from monitors.settings import Settings
from tests.helpers import serve_webhook_from_env, settings_for

# `make test` must give the same answer on every run, so its property tests use a fixed
# derivation of examples; `make fuzz` explores freshly each time with many more examples and
# is where new counterexamples are found (they then become explicit regression examples).
hypothesis_settings.register_profile(
    "repeatable",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("ETG_FUZZ_EXAMPLES", "20000")),
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def azurite() -> Iterator[object]:
    from devtools.simtenant.azurite import Azurite

    with Azurite() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def azurite_queues() -> Iterator[object]:
    """An Azurite with its Queue service as well (the fan-out of many tenants); its
    connection string names both endpoints. Started only by the tests that use queues."""
    from devtools.simtenant.azurite import Azurite

    with Azurite(queues=True) as emulator:
        yield emulator


@pytest.fixture
def table_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def scenario():
    from devtools.simtenant.scenario import demo_scenario

    return demo_scenario()


@pytest.fixture
def tenant(scenario):
    from devtools.simtenant.server import SimulatedTenant

    with SimulatedTenant(scenario) as sim:
        yield sim


@pytest.fixture
def settings(tenant, azurite, table_prefix) -> Settings:
    return settings_for(tenant.base_url, azurite.connection_string, table_prefix)


@pytest.fixture
def app_env(monkeypatch, settings) -> Settings:
    """The process environment the function app reads, pointed at this test's tenant/tables."""
    serve_webhook_from_env(monkeypatch, settings)
    return settings
