"""What one scan found, as the CLI, the HTTP API and the runs table show it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from monitors.jobs.context import missing_permissions
from monitors.models import JSON, Finding, NotEvaluated, Unverified
from monitors.rules.enrollment import Judgement, JudgementState
from monitors.rules.lifecycle import Change, Transition


@dataclass
class ScanReport:
    run_id: str
    scanned_at: datetime
    judgements: list[Judgement] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    unverified: list[Unverified] = field(default_factory=list)
    rows_in_report: int = 0
    graph_requests: dict[str, int] = field(default_factory=dict)
    checkpoint_advanced: bool = False

    @property
    def outcome(self) -> str:
        if self.unverified or any(j.state is JudgementState.UNVERIFIED for j in self.judgements):
            return "unverified"
        return "ok"

    def all_unverified(self) -> list[Unverified]:
        return self._tally()[2]

    def _tally(self) -> tuple[Counter[JudgementState], Counter[str], list[Unverified]]:
        """States, findings by kind, and every unverified fact (the run's, then each
        judgement's in order), in one pass over the verdicts: a first scan of 100,000 holds a
        million, and the run record is built while nothing else runs."""
        states: Counter[JudgementState] = Counter()
        findings: Counter[str] = Counter()
        unverified = list(self.unverified)
        for j in self.judgements:
            states[j.state] += 1
            for v in j.verdicts:
                if isinstance(v, Finding):
                    findings[v.kind] += 1
                elif isinstance(v, NotEvaluated) and v.unverified:
                    unverified.extend(v.unverified)
        return states, findings, unverified

    def to_json(self, devices_limit: int | None = None) -> dict[str, JSON]:
        states, findings, unverified = self._tally()
        reasons = Counter(
            f"{u.source}: {u.reason.value}" + (f" (needs {u.permission})" if u.permission else "")
            for u in unverified
        )
        # Only the rows shown are sorted and built: the run record asks for none of 100,000.
        if devices_limit == 0:
            shown: list[Judgement] = []
        else:
            ordered = sorted(self.judgements, key=lambda j: j.deployment.enrolled_at)
            shown = ordered if devices_limit is None else ordered[:devices_limit]
        rows = [
            {
                "device_name": j.deployment.device_name,
                "serial_number": j.deployment.serial_number,
                "user_principal_name": j.deployment.user_principal_name,
                "managed_device_id": j.deployment.managed_device_id,
                "policy": j.subject.policy_name,
                "enrolled_at": j.deployment.enrolled_at.isoformat(),
                "deployment_status": j.deployment.status.value,
                "verdict": _verdict_label(j),
                "why": j.summary,
            }
            for j in shown
        ]
        return {
            "run_id": self.run_id,
            "scanned_at": self.scanned_at.isoformat(),
            "outcome": self.outcome,
            "deployments": {
                "in_report": self.rows_in_report,
                "evaluated": len(self.judgements),
                "conclusive": states[JudgementState.CONCLUSIVE],
                "pending": states[JudgementState.PENDING],
                "unverified": states[JudgementState.UNVERIFIED],
            },
            "findings": dict(sorted(findings.items())),
            "changes": [
                {
                    "kind": t.anomaly.kind,
                    "subject": t.anomaly.subject.key,
                    "device_name": t.anomaly.subject.device_name,
                    "change": t.change.value,
                }
                for t in self.transitions
                if t.change is not Change.UPDATED
            ],
            "unverified": dict(reasons.most_common()),
            "missing_permissions": missing_permissions(unverified),
            "graph_requests": self.graph_requests,
            "checkpoint_advanced": self.checkpoint_advanced,
            "devices": rows,
        }


def _verdict_label(j: Judgement) -> str:
    found = [v.kind for v in j.verdicts if isinstance(v, Finding)]
    if found:
        return ",".join(found)
    conclusive = j.state is JudgementState.CONCLUSIVE
    if conclusive and j.subject.policy_id and not j.subject.group_id:
        return "no ETG"
    return "ok" if conclusive else str(j.state)
