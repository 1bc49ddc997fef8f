"""The fan-out: when the registry has enabled tenants, a timer enqueues one message per tenant
and job on ``ETG_JOB_QUEUE`` instead of running the job itself, and the queue-triggered
function runs each (monitors.tenants.run). The host scales instances with the queue's length,
and one tenant's slow or failing run holds no other's: each is its own message, lease and
Graph retry budget.

Pure parts first (which tenants are due, the message and its parsing), the one I/O step last.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors.settings import JOB_SCHEDULES, schedule_firings
from monitors.tenants.registry import Tenant, TenantError, normalize_tenant_id

if TYPE_CHECKING:
    from monitors.clock import Clock
    from monitors.settings import Settings

MESSAGE_VERSION = 1
# A message is a few hundred bytes; anything much larger is not one of ours.
MAX_MESSAGE_BYTES = 4096
# How far back the previous firing of a schedule is looked for (a yearly schedule is the rarest
# the timers accept in practice).
_LOOKBACK = timedelta(days=400)


class BadMessage(ValueError):
    """A queue message that can never run: not one the timers send."""


@dataclass(frozen=True, slots=True)
class JobMessage:
    """One tenant's job, as a timer enqueued it: ``at`` is when the timer fired."""

    tenant_id: str
    job: str
    at: datetime

    def to_bytes(self) -> bytes:
        body = {"v": MESSAGE_VERSION, "tenant": self.tenant_id, "job": self.job}
        body["at"] = self.at.isoformat()
        return json.dumps(body, separators=(",", ":")).encode()


def parse_message(body: bytes | str) -> JobMessage:
    """The message the timers send, or BadMessage saying why this one is not."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message of {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise BadMessage(f"not a JSON object but {type(data).__name__}")
    if data.get("v") != MESSAGE_VERSION or isinstance(data.get("v"), bool):
        raise BadMessage(f"unknown message version {data.get('v')!r:.40}")
    job, tenant, at = data.get("job"), data.get("tenant"), data.get("at")
    if not isinstance(job, str) or job not in JOB_SCHEDULES:
        raise BadMessage(f"unknown job {job!r:.40}: one of {', '.join(JOB_SCHEDULES)}")
    if not isinstance(tenant, str):
        raise BadMessage("tenant must be the tenant id, a string")
    try:
        tenant_id = normalize_tenant_id(tenant)
    except TenantError as exc:
        raise BadMessage(str(exc)[:120]) from None
    if not isinstance(at, str):
        raise BadMessage("at must be the ISO time the timer fired")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise BadMessage(f"at is not an ISO time: {at!r:.40}") from None
    if when.tzinfo is None:
        raise BadMessage("at must carry its UTC offset")
    return JobMessage(tenant_id, job, when)


def firing_window(expression: str, now: datetime) -> tuple[datetime, datetime] | None:
    """(previous firing, this firing) of a schedule: this firing is its last at or before
    ``now``, the one the timer is running for. None when it has not fired twice within the
    look-back."""
    span = timedelta(hours=1)
    while True:
        last: list[datetime] = []
        for firing in schedule_firings(expression, now - span):
            if firing > now:
                break
            last = [*last[-1:], firing]
        if len(last) == 2:
            return last[0], last[1]
        if span >= _LOOKBACK:
            return None
        span = min(span * 4, _LOOKBACK)


def is_due(tenant: Tenant, job: str, window: tuple[datetime, datetime] | None) -> bool:
    """An enabled tenant is due each time the deployment's timer fires, unless it overrides
    the job's schedule: then only when its own schedule fires within (previous firing, this
    firing] of the deployment's, so it runs at most as often as the deployment's timer."""
    if not tenant.enabled:
        return False
    own = tenant.overrides.schedules.get(JOB_SCHEDULES[job])
    if own is None:
        return True
    if window is None:
        return False
    previous, this = window
    upcoming = next(schedule_firings(own, previous), None)
    return upcoming is not None and upcoming <= this


def messages_for(
    tenants: Iterable[Tenant], job: str, base_schedules: Mapping[str, str], now: datetime
) -> list[JobMessage]:
    """The messages one firing of ``job``'s timer enqueues, one per due tenant."""
    due = [t for t in tenants if t.enabled]
    if any(JOB_SCHEDULES[job] in t.overrides.schedules for t in due):
        window = firing_window(base_schedules[JOB_SCHEDULES[job]], now)
    else:
        window = None
    return [JobMessage(t.tenant_id, job, now) for t in due if is_due(t, job, window)]


@dataclass(frozen=True, slots=True)
class FanOut:
    """What one timer firing did: ``enqueued`` messages for ``tenants`` enabled tenants."""

    job: str
    tenants: int
    enqueued: int
    queue: str
    not_due: Sequence[str] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "tenants": self.tenants,
            "enqueued": self.enqueued,
            "queue": self.queue,
            "not_due": list(self.not_due),
        }


async def fan_out(settings: Settings, job: str, *, clock: Clock | None = None) -> FanOut | None:
    """Enqueue ``job`` for every due tenant; None when the registry has no enabled tenant (a
    single-tenant install: the timer runs the job itself, as always). Raises Unavailable."""
    from monitors.clock import SystemClock
    from monitors.failures import dependency_failures_as_unavailable
    from monitors.jobs.context import open_store
    from monitors.store.queues import JobQueue
    from monitors.tenants.registry import TenantRegistry

    with dependency_failures_as_unavailable(settings):
        async with open_store(settings) as store:
            enabled = await TenantRegistry(store).enabled()
    if not enabled:
        return None
    now = (clock or SystemClock()).now()
    messages = messages_for(enabled, job, settings.schedules, now)
    async with JobQueue(settings, settings.job_queue) as queue:
        sent = await queue.send(m.to_bytes() for m in messages)
    queued = {m.tenant_id for m in messages}
    result = FanOut(
        job,
        len(enabled),
        sent,
        settings.job_queue,
        tuple(t.tenant_id for t in enabled if t.tenant_id not in queued),
    )
    _log().info("job.fanned_out", **result.to_json())
    return result


def _log() -> Any:
    import structlog

    return structlog.get_logger("etg_monitor")
