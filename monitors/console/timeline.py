"""The anomaly page's picture: enrolled, ETG join (or none), provisioning completed, and the gap
between the join and the completion, as inline SVG read from the anomaly's evidence.

Pure: evidence in, markup out. Every text is escaped; nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from monitors.models import JSON

WIDTH, HEIGHT = 720, 150
LEFT, RIGHT, AXIS_Y = 100, 620, 70  # room for a time stamp centred on either end


@dataclass(frozen=True, slots=True)
class Timeline:
    enrolled: datetime
    joined: datetime | None  # the first join, on time or late; None: never joined
    completed: datetime | None  # None: provisioning has not completed

    @property
    def gap(self) -> timedelta | None:
        """Completion minus join: positive when the device joined before completing."""
        if self.joined is None or self.completed is None:
            return None
        return self.completed - self.joined


def _instant(value: JSON) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _event_at(value: JSON) -> datetime | None:
    return _instant(value.get("at")) if isinstance(value, Mapping) else None


def timeline_of(evidence: Mapping[str, JSON]) -> Timeline | None:
    """The device timeline in the evidence; None for a policy-level anomaly (no enrollment)."""
    enrolled_at = evidence.get("enrolled_at")
    enrolled = _instant(enrolled_at.get("value")) if isinstance(enrolled_at, Mapping) else None
    if enrolled is None:
        return None
    joined = _event_at(evidence.get("join")) or _event_at(evidence.get("late_join"))
    completed = _instant(evidence.get("provisioning_completed_at"))
    return Timeline(enrolled, joined, completed)


def human(delta: timedelta) -> str:
    seconds = abs(round(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def gap_text(timeline: Timeline) -> str:
    gap = timeline.gap
    if timeline.joined is None:
        return "no ETG join recorded"
    if gap is None:
        return "provisioning has not completed"
    if gap >= timedelta(0):
        return f"joined {human(gap)} before provisioning completed"
    return f"joined {human(gap)} after provisioning completed (late)"


def _marker(x: float, label: str, when: datetime | None, color: str, above: bool) -> str:
    y_text = AXIS_Y - 22 if above else AXIS_Y + 30
    y_time = y_text + 14
    stamp = f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else ""
    return (
        f'<circle cx="{x:.1f}" cy="{AXIS_Y}" r="7" fill="{color}" />'
        f'<text x="{x:.1f}" y="{y_text}" text-anchor="middle" font-size="13" '
        f'font-weight="bold" fill="#222">{escape(label)}</text>'
        f'<text x="{x:.1f}" y="{y_time}" text-anchor="middle" font-size="11" '
        f'fill="#555">{escape(stamp)}</text>'
    )


def render_svg(timeline: Timeline) -> str:
    instants = [t for t in (timeline.enrolled, timeline.joined, timeline.completed) if t]
    start, end = min(instants), max(instants)
    span = (end - start).total_seconds() or 1.0

    def x_of(when: datetime) -> float:
        return LEFT + (RIGHT - LEFT) * (when - start).total_seconds() / span

    parts = [
        f'<line x1="{LEFT}" y1="{AXIS_Y}" x2="{RIGHT}" y2="{AXIS_Y}" stroke="#888" '
        'stroke-width="2" />',
        _marker(x_of(timeline.enrolled), "Enrolled", timeline.enrolled, "#0063b1", True),
    ]
    if timeline.completed is not None:
        parts.append(
            _marker(
                x_of(timeline.completed),
                "Provisioning completed",
                timeline.completed,
                "#107c10",
                True,
            )
        )
    if timeline.joined is not None:
        parts.append(_marker(x_of(timeline.joined), "ETG join", timeline.joined, "#ca5010", False))
    else:
        parts.append(
            f'<text x="{RIGHT}" y="{AXIS_Y + 30}" text-anchor="end" font-size="13" '
            'font-weight="bold" fill="#a4262c">ETG join: none</text>'
        )
    if timeline.joined is not None and timeline.completed is not None:
        a, b = sorted((x_of(timeline.joined), x_of(timeline.completed)))
        parts.append(
            f'<line x1="{a:.1f}" y1="{AXIS_Y + 62}" x2="{b:.1f}" y2="{AXIS_Y + 62}" '
            'stroke="#a4262c" stroke-width="2" />'
        )
    parts.append(
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" font-size="13" '
        f'fill="#a4262c" class="gap">{escape(gap_text(timeline))}</text>'
    )
    title = escape(f"Timeline: {gap_text(timeline)}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" id="timeline" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"><title>{title}</title>'
        + "".join(parts)
        + "</svg>"
    )
