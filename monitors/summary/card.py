"""The weekly summary as one Teams card: headline figures, trend, top issues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitors.alerts.cards import CARD_VERSION, SCHEMA, fit
from monitors.models import JSON

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(points: list[Mapping[str, Any]]) -> str:
    out = []
    for p in points:
        rate = p.get("rate")
        out.append("·" if rate is None else _BARS[min(7, max(0, int(rate * 8 - 0.0001)))])
    return "".join(out)


def summary_card(summary: Mapping[str, Any], report_url: str | None = None) -> dict[str, JSON]:
    c, d = summary["compliance"], summary["deployments"]
    rate = c["rate"]
    pct = "n/a" if rate is None else f"{rate * 100:.1f}%"
    trend = summary["trend"]
    top = sorted(summary["anomalies_opened"]["by_kind"].items(), key=lambda kv: -kv[1])[:3]
    body: list[dict[str, JSON]] = [
        {
            "type": "TextBlock",
            "text": f"ETG compliance, week {summary['week']}",
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
        },
        {
            "type": "TextBlock",
            "text": f"**{pct}** of {c['judged']} judged deployments joined "
            "their Enrollment Time Group before provisioning completed.",
            "wrap": True,
        },
        {
            "type": "FactSet",
            "facts": [
                {
                    "title": "Deployments",
                    "value": f"{d['total']} ({d['success']} succeeded, {d['failed']} failed)",
                },
                {"title": "Late / missing", "value": f"{c['late']} / {c['missing']}"},
                {
                    "title": "Join lead (median / p95)",
                    "value": f"{summary['lead_time_minutes']['median']} / "
                    f"{summary['lead_time_minutes']['p95']} min",
                },
                {
                    "title": "Anomalies opened / resolved",
                    "value": f"{summary['anomalies_opened']['total']} / "
                    f"{summary['anomalies_resolved']['total']}",
                },
                {"title": "Still open", "value": str(summary["open_anomalies"]["total"])},
                {"title": "Unverified", "value": str(c["unverified"])},
                {
                    "title": "8-week trend",
                    "value": f"{sparkline(trend)}  ({trend[0]['week']} to {trend[-1]['week']})",
                },
            ],
        },
    ]
    if top:
        body.append(
            {
                "type": "TextBlock",
                "text": "Top issues: " + ", ".join(f"{k} ({n})" for k, n in top),
                "wrap": True,
            }
        )
    for p in summary["policy_health"][:5]:
        body.append(
            {
                "type": "TextBlock",
                "color": "Attention",
                "wrap": True,
                "text": f"Policy {p['policy']}: {', '.join(p['issues'])}",
            }
        )
    actions: list[dict[str, JSON]] = []
    if report_url:
        actions.append(
            {"type": "Action.OpenUrl", "title": "Open the full report", "url": report_url}
        )
    return fit(
        {
            "$schema": SCHEMA,
            "type": "AdaptiveCard",
            "version": CARD_VERSION,
            "body": body,
            "actions": actions,
        }
    )
