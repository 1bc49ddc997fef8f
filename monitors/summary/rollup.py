"""The managed service provider's roll-up: every registered tenant's week side by side, the
worst compliance first, each with its change from the week before.

Pure: each tenant's weekly summary (monitors/summary/compute.py, read from that tenant's own
tables) in, one JSON document out, and its text and Teams card. A tenant whose tables could not
be read is listed as unavailable, after the others: not knowing a tenant's figures is not a
finding about it, and it never hides the tenants that could be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitors.alerts.cards import TenantLabel
from monitors.models import JSON
from monitors.summary.card import report_card
from monitors.summary.compute import IsoWeek, summary_rate

# A change smaller than this, in percentage points, is shown as flat: one late device in a
# small tenant's week moves its rate by more than noise, but not by half a point.
FLAT_POINTS = 0.5
CARD_TENANTS = 20  # the card lists the worst tenants; the report lists every one


@dataclass(frozen=True, slots=True)
class TenantWeek:
    """One registered tenant's week as the roll-up reads it. ``summary`` None: its tables could
    not be read, ``problem`` says why (never a secret or a stored value)."""

    tenant_id: str
    display_name: str
    enabled: bool
    summary: Mapping[str, Any] | None
    previous_rate: float | None = None
    problem: str | None = None


def trend(rate: float | None, previous: float | None) -> tuple[str | None, float | None]:
    """("up" | "down" | "flat", change in percentage points); (None, None) when either week
    judged nothing, so there is nothing to compare."""
    if rate is None or previous is None:
        return None, None
    points = round((rate - previous) * 100, 1)
    if abs(points) < FLAT_POINTS:
        return "flat", points
    return ("up" if points > 0 else "down"), points


def _line(t: TenantWeek) -> dict[str, JSON]:
    line: dict[str, JSON] = {
        "tenant_id": t.tenant_id,
        "display_name": t.display_name,
        "label": str(TenantLabel(t.tenant_id, t.display_name)),
        "enabled": t.enabled,
    }
    if t.summary is None:
        return {**line, "status": "unavailable", "problem": t.problem or "could not be read"}
    c, d = t.summary["compliance"], t.summary["deployments"]
    rate = summary_rate(t.summary)
    direction, points = trend(rate, t.previous_rate)
    return {
        **line,
        "status": "ok",
        "rate": rate,
        "previous_rate": t.previous_rate,
        "trend": direction,
        "change_points": points,
        "deployments": d["total"],
        "judged": c["judged"],
        "on_time": c["on_time"],
        "late": c["late"],
        "missing": c["missing"],
        "unverified": c["unverified"],
        "open_anomalies": t.summary["open_anomalies"]["total"],
    }


def _worst_first(line: Mapping[str, Any]) -> tuple[int, float, int, str, str]:
    """Rated tenants by rate, lowest first (more missing first on a tie); then those that judged
    nothing this week; then those that could not be read."""
    if line["status"] == "unavailable":
        group, rate, missing = 2, 0.0, 0
    elif line["rate"] is None:
        group, rate, missing = 1, 0.0, -int(line["missing"])
    else:
        group, rate, missing = 0, float(line["rate"]), -int(line["missing"])
    return group, rate, missing, str(line["display_name"]).casefold(), str(line["tenant_id"])


def _totals(lines: Sequence[Mapping[str, Any]]) -> dict[str, JSON]:
    read = [line for line in lines if line["status"] == "ok"]
    judged = sum(int(line["judged"]) for line in read)
    on_time = sum(int(line["on_time"]) for line in read)
    return {
        "tenants": len(lines),
        "disabled": sum(not line["enabled"] for line in lines),
        "unavailable": len(lines) - len(read),
        "deployments": sum(int(line["deployments"]) for line in read),
        "judged": judged,
        "on_time": on_time,
        # Over every judged deployment of the tenants read, not an average of their rates: a
        # tenant of ten devices does not weigh as much as one of ten thousand.
        "rate": round(on_time / judged, 4) if judged else None,
    }


def rollup(week: IsoWeek, tenants: Sequence[TenantWeek], now: datetime) -> dict[str, JSON]:
    lines = sorted((_line(t) for t in tenants), key=_worst_first)
    return {
        "week": str(week),
        "previous_week": str(week.previous()),
        "generated_at": now.isoformat(),
        "totals": _totals(lines),
        "tenants": list(lines),
    }


def pct(rate: Any) -> str:
    return "n/a" if rate is None else f"{float(rate) * 100:.1f}%"


def trend_text(line: Mapping[str, Any]) -> str:
    """ "up 2.5 pts", "down 0.7 pts", "flat", or "n/a" when a week judged nothing."""
    direction, points = line.get("trend"), line.get("change_points")
    if direction is None or points is None:
        return "n/a"
    if direction == "flat":
        return "flat"
    return f"{direction} {abs(float(points)):.1f} pts"


def state_text(line: Mapping[str, Any]) -> str:
    state = "unavailable" if line["status"] == "unavailable" else "ok"
    return state if line["enabled"] else f"{state}, disabled"


def headline(data: Mapping[str, Any]) -> str:
    totals = data["totals"]
    text = (
        f"ETG compliance {data['week']} across {totals['tenants']} tenants: "
        f"{pct(totals['rate'])} of {totals['judged']} judged deployments joined their ETG in time"
    )
    if totals["unavailable"]:
        text += f"; {totals['unavailable']} unavailable"
    return text


def rollup_text(data: Mapping[str, Any]) -> str:
    """The roll-up as the CLI prints it: one line per tenant, worst first."""
    lines = [headline(data)]
    for line in data["tenants"]:
        name = f"{line['label']}"
        if line["status"] == "unavailable":
            lines.append(f"  {name}: unavailable ({line['problem']}){_disabled(line)}")
            continue
        lines.append(
            f"  {name}: {pct(line['rate'])} ({trend_text(line)} from "
            f"{pct(line['previous_rate'])}), {line['judged']} judged of {line['deployments']}, "
            f"late {line['late']}, missing {line['missing']}, unverified {line['unverified']}, "
            f"open anomalies {line['open_anomalies']}{_disabled(line)}"
        )
    if not data["tenants"]:
        lines.append("  No tenant is registered (`etg-monitor tenants add`).")
    return "\n".join(lines)


def _disabled(line: Mapping[str, Any]) -> str:
    return "" if line["enabled"] else " [disabled]"


def _text(text: str, **style: JSON) -> dict[str, JSON]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _fact(line: Mapping[str, Any]) -> dict[str, JSON]:
    if line["status"] == "unavailable":
        value = "unavailable"
    else:
        value = (
            f"{pct(line['rate'])} · {trend_text(line)} · {line['judged']} judged · "
            f"late {line['late']} · missing {line['missing']}"
        )
    return {"title": f"{line['label']}{_disabled(line)}", "value": value}


def rollup_card(data: Mapping[str, Any], report_url: str | None = None) -> dict[str, JSON]:
    """The weekly roll-up as one Teams card for the provider's own channel."""
    tenants = list(data["tenants"])
    body: list[dict[str, JSON]] = [
        _text(f"ETG compliance by tenant, week {data['week']}", size="Large", weight="Bolder"),
        _text(headline(data) + "."),
        _text(f"Worst first; trend against {data['previous_week']}.", isSubtle=True),
        {"type": "FactSet", "facts": [_fact(line) for line in tenants[:CARD_TENANTS]]},
    ]
    if len(tenants) > CARD_TENANTS:
        body.append(
            _text(
                f"...and {len(tenants) - CARD_TENANTS} more: `etg-monitor summary --all-tenants`.",
                isSubtle=True,
            )
        )
    return report_card(body, report_url, "Open the roll-up")
