"""Where a newly assigned partition resumes: never after a batch whose events may be missing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paystream.stage.fencing import NO_OFFSET
from paystream.stage.loop import resume_position


def test_fresh_partition_starts_at_the_log_start() -> None:
    assert resume_position(None, NO_OFFSET, 0) == 0
    assert resume_position(None, NO_OFFSET, 120) == 120


def test_crash_after_first_transaction_before_first_commit_replays_from_the_start() -> None:
    # The database moved to 15, Kafka never got a commit: events of 0..14 may be missing.
    assert resume_position(None, 15, 0) == 0


def test_crash_between_database_and_kafka_commit_replays_that_batch() -> None:
    assert resume_position(100, 140, 0) == 100


def test_kafka_ahead_of_database_trusts_the_database() -> None:
    assert resume_position(150, 140, 0) == 140


@given(
    st.one_of(st.none(), st.integers(0, 10**9)),
    st.one_of(st.just(NO_OFFSET), st.integers(0, 10**9)),
    st.integers(0, 10**9),
)
def test_never_after_either_offset(kafka: int | None, database: int, log_start: int) -> None:
    position = resume_position(kafka, database, log_start)
    assert position >= log_start
    if kafka is not None:
        assert position <= max(kafka, log_start)
    else:
        assert position == log_start
    if database != NO_OFFSET:
        assert position <= max(database, log_start)
