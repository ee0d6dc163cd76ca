"""The throughput window `advance` keeps in each `stage_offsets` row, step by step, on a real PostgreSQL.

`now()` is the statement's transaction time, so each advance's dates are
compared exactly with the `last_batch_at` it wrote; the passing of minutes is
played by moving the row's dates back, never by waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from paystream.db.migrate import migrate
from paystream.db.pool import connect
from paystream.prepare import create_database, drop_database, isolated_settings
from paystream.settings import load_settings
from paystream.stage.fencing import NO_OFFSET, WINDOW_STEP_S, FencedError, advance, claim_partitions

pytestmark = pytest.mark.integration

GROUP = "window-group"
TOPIC = "window-topic"
STEP = timedelta(seconds=WINDOW_STEP_S)


@pytest.fixture
async def db() -> AsyncIterator[Any]:
    settings = isolated_settings(load_settings(), f"win{uuid.uuid4().hex[:8]}")
    await create_database(settings)
    connection = await connect(settings)
    await migrate(connection)
    yield connection
    await connection.close()
    await drop_database(settings)


async def window(db: Any, partition: int = 0) -> dict[str, Any]:
    row = await db.fetchrow(
        """SELECT next_offset, epoch, updated_at, last_batch_at, window_offset, window_started_at,
                  next_window_offset, next_window_started_at
           FROM stage_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3""",
        GROUP,
        TOPIC,
        partition,
    )
    return dict(row)


async def older(db: Any, seconds: float, partition: int = 0, *, batches: bool = True) -> None:
    """Move the row's dates `seconds` into the past: the row after that long idle.

    With `batches=False` only the window's dates move: a partition whose batches kept coming.
    """
    await db.execute(
        """UPDATE stage_offsets SET
               updated_at = CASE WHEN $5 THEN updated_at - make_interval(secs => $4) ELSE updated_at END,
               last_batch_at = CASE WHEN $5 THEN last_batch_at - make_interval(secs => $4) ELSE last_batch_at END,
               window_started_at = window_started_at - make_interval(secs => $4),
               next_window_started_at = next_window_started_at - make_interval(secs => $4)
           WHERE group_id = $1 AND topic = $2 AND partition = $3""",
        GROUP,
        TOPIC,
        partition,
        float(seconds),
        batches,
    )


async def test_the_window_rotates_each_step_and_spans_one_to_two_steps(db: Any) -> None:
    claims = await claim_partitions(db, GROUP, TOPIC, [0])
    epochs = {0: claims[0].epoch}
    claimed = await window(db)
    assert (claimed["next_offset"], claimed["last_batch_at"], claimed["window_offset"]) == (NO_OFFSET, None, None)

    # First batch of a new row: nothing was processed before its first offset, at any time; dated one step back.
    await advance(db, GROUP, TOPIC, {0: (5, 40)}, epochs)
    first = await window(db)
    assert first["next_offset"] == 40
    assert first["last_batch_at"] == first["updated_at"]
    assert (first["window_offset"], first["window_started_at"]) == (5, first["last_batch_at"] - STEP)
    assert (first["next_window_offset"], first["next_window_started_at"]) == (5, first["last_batch_at"] - STEP)

    # The next window's start is a step old at once: the window keeps it, the next one starts at batch one's end.
    await advance(db, GROUP, TOPIC, {0: (40, 70)}, epochs)
    second = await window(db)
    assert (second["window_offset"], second["window_started_at"]) == (5, first["window_started_at"])
    assert (second["next_window_offset"], second["next_window_started_at"]) == (40, first["last_batch_at"])

    # Within the step: the window only grows.
    await advance(db, GROUP, TOPIC, {0: (70, 90)}, epochs)
    third = await window(db)
    assert {k: third[k] for k in ("window_offset", "window_started_at", "next_window_offset")} == {
        "window_offset": 5, "window_started_at": first["window_started_at"], "next_window_offset": 40,
    }  # fmt: skip
    assert third["next_window_started_at"] == first["last_batch_at"]

    # Batches kept coming and the next window's start is now 61 s old: it becomes the window's start.
    await older(db, 61, batches=False)
    before = await window(db)
    await advance(db, GROUP, TOPIC, {0: (90, 100)}, epochs)
    rotated = await window(db)
    assert (rotated["window_offset"], rotated["window_started_at"]) == (40, before["next_window_started_at"])
    assert (rotated["next_window_offset"], rotated["next_window_started_at"]) == (90, before["last_batch_at"])
    span = rotated["last_batch_at"] - rotated["window_started_at"]
    assert STEP <= span <= 2 * STEP, span
    assert rotated["next_offset"] == 100


async def test_after_a_pause_the_batch_counts_over_one_step_not_over_the_pause(db: Any) -> None:
    claims = await claim_partitions(db, GROUP, TOPIC, [0])
    epochs = {0: claims[0].epoch}
    await advance(db, GROUP, TOPIC, {0: (0, 100)}, epochs)
    await advance(db, GROUP, TOPIC, {0: (100, 200)}, epochs)
    await older(db, 3_600)  # an hour idle
    await claim_partitions(db, GROUP, TOPIC, [0])  # a rebalance meanwhile: updated_at is now, no batch ran
    epochs = {0: epochs[0] + 1}

    await advance(db, GROUP, TOPIC, {0: (200, 230)}, epochs)
    resumed = await window(db)
    # Offset 200 held from the last batch until now: the window starts there, one step back.
    assert (resumed["window_offset"], resumed["window_started_at"]) == (200, resumed["last_batch_at"] - STEP)
    assert (resumed["next_window_offset"], resumed["next_window_started_at"]) == (200, resumed["last_batch_at"] - STEP)
    assert resumed["next_offset"] == 230


async def test_a_fenced_or_replayed_batch_keeps_the_rows_meaning(db: Any) -> None:
    claims = await claim_partitions(db, GROUP, TOPIC, [0, 1])
    epochs = {p: c.epoch for p, c in claims.items()}
    await advance(db, GROUP, TOPIC, {0: (0, 50), 1: (0, 20)}, epochs)
    await claim_partitions(db, GROUP, TOPIC, [1])  # another consumer takes partition 1
    rows_before = [await window(db, 0), await window(db, 1)]

    with pytest.raises(FencedError):
        async with db.transaction():
            await advance(db, GROUP, TOPIC, {0: (50, 60), 1: (20, 30)}, epochs)
    assert [await window(db, 0), await window(db, 1)] == rows_before

    # A replayed span (before the stored next offset) dates a batch but leaves the offset and the window.
    await advance(db, GROUP, TOPIC, {0: (10, 30)}, epochs)
    replayed = await window(db, 0)
    assert replayed["next_offset"] == 50
    assert replayed["last_batch_at"] > rows_before[0]["last_batch_at"]
    assert replayed["window_offset"] == rows_before[0]["window_offset"]
    assert replayed["window_started_at"] == rows_before[0]["window_started_at"]
