"""Alert routing: which channels an anomaly kind is announced on (ETG_ALERT_ROUTES).

The setting is ``entry;entry;...`` with each entry ``name=channel,channel``: ``name`` is an
anomaly kind or a severity. A kind's own entry wins over its severity's; a kind named by
neither goes to Teams only, which is also what an empty setting means for every kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from monitors.rules.kinds import KINDS, Severity


class Channel(StrEnum):
    TEAMS = "teams"
    PAGERDUTY = "pagerduty"
    WEBHOOK = "webhook"


DEFAULT_CHANNELS: tuple[Channel, ...] = (Channel.TEAMS,)


def _frozen() -> Mapping[str, tuple[Channel, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Routes:
    """Parsed ETG_ALERT_ROUTES: entries by kind name and by severity name."""

    by_kind: Mapping[str, tuple[Channel, ...]] = field(default_factory=_frozen)
    by_severity: Mapping[str, tuple[Channel, ...]] = field(default_factory=_frozen)

    def channels(self, kind: str) -> tuple[Channel, ...]:
        """The channels an alert of this kind goes to, in a stable order."""
        if kind in self.by_kind:
            return self.by_kind[kind]
        known = KINDS.get(kind)
        if known is not None and known.severity.value in self.by_severity:
            return self.by_severity[known.severity.value]
        return DEFAULT_CHANNELS

    def named(self) -> set[Channel]:
        """Every channel some entry names: each must be configured."""
        entries = [*self.by_kind.values(), *self.by_severity.values()]
        return {channel for channels in entries for channel in channels}


DEFAULT_ROUTES = Routes()


def _channels(name: str, text: str) -> tuple[Channel, ...]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"entry {name!r} names no channel")
    unknown = [n for n in names if n not in Channel.__members__.values()]
    if unknown:
        allowed = ", ".join(c.value for c in Channel)
        raise ValueError(f"entry {name!r} names unknown channel {unknown[0]!r} (one of {allowed})")
    # Declaration order, without repeats: a repeated channel would send the event twice.
    chosen = set(names)
    return tuple(c for c in Channel if c.value in chosen)


def parse_routes(text: str) -> Routes:
    """``critical=teams,pagerduty;etg_missing=teams,webhook`` -> Routes. ValueError names the
    first wrong entry: an unknown kind, severity or channel, or an entry given twice."""
    by_kind: dict[str, tuple[Channel, ...]] = {}
    by_severity: dict[str, tuple[Channel, ...]] = {}
    severities = {s.value for s in Severity}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, channels = entry.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"entry {entry!r} must be name=channel,channel")
        target = by_severity if name in severities else by_kind if name in KINDS else None
        if target is None:
            raise ValueError(f"entry {name!r} is neither an anomaly kind nor a severity")
        if name in target:
            raise ValueError(f"entry {name!r} is given twice")
        target[name] = _channels(name, channels)
    return Routes(MappingProxyType(by_kind), MappingProxyType(by_severity))


def routes_text(routes: Routes) -> str:
    """The setting text that parses back to ``routes``: for logs and the config report."""
    entries: Iterable[tuple[str, tuple[Channel, ...]]] = [
        *routes.by_severity.items(),
        *routes.by_kind.items(),
    ]
    return ";".join(f"{name}={','.join(c.value for c in chans)}" for name, chans in entries)
