"""The weekly summary as one Teams card: headline figures, trend, top issues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitors.alerts.cards import CARD_VERSION, SCHEMA, fit
from monitors.models import JSON
from monitors.rules.kinds import severity_rank
from monitors.summary.compute import early_line, policies_by_severity

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(points: list[Mapping[str, Any]]) -> str:
    out = []
    for p in points:
        rate = p.get("rate")
        out.append("·" if rate is None else _BARS[min(7, max(0, int(rate * 8 - 0.0001)))])
    return "".join(out)


def _text(text: str, **style: JSON) -> dict[str, JSON]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _figures(summary: Mapping[str, Any]) -> dict[str, JSON]:
    c, d = summary["compliance"], summary["deployments"]
    lead, trend = summary["lead_time_minutes"], summary["trend"]
    facts = [
        ("Deployments", f"{d['total']} ({d['success']} succeeded, {d['failed']} failed)"),
        ("Late / missing", f"{c['late']} / {c['missing']}"),
        ("Join lead (median / p95)", f"{lead['median']} / {lead['p95']} min"),
        (
            "Anomalies opened / resolved",
            f"{summary['anomalies_opened']['total']} / {summary['anomalies_resolved']['total']}",
        ),
        ("Still open", str(summary["open_anomalies"]["total"])),
        ("Unverified", str(c["unverified"])),
        ("8-week trend", f"{sparkline(trend)}  ({trend[0]['week']} to {trend[-1]['week']})"),
    ]
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts]}


def _issues(summary: Mapping[str, Any]) -> list[dict[str, JSON]]:
    """The week's anomaly kinds and the policies with open problems, most severe first."""
    opened = summary["anomalies_opened"]["by_kind"].items()
    top = sorted(opened, key=lambda kv: (severity_rank(kv[0]), -kv[1]))[:3]
    blocks = [_text("Top issues: " + ", ".join(f"{k} ({n})" for k, n in top))] if top else []
    early = early_line(summary)
    if early:
        blocks.append(_text(f"Early conclusion: {early}"))
    failures = (summary.get("failure_codes") or [])[:3]
    if failures:
        blocks.append(
            _text("Failed with: " + ", ".join(f"{f['label']} ({f['count']})" for f in failures))
        )
    blocks += [
        _text(f"Policy {p['policy']}: {', '.join(p['issues'])}", color="Attention")
        for p in policies_by_severity(summary)[:5]
    ]
    return blocks


def summary_card(summary: Mapping[str, Any], report_url: str | None = None) -> dict[str, JSON]:
    rate = summary["compliance"]["rate"]
    pct = "n/a" if rate is None else f"{rate * 100:.1f}%"
    body: list[dict[str, JSON]] = [
        _text(f"ETG compliance, week {summary['week']}", size="Large", weight="Bolder"),
        _text(
            f"**{pct}** of {summary['compliance']['judged']} judged deployments joined "
            "their Enrollment Time Group before provisioning completed."
        ),
        _figures(summary),
        *_issues(summary),
    ]
    return report_card(body, report_url, "Open the full report")


def report_card(body: list[dict[str, JSON]], report_url: str | None, title: str) -> dict[str, JSON]:
    """A summary-like card: its body, and a button to the HTML report when there is one."""
    actions: list[dict[str, JSON]] = []
    if report_url:
        actions.append({"type": "Action.OpenUrl", "title": title, "url": report_url})
    return fit(
        {
            "$schema": SCHEMA,
            "type": "AdaptiveCard",
            "version": CARD_VERSION,
            "body": body,
            "actions": actions,
        }
    )
