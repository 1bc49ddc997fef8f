"""Fault injection: throttling, outages, missing permissions, slow or dead connections.

Rules are matched per Graph request (per inner request inside ``$batch`` too), so
a test can say "the third devices look-up answers 429" without touching the
handlers.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

# "late_answer" (Teams only): the message is delivered, then the answer never comes.
# "corrupt": a 200 whose body is JSON of the wrong shape (items of any type, fields with the
# wrong types, unknown enum values), as a broken or changed API would send.
FaultKind = Literal["status", "latency", "reset", "hang", "expire_delta", "late_answer", "corrupt"]
FAULT_KINDS: tuple[str, ...] = (
    "status",
    "latency",
    "reset",
    "hang",
    "expire_delta",
    "late_answer",
    "corrupt",
)
CORRUPT_BODY: dict[str, Any] = {
    "value": [
        None,
        7,
        "text",
        [],
        {"id": None, "activityDateTime": "yesterday", "targetResources": "none"},
        {"id": 12, "deviceId": ["x"], "enrolledDateTime": 3.5, "azureADDeviceId": {}},
        {"unexpected": True, "deploymentStatus": "sideways"},
    ],
    "@odata.nextLink": None,
    "responses": "not a list",
    "targetType": "unknownFutureValue",
    "status": "sideways",
}

# Endpoint names used in fault rules and in request statistics.
ENDPOINT_NAMES: frozenset[str] = frozenset(
    {
        "configurationPolicies.list",
        "configurationPolicies.get",
        "configurationPolicies.retrieveEnrollmentTimeDeviceMembershipTarget",
        "configurationPolicies.retrieveJustInTimeConfiguration",
        "configurationPolicies.assignments",
        "groups.get",
        "groups.owners",
        "groups.members",
        "groups.delta",
        "groups.members.add",
        "groups.owners.add",
        "mobileApps.get",
        "mobileApps.assignments",
        "deviceManagementScripts.get",
        "deviceManagementScripts.assignments",
        "servicePrincipals.list",
        "exportJobs.create",
        "exportJobs.get",
        "exportJobs.download",
        "managedDevices.list",
        "managedDevices.get",
        "devices.list",
        "devices.get",
        "devices.checkMemberGroups",
        "users.get",
        "users.transitiveMemberOf",
        "users.checkMemberGroups",
        "servicePrincipals.ownedObjects",
        "directoryAudits.list",
        "subscriptions.create",
        "subscriptions.list",
        "subscriptions.get",
        "subscriptions.update",
        "subscriptions.delete",
        "subscriptions.reauthorize",
        "$batch",
        "teams",
    }
)

# Long enough to outlast any sane client timeout, short enough that a forgotten
# rule cannot pin a worker forever; shutdown interrupts it anyway.
HANG_SECONDS = 120.0


@dataclass(slots=True)
class FaultRule:
    """One fault: where it applies (``endpoint``), what happens (``kind``) and how often.

    ``endpoint`` is an endpoint name from ``ENDPOINT_NAMES`` or, failing that, a
    regular expression searched in the request path. Selection: the rule counts the
    requests it matches (1-based); it fires when the count is within ``first_n``,
    is a multiple of ``every_nth`` and a seeded draw falls under ``probability``.
    """

    endpoint: str
    kind: FaultKind = "status"
    status: int = 429
    retry_after: float | None = 1
    latency_ms: float = 0
    probability: float = 1.0
    first_n: int | None = None
    every_nth: int | None = None
    seed: int = 0
    # Only requests for a second or later page (they carry a skip or delta token): "the
    # listing started fine and broke midway".
    continuation_only: bool = False
    # Optional: a regular expression that must also be found in the request's decoded query
    # values, e.g. one ETG's id in an audit filter.
    query: str | None = None
    matched: int = field(default=0, init=False, compare=False)
    fired: int = field(default=0, init=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.every_nth is not None and self.every_nth < 1:
            raise ValueError("every_nth must be >= 1")
        if self.first_n is not None and self.first_n < 0:
            raise ValueError("first_n must be >= 0")
        self._rng = random.Random(self.seed)
        self._pattern = None if self.endpoint in ENDPOINT_NAMES else re.compile(self.endpoint)

    def matches(self, endpoint: str, path: str, query: str = "") -> bool:
        if self.query is not None and re.search(self.query, query) is None:
            return False
        if self._pattern is None:
            return endpoint == self.endpoint
        return self._pattern.search(path) is not None

    def _roll(self) -> bool:
        self.matched += 1
        if self.first_n is not None and self.matched > self.first_n:
            return False
        if self.every_nth is not None and self.matched % self.every_nth != 0:
            return False
        # Always draw so the sequence of outcomes depends only on the seed and the
        # number of matched requests, not on which other conditions held.
        draw = self._rng.random()
        if draw >= self.probability:
            return False
        self.fired += 1
        return True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data, dict):
            raise ValueError("a fault rule must be a JSON object")
        allowed = {
            "endpoint",
            "kind",
            "status",
            "retry_after",
            "latency_ms",
            "probability",
            "first_n",
            "every_nth",
            "seed",
            "continuation_only",
            "query",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {', '.join(unknown)}")
        if "endpoint" not in data:
            raise ValueError("a fault rule needs 'endpoint'")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "probability": self.probability,
            "first_n": self.first_n,
            "every_nth": self.every_nth,
            "seed": self.seed,
            "continuation_only": self.continuation_only,
            "query": self.query,
            "matched": self.matched,
            "fired": self.fired,
        }


@dataclass(slots=True, frozen=True)
class FaultDecision:
    """What to do with one request: extra delay, then possibly one terminal fault."""

    delay_s: float = 0.0
    fault: FaultRule | None = None


NO_FAULT = FaultDecision()


class FaultPlan:
    """The active rules plus a global latency; safe to change from any thread."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._latency_ms = float(latency_ms)
        # Graph may return fewer items per page than $top asks for; a cap makes small
        # scenarios page like large ones.
        self.page_cap: int | None = None

    @property
    def latency_ms(self) -> float:
        """Added to every Graph request (once per HTTP request, not per inner batch item)."""
        return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        if value < 0:
            raise ValueError("latency_ms must be >= 0")
        self._latency_ms = float(value)

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        """Drop every rule; the global latency is kept."""
        with self._lock:
            self._rules = []

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def decide(
        self, endpoint: str, path: str, *, has_delta_token: bool = False, query: str = ""
    ) -> FaultDecision:
        """Roll every matching rule for one request.

        Delays of every fired rule add up; the first non-latency rule that fires
        is the terminal fault. An
        ``expire_delta`` rule only matches requests that carry a delta or skip token.
        """
        delay_ms = 0.0
        terminal: FaultRule | None = None
        with self._lock:
            for rule in self._rules:
                if (rule.kind == "expire_delta" or rule.continuation_only) and not has_delta_token:
                    continue
                if not rule.matches(endpoint, path, query) or not rule._roll():
                    continue
                # Any fired rule may carry a delay, so "slow, then 503" is one rule.
                delay_ms += rule.latency_ms
                if rule.kind != "latency" and terminal is None:
                    terminal = rule
        if delay_ms == 0.0 and terminal is None:
            return NO_FAULT
        return FaultDecision(delay_s=delay_ms / 1000.0, fault=terminal)
