"""Passing variable-length lists through unnest(): asyncpg cannot send ragged 2-D arrays."""

from __future__ import annotations

from collections.abc import Sequence

# ASCII unit separator: never part of a reason; SQL splits with string_to_array(x, chr(31)).
REASON_SEPARATOR = "\x1f"


def join_reasons(reasons: Sequence[str]) -> str:
    assert not any(REASON_SEPARATOR in reason for reason in reasons), reasons
    return REASON_SEPARATOR.join(reasons)
