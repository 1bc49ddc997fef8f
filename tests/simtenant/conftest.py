from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from devtools.simtenant import DeviceSpec, Policy, Scenario, SimulatedTenant, demo_scenario


@pytest.fixture(scope="session")
def demo() -> Scenario:
    return demo_scenario()


@pytest.fixture
def tenant(demo: Scenario) -> Iterator[SimulatedTenant]:
    # A fresh tenant per test: tests mutate state, faults and the clock freely.
    with SimulatedTenant(demo) as running:
        yield running


@pytest.fixture
def client(tenant: SimulatedTenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tenant.base_url, timeout=10) as http:
        yield http


@pytest.fixture
def device_by_note(demo: Scenario) -> Callable[[str], DeviceSpec]:
    def find(fragment: str) -> DeviceSpec:
        matches = [d for d in demo.devices if fragment.lower() in d.note.lower()]
        assert matches, f"no demo device whose note mentions {fragment!r}"
        return matches[0]

    return find


@pytest.fixture
def policy_named(demo: Scenario) -> Callable[[str], Policy]:
    def find(name: str) -> Policy:
        return next(p for p in demo.policies if p.name == name)

    return find
