"""What an anomaly keeps of remediation (``Anomaly.remediation``) and the history line it adds.

Pure. The record is what cards and the CLI show; it changes, and a history line is added, only
when the plan for the anomaly changes, so a dry run repeated every ten minutes writes nothing.
"""

from __future__ import annotations

from datetime import datetime

from monitors.graph.writes import WriteOutcome, WriteResult
from monitors.models import JSON
from monitors.remediation.plan import Action, Decision, PlanItem

# The record's ``state`` for each plan decision, when no write was made.
_STATES = {
    Decision.WRITE: "planned",
    Decision.PRESENT: "present",
    Decision.REFUSED: "refused",
    Decision.DEFERRED: "deferred",
    Decision.VERIFIED: "done",
}


def record(
    item: PlanItem, mode: str, now: datetime, outcome: WriteOutcome | None = None
) -> dict[str, JSON] | None:
    """The anomaly's remediation record after this run; None when there is nothing to keep
    (an unverified item keeps what it had: the next run decides)."""
    if item.decision is Decision.UNVERIFIED:
        return None
    t = item.target
    state = outcome.result.value if outcome else _STATES[item.decision]
    written = (outcome is not None and outcome.result.in_place) or (
        item.decision is Decision.VERIFIED
    )
    reason = item.reason
    if outcome is not None and not outcome.result.in_place:
        reason = _failure(outcome)
    return {
        "mode": mode,
        "action": t.action.value,
        "state": state,
        "written": written,
        "at": now.isoformat(),
        "reason": reason,
        "request_id": _request_id(item, outcome),
        "verified_after_interruption": item.interrupted is not None and written,
        "group_id": t.group_id,
        "group_name": item.group_name or None,
        "device_name": t.device_name or None,
        "policy_name": t.policy_name or None,
        "command": t.command,
    }


def _request_id(item: PlanItem, outcome: WriteOutcome | None) -> str:
    if outcome is not None:
        return outcome.trace_id
    entry = item.interrupted or item.earlier
    return (entry.request_id or entry.client_request_id) if entry is not None else ""


def _failure(outcome: WriteOutcome) -> str:
    if outcome.result is WriteResult.FORBIDDEN:
        permission = outcome.unverified.permission if outcome.unverified else None
        return f"Graph refused the write (403): the write identity needs {permission}"
    if outcome.result is WriteResult.GONE:
        return "Graph answered 404: the group or the object is gone; not retried blindly"
    return f"the write failed: {outcome.detail or 'no answer'}; tried again next run"


def changed(previous: JSON, new: dict[str, JSON]) -> bool:
    """Whether the record says something new (its time alone is not news)."""
    if not isinstance(previous, dict):
        return True
    if previous.get("written") is True and new.get("written") is True:
        return False  # a later run confirming the same write is not news
    return any(previous.get(k) != new.get(k) for k in ("mode", "state", "reason", "written"))


def history_line(new: dict[str, JSON]) -> str:
    """The anomaly history's words for a new record."""
    owner = new.get("action") == Action.ADD_OWNER.value
    at, request_id, command = new.get("at"), new.get("request_id"), new.get("command")
    did = (
        "restored the Intune Provisioning Client as an owner of its ETG"
        if owner
        else "added to its ETG"
    )
    how = "by `etg-monitor remediate --apply`" if new.get("mode") == "apply" else "automatically"
    if new.get("written"):
        interrupted = new.get("verified_after_interruption")
        verified = " (verified after an interrupted run)" if interrupted else ""
        return f"remediation: {did} {how} at {at} (request id {request_id}){verified}"
    state = new.get("state")
    if state == "planned":
        would = "add the Intune Provisioning Client as an owner" if owner else "add it to its ETG"
        return f"remediation (dry run): would {would}; run `{command}`"
    if state == "present":
        return f"remediation: {new.get('reason')}"
    return f"remediation {state}: {new.get('reason')}"
