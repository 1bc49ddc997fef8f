"""Applying suppressions to stored anomalies, from jobs and from the CLI."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from monitors.alerts.routing import Routes
from monitors.jobs.alerting import save_transitions
from monitors.models import Status
from monitors.rules.lifecycle import Transition
from monitors.rules.suppression import Suppression, SuppressionScope, apply_suppressions
from monitors.store.tables import TableStore

_DURATION = re.compile(r"^(\d+)\s*([dhm])$", re.IGNORECASE)


def parse_expiry(text: str | None, now: datetime) -> datetime | None:
    """'7d', '12h', '30m' from now, or an ISO-8601 instant; None for no expiry."""
    if not text:
        return None
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        delta = {
            "d": timedelta(days=amount),
            "h": timedelta(hours=amount),
            "m": timedelta(minutes=amount),
        }[unit]
        return now + delta
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("give the expiry with a time zone, e.g. 2026-12-01T00:00Z")
    if when <= now:
        raise ValueError("the expiry is in the past")
    return when


def new_suppression(
    scope: SuppressionScope,
    value: str,
    reason: str,
    now: datetime,
    expires: str | None,
    created_by: str | None = None,
) -> Suppression:
    if not reason.strip():
        raise ValueError("a suppression needs a reason")
    if not value.strip():
        raise ValueError("a suppression needs a device, policy or kind")
    return Suppression(
        id=f"s-{uuid.uuid4().hex[:8]}",
        scope=scope,
        value=value.strip(),
        reason=reason.strip(),
        created_at=now,
        expires_at=parse_expiry(expires, now),
        created_by=created_by,
    )


async def settle_suppressions(
    store: TableStore,
    now: datetime,
    routes: Routes,
    kinds: Iterable[str] | None = None,
    run_id: str = "cli",
) -> list[Transition]:
    """Bring every unresolved anomaly in line with the suppressions in force now."""
    suppressions = await store.suppressions.all()
    if suppressions:
        anomalies = [
            a async for a in store.anomalies.iter(kinds) if a.status is not Status.RESOLVED
        ]
    else:
        # Nothing can be newly suppressed: only lifted ones can change, which is cheap to ask.
        anomalies = [a async for a in store.anomalies.iter(kinds, Status.SUPPRESSED)]
    transitions = apply_suppressions(anomalies, suppressions, now)
    await save_transitions(store, transitions, run_id, now, routes)
    return transitions
