"""`paystream status` without I/O: joining the sources, the throughput window, the tables and the JSON keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from paystream.cli.status import CLEAR_SCREEN, _refresh
from paystream.status.model import Member, OffsetRow, Snapshot, StageStatus, partition_lag, stage_status, window_rate
from paystream.status.render import NO_LIVE_CONSUMER, render_json, render_text, snapshot_json

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def row(
    partition: int, next_offset: int, last_s: float | None, window_offset: int | None, window_s: float | None
) -> OffsetRow:
    return OffsetRow(
        partition,
        next_offset,
        None if last_s is None else ago(last_s),
        window_offset,
        None if window_s is None else ago(window_s),
    )


def test_window_rate_is_records_over_the_window_up_to_the_last_batch() -> None:
    # 1,800 records between the window's start (92 s ago) and the last batch (2 s ago): 90 s.
    assert window_rate(row(0, 2_000, 2, 200, 92), NOW) == 20.0


def test_window_rate_is_zero_when_the_last_batch_is_older_than_a_minute_or_nothing_is_known() -> None:
    assert window_rate(row(0, 2_000, 60.001, 200, 150), NOW) == 0.0
    assert window_rate(row(0, 2_000, 60, 200, 150), NOW) == 1_800 / 90  # exactly a minute: still counted
    assert window_rate(None, NOW) == 0.0
    assert window_rate(row(0, -1, None, None, None), NOW) == 0.0
    assert window_rate(row(0, 40, 1, None, None), NOW) == 0.0  # advanced before the window existed
    # A window not ahead of its start (a clock step) and an offset reset by hand never give a negative rate.
    assert window_rate(row(0, 40, 1, 0, 1), NOW) == 0.0
    assert window_rate(row(0, 40, 1, 100, 61), NOW) == 0.0


def test_partition_lag_counts_from_the_commit_or_from_the_log_start() -> None:
    assert partition_lag(committed=7, beginning=0, end=12) == 5
    assert partition_lag(committed=None, beginning=0, end=12) == 12
    assert partition_lag(committed=None, beginning=4, end=12) == 8  # retention removed the first four
    assert partition_lag(committed=2, beginning=4, end=12) == 8  # committed before the log start
    assert partition_lag(committed=12, beginning=0, end=12) == 0


def risk_status(members: tuple[Member, ...] = ()) -> StageStatus:
    return stage_status(
        stage="risk",
        group_id="ns.paystream.risk",
        topic="ns.payments.requested",
        group_state="Stable" if members else "Empty",
        members=members,
        partitions=[1, 0],
        committed={0: 10},
        beginnings={0: 0, 1: 0},
        ends={0: 15, 1: 3},
        rows={0: row(0, 10, 1.5, 0, 61.5)},
        dead_letters_last_hour=2,
        now=NOW,
    )


def test_stage_status_joins_broker_and_database_partition_by_partition() -> None:
    member = Member("m-1", "paystream-risk-host-42", "127.0.0.1", (0, 1))
    status = risk_status((member,))
    assert status.live_consumer
    assert [(p.partition, p.member, p.committed_offset, p.end_offset, p.lag) for p in status.partitions] == [
        (0, "paystream-risk-host-42", 10, 15, 5),
        (1, "paystream-risk-host-42", None, 3, 3),
    ]
    assert [p.database_next_offset for p in status.partitions] == [10, None]
    assert [p.last_batch_age_s for p in status.partitions] == [1.5, None]
    assert [p.records_per_s for p in status.partitions] == [10 / 60, 0.0]
    assert (status.lag_total, status.last_batch_age_s, status.records_per_s) == (8, 1.5, 10 / 60)
    assert not risk_status().live_consumer


def test_json_has_stable_keys_and_says_when_no_consumer_is_live() -> None:
    snapshot = Snapshot(NOW, (risk_status(),))
    data = orjson.loads(render_json(snapshot))
    assert data == snapshot_json(snapshot)
    assert data["taken_at"] == "2026-03-01T12:00:00.000Z"
    (stage,) = data["stages"]
    assert list(stage) == [
        "stage", "group_id", "topic", "group_state", "live_consumer", "members", "partitions", "lag_total",
        "last_batch_age_s", "records_per_s", "dead_letters_last_hour",
    ]  # fmt: skip
    assert (stage["live_consumer"], stage["members"], stage["lag_total"], stage["dead_letters_last_hour"]) == (
        False, [], 8, 2,
    )  # fmt: skip
    assert stage["partitions"][0] == {
        "partition": 0,
        "member": None,
        "committed_offset": 10,
        "end_offset": 15,
        "lag": 5,
        "database_next_offset": 10,
        "last_batch_age_s": 1.5,
        "records_per_s": 0.17,
    }
    assert stage["partitions"][1]["committed_offset"] is None
    assert stage["partitions"][1]["last_batch_age_s"] is None


def test_text_shows_members_partitions_total_and_dead_letters() -> None:
    member = Member("m-1", "paystream-risk-host-42", "10.0.0.7", (0, 1))
    text = render_text(Snapshot(NOW, (risk_status((member,)),)))
    assert text.splitlines() == [
        "paystream status at 2026-03-01 12:00:00Z",
        "",
        "risk: ns.payments.requested -> group ns.paystream.risk (Stable)",
        "  member paystream-risk-host-42 on 10.0.0.7: partitions 0,1",
        "  partition  member                  committed  end  lag  last batch  records/s",
        "          0  paystream-risk-host-42         10   15    5  1.5 s ago         0.2",
        "          1  paystream-risk-host-42          -    3    3  never             0.0",
        "      total                                            8  1.5 s ago         0.2",
        "  dead letters in the last hour: 2",
    ]


def test_text_says_no_live_consumer_in_one_line() -> None:
    lines = render_text(Snapshot(NOW, (risk_status(),))).splitlines()
    assert [line for line in lines if NO_LIVE_CONSUMER in line] == [
        "  no live consumer: nothing is processing ns.payments.requested"
    ]
    assert not [line for line in lines if line.startswith("  member ")]


def test_watch_refreshes_clear_a_terminal_and_separate_in_a_pipe() -> None:
    snapshot = Snapshot(NOW, (risk_status(),))
    text = render_text(snapshot)
    assert _refresh(snapshot, as_json=False, clear=True, refreshes=3) == CLEAR_SCREEN + text + "\n"
    assert _refresh(snapshot, as_json=False, clear=False, refreshes=0) == text + "\n"
    assert _refresh(snapshot, as_json=False, clear=False, refreshes=1) == "\n" + text + "\n"
    one_line = _refresh(snapshot, as_json=True, clear=False, refreshes=1)
    assert one_line.count("\n") == 1
    assert orjson.loads(one_line) == snapshot_json(snapshot)
