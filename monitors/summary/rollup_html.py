"""The roll-up as one self-contained HTML page, as the weekly report is: inline CSS, no script,
no external asset, every value escaped (tenant names are the provider's customers' words)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from monitors.summary.html import CSS
from monitors.summary.rollup import headline, pct, state_text, trend_text

# The page loads nothing and runs nothing; said to the browser too, so a tenant name that got
# past escaping still could not run or fetch anything. Inline style is the page's only style
# (MDN, Content-Security-Policy style-src: 'unsafe-inline' allows <style> elements). A meta
# policy holds for a file opened from disk as well as for a served page.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_HEADERS = (
    "tenant",
    "tenant id",
    "state",
    "compliance",
    "trend",
    "previous week",
    "judged",
    "deployments",
    "late",
    "missing",
    "unverified",
    "open anomalies",
)


def _cell(value: Any, numeric: bool = False, cls: str = "") -> str:
    text = "n/a" if value is None else str(value)
    classes = " ".join(c for c in ("n" if numeric else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{escape(text)}</td>"


def _rate_class(rate: Any) -> str:
    if rate is None:
        return ""
    return "good" if rate >= 0.98 else "warn" if rate >= 0.9 else "bad"


def _row(line: Mapping[str, Any]) -> str:
    head = _cell(line["display_name"]) + _cell(line["tenant_id"]) + _cell(state_text(line))
    if line["status"] == "unavailable":
        why = f"unavailable: {line['problem']}"
        return f'<tr>{head}<td colspan="9" class="bad">{escape(why)}</td></tr>'
    trend_class = {"up": "good", "down": "bad"}.get(str(line["trend"]), "")
    cells = [
        _cell(pct(line["rate"]), True, _rate_class(line["rate"])),
        _cell(trend_text(line), False, trend_class),
        _cell(pct(line["previous_rate"]), True),
        *(
            _cell(line[key], True)
            for key in (
                "judged",
                "deployments",
                "late",
                "missing",
                "unverified",
                "open_anomalies",
            )
        ),
    ]
    return f"<tr>{head}{''.join(cells)}</tr>"


def render_rollup_html(data: Mapping[str, Any]) -> str:
    title = f"ETG compliance by tenant, week {data['week']}"
    head = "".join(f"<th>{escape(h)}</th>" for h in _HEADERS)
    rows = "".join(_row(line) for line in data["tenants"])
    table = (
        f'<table id="tenants"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        if rows
        else '<p class="empty">No tenant is registered.</p>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="sub">{escape(headline(data))}. Worst first; trend against '
        f"{escape(str(data['previous_week']))}; generated "
        f"{escape(str(data['generated_at'])[:16])} (UTC).</p>"
        f"{table}</body></html>"
    )
