"""Suppressions: an operator's decision to stop alerting on a device, a policy or a kind.

A suppressed anomaly is still recorded and reported (status ``suppressed``); when the
suppression expires or is lifted, the anomaly returns to ``open`` and alerts again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from monitors.models import JSON, Anomaly, Status
from monitors.rules.lifecycle import SuppressionCheck, Transition, suppression_change


class SuppressionScope(StrEnum):
    DEVICE = "device"
    POLICY = "policy"
    KIND = "kind"


@dataclass(frozen=True, slots=True)
class Suppression:
    id: str
    scope: SuppressionScope
    value: str
    reason: str
    created_at: datetime
    expires_at: datetime | None = None
    created_by: str | None = None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at

    def matches(self, anomaly: Anomaly) -> bool:
        wanted = self.value.strip().casefold()
        s = anomaly.subject
        if self.scope is SuppressionScope.KIND:
            return anomaly.kind.casefold() == wanted
        candidates: tuple[str | None, ...]
        if self.scope is SuppressionScope.POLICY:
            candidates = (s.policy_id, s.policy_name)
        else:
            candidates = (s.managed_device_id, s.device_name, s.serial_number)
        return any(c is not None and c.casefold() == wanted for c in candidates)

    def describe(self) -> str:
        until = f" until {self.expires_at.isoformat()}" if self.expires_at else ""
        return f"{self.scope.value} {self.value}: {self.reason}{until}"

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "scope": self.scope.value,
            "value": self.value,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "created_by": self.created_by,
        }


def checker(suppressions: Sequence[Suppression], now: datetime) -> SuppressionCheck:
    """The reason an anomaly is suppressed now, for lifecycle.reconcile."""
    live = [s for s in suppressions if s.active(now)]

    def reason(anomaly: Anomaly) -> str | None:
        hit = next((s for s in live if s.matches(anomaly)), None)
        return hit.describe() if hit else None

    return reason


def apply_suppressions(
    anomalies: Iterable[Anomaly], suppressions: Sequence[Suppression], now: datetime
) -> list[Transition]:
    """Move stored anomalies in and out of suppression as suppressions start, end or expire."""
    reason_for = checker(suppressions, now)
    out: list[Transition] = []
    for anomaly in anomalies:
        if anomaly.status is Status.RESOLVED:
            continue
        reason = reason_for(anomaly)
        target = Status.SUPPRESSED if reason else Status.OPEN
        if anomaly.status is target:
            continue
        updated = dataclasses.replace(anomaly, history=list(anomaly.history))
        out.append(suppression_change(updated, anomaly.status, now, reason))
    return out
