"""The weekly report as one self-contained HTML page: inline CSS and SVG, no external assets,
readable on screen and on paper."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from monitors.alerts.cards import TenantLabel
from monitors.rules.kinds import KINDS, severity_rank
from monitors.summary.compute import early_line, headline, policies_by_severity

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1b1b;
margin:24px auto;max-width:980px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0 0 16px}
.tiles{display:flex;gap:12px;flex-wrap:wrap}
.tile{flex:1 1 170px;border:1px solid #ddd;border-radius:6px;padding:10px 12px}
.tile .v{font-size:26px;font-weight:600}.tile .l{color:#555;font-size:12px}
.good{color:#107c10}.bad{color:#c50f1f}.warn{color:#8a5a00}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg text{font:11px sans-serif;fill:#444}
.empty{color:#777;font-style:italic}
@media print{body{margin:0;max-width:none}.tile,table{break-inside:avoid}h2{break-after:avoid}}
"""


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _num(value: Any) -> str:
    return "n/a" if value is None else escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    if not rows:
        return '<p class="empty">None.</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_num(c)}</td>' if i >= numeric_from else f"<td>{_num(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _counts(mapping: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(mapping.items(), key=lambda kv: (-kv[1], kv[0]))


def trend_svg(points: Sequence[Mapping[str, Any]], width: int = 640, height: int = 180) -> str:
    """Compliance per week as a line; weeks without data leave a gap."""
    left, right, top, bottom = 40, 24, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(points), 2)

    def x(i: int) -> float:
        return left + plot_w * i / (n - 1)

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate)

    parts = [
        f'<svg role="img" aria-label="Compliance trend" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0, 0.5, 1):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}" stroke="#e5e5e5"/>'
        )
        parts.append(f'<text x="4" y="{y(tick) + 4:.1f}">{int(tick * 100)}%</text>')
    segment: list[str] = []
    for i, point in enumerate(points):
        rate = point.get("rate")
        label = escape(str(point.get("week", ""))[-3:])
        parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle">{label}</text>')
        if rate is None:
            parts.extend(_polyline(segment))
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(rate):.1f}")
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(rate):.1f}" r="3.5" fill="#0f6cbd">'
            f"<title>{label}: {_pct(rate)}</title></circle>"
        )
    parts.extend(_polyline(segment))
    parts.append("</svg>")
    return "".join(parts)


def _polyline(points: Sequence[str]) -> list[str]:
    """The line through one run of weeks with data; a lone week stays a dot."""
    if len(points) < 2:
        return []
    return [
        f'<polyline fill="none" stroke="#0f6cbd" stroke-width="2" points="{" ".join(points)}"/>'
    ]


def outcome_svg(compliance: Mapping[str, int], width: int = 640, height: int = 34) -> str:
    """One stacked bar: on time, late, missing, no ETG."""
    items = [
        ("on_time", "On time", "#107c10"),
        ("late", "Late", "#c19c00"),
        ("missing", "Missing", "#c50f1f"),
        ("no_etg", "No ETG", "#8764b8"),
    ]
    total = sum(int(compliance.get(k, 0)) for k, _, _ in items)
    if not total:
        return '<p class="empty">No deployment was judged this week.</p>'
    parts = [
        f'<svg role="img" aria-label="ETG outcome" width="{width}" height="{height + 18}" '
        f'viewBox="0 0 {width} {height + 18}" xmlns="http://www.w3.org/2000/svg">'
    ]
    offset = 0.0
    for key, label, color in items:
        count = int(compliance.get(key, 0))
        if not count:
            continue
        w = width * count / total
        parts.append(
            f'<rect x="{offset:.1f}" y="0" width="{w:.1f}" height="{height}" '
            f'fill="{color}"><title>{label}: {count}</title></rect>'
        )
        if w > 60:
            parts.append(f'<text x="{offset + 4:.1f}" y="{height + 14}">{label} {count}</text>')
        offset += w
    parts.append("</svg>")
    return "".join(parts)


def _severity(kind: str) -> str:
    known = KINDS.get(kind)
    return known.severity.value if known else "n/a"


def _kind_rows(by_kind: Mapping[str, int]) -> list[tuple[str, str, int]]:
    """Counts per anomaly kind, most severe kind first, then the most frequent."""
    ordered = sorted(by_kind.items(), key=lambda kv: (severity_rank(kv[0]), -kv[1], kv[0]))
    return [(kind, _severity(kind), n) for kind, n in ordered]


def _tiles(summary: Mapping[str, Any]) -> str:
    rate, lead = summary["compliance"]["rate"], summary["lead_time_minutes"]
    open_now = summary["open_anomalies"]["total"]
    rate_class = (
        "" if rate is None else "good" if rate >= 0.98 else "warn" if rate >= 0.9 else "bad"
    )
    tiles = [
        (_pct(rate), "joined their ETG before provisioning completed", rate_class),
        (str(summary["deployments"]["total"]), "device preparation deployments", ""),
        (
            f"{_num(lead['median'])} / {_num(lead['p95'])} min",
            "ETG join before completion, median / 95th percentile",
            "",
        ),
        (str(open_now), "anomalies open", "bad" if open_now else "good"),
    ]
    return "".join(
        f'<div class="tile"><div class="v {cls}">{escape(v)}</div>'
        f'<div class="l">{escape(label)}</div></div>'
        for v, label, cls in tiles
    )


# The rows of the two outcome tables: how each names a count of the summary, and its key.
_ETG_OUTCOME_ROWS = (
    ("joined before completion", "on_time"),
    ("joined late", "late"),
    ("never joined", "missing"),
    ("policy without ETG", "no_etg"),
    ("still pending", "pending"),
    ("unverified (monitor could not tell)", "unverified"),
)
_DEPLOYMENT_OUTCOME_ROWS = (
    ("success", "success"),
    ("failed", "failed"),
    ("in progress", "in_progress"),
    ("unknown status", "unknown"),
)


def _outcome_table(counts: Mapping[str, int], rows: Sequence[tuple[str, str]]) -> str:
    return _table(["outcome", "deployments"], [(label, counts[key]) for label, key in rows])


def _outcome_sections(summary: Mapping[str, Any]) -> list[str]:
    return [
        "<h2>Compliance trend (8 weeks)</h2>",
        trend_svg(summary["trend"]),
        "<h2>ETG outcome of judged deployments</h2>",
        outcome_svg(summary["compliance"]),
        _outcome_table(summary["compliance"], _ETG_OUTCOME_ROWS),
        "<h2>Deployments by outcome</h2>",
        _outcome_table(summary["deployments"], _DEPLOYMENT_OUTCOME_ROWS),
        "<h2>Why deployments failed</h2>",
        _failure_table(summary),
    ]


def _failure_table(summary: Mapping[str, Any]) -> str:
    """The most frequent result codes of the week's failed deployments, in words. A summary
    kept from before the codes were counted has none, and shows the empty table."""
    return _table(
        ["result code", "name", "meaning", "failed deployments"],
        [
            (
                f["hex"] or "none",
                f["name"] or ("unknown code" if f["hex"] else ""),
                f["meaning"],
                f["count"],
            )
            for f in summary.get("failure_codes") or []
        ],
        numeric_from=3,
    )


def _anomaly_sections(summary: Mapping[str, Any]) -> list[str]:
    opened, resolved = summary["anomalies_opened"], summary["anomalies_resolved"]
    open_now = summary["open_anomalies"]
    early = early_line(summary)  # etg_missing opened early, and false alarms among them
    # Most severe first; within a severity the list stays oldest first.
    still_open = sorted(open_now["oldest"], key=lambda o: severity_rank(o["kind"]))
    return [
        "<h2>Anomalies opened this week</h2>",
        _table(["kind", "severity", "opened"], _kind_rows(opened["by_kind"]), numeric_from=2),
        _table(["policy", "opened"], _counts(opened["by_policy"])),
        "<h2>Anomalies resolved this week</h2>",
        _table(["kind", "severity", "resolved"], _kind_rows(resolved["by_kind"]), numeric_from=2),
        *([f"<p>Early conclusion: {escape(early)}.</p>"] if early else []),
        "<h2>Still open</h2>",
        f"<p>{open_now['total']} open; median age {_num(open_now['median_age_hours'])} h, "
        f"oldest {_num(open_now['max_age_hours'])} h.</p>",
        _table(
            ["kind", "severity", "subject", "first seen", "age (h)"],
            [
                (
                    o["kind"],
                    _severity(o["kind"]),
                    o["subject"],
                    o["first_seen"][:16].replace("T", " "),
                    o["age_hours"],
                )
                for o in still_open
            ],
            numeric_from=4,
        ),
    ]


def _config_sections(summary: Mapping[str, Any]) -> list[str]:
    return [
        "<h2>Policy configuration health</h2>",
        _table(
            ["policy", "open problems"],
            [(p["policy"], ", ".join(p["issues"])) for p in policies_by_severity(summary)],
            numeric_from=9,
        ),
        "<h2>Suppressions in force</h2>",
        _table(
            ["scope", "value", "reason", "expires"],
            [
                (s["scope"], s["value"], s["reason"], (s["expires_at"] or "never")[:16])
                for s in summary["suppressions"]
            ],
            numeric_from=9,
        ),
    ]


def render_html(summary: Mapping[str, Any], tenant: TenantLabel | None = None) -> str:
    """``tenant``: the registry tenant the summary is of (monitors.alerts.cards.tenant_label),
    named in the title and under the heading; None for a single-tenant install."""
    title = f"ETG compliance, week {summary['week']}"
    if tenant is not None:
        title += f", {tenant}"
    named = f'<p class="sub" id="tenant">Tenant: {escape(str(tenant))}</p>' if tenant else ""
    sections = _outcome_sections(summary) + _anomaly_sections(summary) + _config_sections(summary)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>{named}"
        f'<p class="sub">{escape(headline(summary))}. Week {escape(summary["start"][:10])} to '
        f"{escape(summary['end'][:10])} (UTC); generated {escape(summary['generated_at'][:16])}."
        "</p>"
        f'<div class="tiles">{_tiles(summary)}</div>' + "".join(sections) + "</body></html>"
    )
