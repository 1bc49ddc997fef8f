"""Simulated time shared by the tenant state and the HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are rejected."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {value!r}")
    return value.astimezone(UTC)


class SimClock:
    """A virtual clock: it only moves when a test or the control API moves it.

    Every component reads time from here so a run is reproducible and a test can
    jump hours ahead without sleeping. Listeners added with ``add_listener`` run
    after every move, in the thread that moved the clock, outside the clock's lock.
    """

    __slots__ = ("_listeners", "_lock", "_now")

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = as_utc(start)
        self._listeners: tuple[Callable[[], None], ...] = ()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each ``advance`` or ``set`` (it reads the time itself)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def _moved(self) -> None:
        for listener in self._listeners:
            listener()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def timestamp(self) -> float:
        """The current sim time as POSIX seconds (what the indexes are keyed on)."""
        with self._lock:
            return self._now.timestamp()

    def advance(self, seconds: float) -> datetime:
        """Move forward (or backward, for a negative value) and return the new time."""
        with self._lock:
            self._now = self._now + timedelta(seconds=seconds)
            now = self._now
        self._moved()
        return now

    def set(self, value: datetime) -> None:
        with self._lock:
            self._now = as_utc(value)
        self._moved()

    def __repr__(self) -> str:
        return f"SimClock({self.now().isoformat()})"
