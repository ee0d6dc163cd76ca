"""What a stage implements and what the loop hands it.

A stage is pure decisions plus set-based SQL: `apply` gets a whole batch of
decoded records and an open transaction, and returns the events to emit. It
must be idempotent per payment: for input it has already applied it writes
nothing and returns the same events again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec

E = TypeVar("E", bound=msgspec.Struct)
E_co = TypeVar("E_co", bound=msgspec.Struct, covariant=True)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from, for logs and dead letters."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Accepted(Generic[E]):
    """A decoded record; `raw` is kept so an isolated poison record's dead letter carries its bytes."""

    origin: Origin
    event: E
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class Output:
    """An event to produce: `topic` is the declared (un-namespaced) name."""

    topic: str
    key: str
    event: msgspec.Struct


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that decoded but cannot be applied; it goes to the dead letters."""

    origin: Origin
    field: str
    rule: str
    detail: str
    raw: bytes


@dataclass(slots=True)
class StageResult:
    outputs: list[Output] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic work's events and what to run once they are acknowledged."""

    outputs: list[Output]
    on_delivered: Callable[[], Awaitable[None]]
    # More of the same work is due now: the loop ticks again after its next
    # batch instead of waiting out the interval (small chunks, no backlog).
    more: bool = False


class Stage(Protocol[E]):
    name: str
    input_topic: str
    input_type: type[E]

    async def apply(self, connection: Any, records: Sequence[Accepted[E]], now: datetime) -> StageResult: ...

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        """Work not driven by input (closing settlement batches on time); None when idle."""
        ...

    async def abandon(self, connection: Any, records: Sequence[tuple[Accepted[E], str]], now: datetime) -> list[Output]:
        """End the path of payments whose records were isolated as poison (each with its reason).

        Called in the batch transaction after isolation: a stage that placed
        something for these payments earlier on their path (a hold) releases
        it and gives the payment a terminal status, so nothing waits forever.
        Returns the events to emit (a `failed` outcome); [] when there is
        nothing to end.
        """
        ...
