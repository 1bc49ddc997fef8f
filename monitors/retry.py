"""Reading a server's Retry-After without trusting it.

Graph and Teams both send Retry-After, and a hostile or broken peer can send anything there:
`inf`, `nan`, 1e300 or a date. A wait that cannot be represented would crash the job that
received it, so every value is clamped to a finite range and anything unreadable means the
caller's default.
"""

from __future__ import annotations

import math


def finite_number(value: object) -> float | None:
    """The value as a finite float, or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def retry_after_seconds(value: object, *, default: float, floor: float, cap: float) -> float:
    number = finite_number(value)
    if number is None:
        return default
    return min(max(number, floor), cap)
