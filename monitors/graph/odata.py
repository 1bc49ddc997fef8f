"""OData ``$filter`` expressions for Graph, with values substituted as literals.

The Table Storage SDK takes ``parameters=`` for its filters; Graph has no such thing, so this is
its counterpart: ``@name`` in the expression is replaced by the value written as an OData literal
(strings quoted, their quotes doubled), so no value is ever formatted into a filter by hand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

Value = str | datetime | Sequence[str]
_PARAMETER = re.compile(r"@(\w+)")


def literal(value: Value) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time in a Graph filter needs a time zone")
        return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "(" + ",".join(literal(v) for v in value) + ")"


def odata_filter(expression: str, **values: Value) -> str:
    """``odata_filter("id eq @id", id=group)`` -> ``id eq '<group>'``; a sequence becomes the
    parenthesised list that ``in`` takes."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for @{name} in the filter {expression!r}")
        return literal(values[name])

    return _PARAMETER.sub(substitute, expression)
