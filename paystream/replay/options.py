"""Command-line values of the replay commands, checked with one clear line on error."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from paystream.errors import PaystreamError
from paystream.replay.pacing import SPEED_MAX
from paystream.replay.source import Window
from topology.topics import TOPICS

SPEED_MAX_WORDS = ("max", "0")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def declared_topic(name: str) -> str:
    """`name` when it is a declared topic (not yet namespaced)."""
    declared = [spec.name for spec in TOPICS]
    if name not in declared:
        raise PaystreamError(f"topic {name!r} is not declared; declared topics: {', '.join(declared)}")
    return name


def parse_speed(text: str) -> float:
    """A positive factor on the recorded pace; `max` or `0` means as fast as possible."""
    if text.strip().lower() in SPEED_MAX_WORDS:
        return SPEED_MAX
    value = _number("--speed", text, "a number, max or 0")
    if value <= 0:
        raise PaystreamError(f"--speed {text!r} must be positive, or max (or 0) for as fast as possible")
    return value


def parse_rate_cap(text: str | None) -> float | None:
    if text is None:
        return None
    value = _number("--rate-cap", text, "a number")
    if value <= 0:
        raise PaystreamError(f"--rate-cap {text!r} must be a positive number of records per second")
    return value


def parse_window(since: str | None, until: str | None) -> Window:
    since_ms = None if since is None else _instant_ms("--since", since)
    until_ms = None if until is None else _instant_ms("--until", until)
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise PaystreamError(f"--since {since} is not before --until {until}")
    return Window(since_ms, until_ms)


def _instant_ms(option: str, text: str) -> int:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise PaystreamError(f"{option} {text!r} is not an ISO 8601 time like 2026-01-31T12:00:00Z") from None
    if instant.tzinfo is None:
        raise PaystreamError(f"{option} {text!r} needs a time zone, such as Z or +01:00")
    return (instant - _EPOCH) // timedelta(milliseconds=1)


def _number(option: str, text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PaystreamError(f"{option} {text!r} is not {expected}") from None
    if not math.isfinite(value):
        raise PaystreamError(f"{option} {text!r} is not a finite number")
    return value
