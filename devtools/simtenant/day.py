"""A simulated working day: deployments spread over hours, the real latencies, the ground truth.

``generate_day_scenario`` builds a small tenant (the scale generator's policies, ETGs, users and
failure modes) whose deployments enroll during the day rather than before it, with the three
latencies that decide how fast anything can be known:

- the report export lags each deployment by a few minutes (``DeviceSpec.report_delay_s``);
- directory audit events arrive 2 to 60 minutes late (``MembershipEvent.audit_delay_s``);
- a membership change reaches groups/delta and change notifications within a minute
  (``Scenario.delta_delay_s``).

``ground_truth`` says, from each device's spec alone, which anomaly the monitor should raise for
it and since when it is true, so a benchmark can score what the monitor alerted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from devtools.simtenant.generate import (
    DEFAULT_START,
    _DeviceFactory,
    _pick_mode,
    _users_by_policy,
    generate_scale_scenario,
)
from devtools.simtenant.scenario import DeviceSpec, Scenario

# memdocs autopilot/device-preparation/reporting-monitoring.md calls the deployment report "near
# real-time" and gives no figure: this range is an assumption (UNVERIFIED), each deployment
# drawing its own lag from it.
REPORT_DELAY_RANGE_S = (180.0, 480.0)
# Graph's change-notification latency table gives groups "less than 2 minutes" on average and
# 15 minutes at most (microsoft-graph-docs-contrib
# concepts/includes/change-notifications-delivery-latency.md); delta shows a change as soon as
# Graph has it. A day of minutes is modelled with 30 s, inside that average.
DELTA_DELAY_S = 30.0
# Entra's reporting latencies give directory audit logs 2 min at the 95th percentile and 5 min
# at the 99th (MicrosoftDocs/azure-docs
# articles/active-directory/reports-monitoring/reference-reports-latencies.md); tenants report
# much longer waits, so the day is more pessimistic than the document: a share (lower bound,
# upper bound) per band, 2 to 60 minutes in all.
AUDIT_DELAY_BANDS: tuple[tuple[float, float, float], ...] = (
    (0.10, 120.0, 300.0),
    (0.75, 300.0, 900.0),
    (0.15, 900.0, 3600.0),
)
# Kinds that describe one question, "is the device in its ETG as it should be": a refinement
# from one to another is the same anomaly, never a second opening alert.
ETG_FAMILY = frozenset({"etg_missing", "etg_late", "etg_removed"})


def audit_delay_s(rng: random.Random) -> float:
    """One audit event's delay, drawn from ``AUDIT_DELAY_BANDS``."""
    draw = rng.random()
    for share, low, high in AUDIT_DELAY_BANDS:
        if draw < share:
            return rng.uniform(low, high)
        draw -= share
    low, high = AUDIT_DELAY_BANDS[-1][1:]
    return rng.uniform(low, high)


def generate_day_scenario(
    deployments: int = 500,
    hours: float = 24.0,
    *,
    seed: int = 13,
    start: datetime = DEFAULT_START,
    policies: int = 2,
    report_delay_range_s: tuple[float, float] = REPORT_DELAY_RANGE_S,
    delta_delay_s: float = DELTA_DELAY_S,
    modes: Sequence[str] | None = None,
) -> Scenario:
    """``deployments`` enrolling uniformly over ``hours`` from ``start`` (the scenario's start,
    so nothing has happened yet), with the scale generator's mix of failure modes, or
    ``modes`` in turn (its names are ``FAILURE_MODES``' and "healthy")."""
    scenario = generate_scale_scenario(
        deployments=0,
        etg_members=200,
        audit_events=0,
        policies=policies,
        seed=seed,
        start=start,
        users=100,
        other_groups=4,
    )
    rng = random.Random(seed * 7919 + deployments)
    factory = _DeviceFactory(rng, scenario.policies, "contoso.com", _users_by_policy(scenario))
    span_s = hours * 3600.0
    offsets = sorted(rng.uniform(0, span_s) for _ in range(deployments))
    low, high = report_delay_range_s
    for i, offset in enumerate(offsets):
        mode = modes[i % len(modes)] if modes else _pick_mode(rng)
        device = factory.make(start + timedelta(seconds=offset), mode)
        device.report_delay_s = rng.uniform(low, high)
        if device.note != "slow_audit":  # that mode keeps its own 30-60 minute delay
            for event in device.membership:
                event.audit_delay_s = audit_delay_s(rng)
        scenario.devices.append(device)
    scenario.delta_delay_s = delta_delay_s
    scenario.validate()
    return scenario


@dataclass(frozen=True, slots=True)
class Truth:
    """What a deployment's spec says happened, and which alert that calls for.

    ``family`` is None for a deployment that needs no alert. ``since`` is when the anomaly
    became true (provisioning completed for a missing or late join and a failure, the removal
    for a removed device, the timeout for a stuck one); ``report_at`` is when the report first
    shows the state that proves it (the completed row; the event itself for the others)."""

    managed_device_id: str
    device_name: str
    mode: str
    family: str | None
    kinds: frozenset[str]
    since: datetime | None
    completed_at: datetime | None
    report_at: datetime | None


def kind_family(kind: str) -> str:
    """The anomaly a kind belongs to: the ETG kinds are one, any other kind is its own."""
    return "etg" if kind in ETG_FAMILY else kind


def _etg_truth(device: DeviceSpec, completed: datetime) -> tuple[frozenset[str], datetime | None]:
    member = False
    removed_at: datetime | None = None
    for event in sorted(device.membership, key=lambda e: e.offset_s):
        at = device.enrolled_at + timedelta(seconds=event.offset_s)
        if at <= completed:
            member = event.op == "add"
        elif member and event.op == "remove" and removed_at is None:
            removed_at = at
    if not member:
        # Never joined, or will join late: either kind is right, refined as evidence arrives.
        return frozenset({"etg_missing", "etg_late"}), completed
    if removed_at is not None:
        return frozenset({"etg_removed"}), removed_at
    return frozenset(), None


def device_truth(device: DeviceSpec, timeout_minutes: int) -> Truth:
    enrolled = device.enrolled_at
    deployment = device.deployment
    lag = timedelta(seconds=device.report_delay_s)
    kinds: frozenset[str] = frozenset()
    since = completed = report_at = None
    if deployment.outcome == "in_progress":
        kinds = frozenset({"deployment_stuck"})
        since = report_at = enrolled + timedelta(minutes=timeout_minutes)
    else:
        completed = enrolled + timedelta(seconds=deployment.duration_s)
        if deployment.outcome == "failed":
            kinds, since, report_at = frozenset({"deployment_failed"}), completed, completed + lag
        else:
            kinds, since = _etg_truth(device, completed)
            if since is not None:
                report_at = completed + lag if since == completed else since
    family = kind_family(next(iter(kinds))) if kinds else None
    return Truth(
        device.managed_device_id,
        device.device_name,
        device.note,
        family,
        kinds,
        since,
        completed,
        report_at,
    )


def ground_truth(scenario: Scenario) -> dict[str, Truth]:
    """Every deployment's truth, by managed device id."""
    timeouts = {p.id: p.timeout_minutes for p in scenario.policies}
    return {
        d.managed_device_id: device_truth(d, timeouts.get(d.policy_id or "", 60))
        for d in scenario.devices
    }
