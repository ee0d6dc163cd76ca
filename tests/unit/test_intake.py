"""The stale-record filter (`owned_records`): which fetched records a consumer may apply.

Built from aiokafka's own structs, so the filter sees exactly what getmany returns.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.structs import ConsumerRecord, TopicPartition

from paystream.stage.intake import owned_records

TOPIC = "t.payments.requested"
P0, P1, P2 = (TopicPartition(TOPIC, p) for p in range(3))


def records(tp: TopicPartition, offsets: Iterable[int]) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord(
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            timestamp=1_767_268_800_000,
            timestamp_type=1,
            key=b"payer-000000",
            value=b"{}",
            checksum=None,
            serialized_key_size=12,
            serialized_value_size=2,
            headers=(),
        )
        for offset in offsets
    ]


def offsets(owned: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in rs] for tp, rs in owned.items()}


def test_records_before_the_claimed_position_are_dropped() -> None:
    batch = {P0: records(P0, range(5, 15))}
    owned = owned_records(batch, {P0}, {0: 10}, set())
    assert offsets(owned) == {0: [10, 11, 12, 13, 14]}


def test_the_record_at_the_claimed_position_is_kept() -> None:
    owned = owned_records({P0: records(P0, [10])}, {P0}, {0: 10}, set())
    assert offsets(owned) == {0: [10]}


def test_a_partition_whose_records_are_all_stale_is_left_out_not_kept_empty() -> None:
    # process_batch returns early on an empty result: an empty list would start a batch with no records.
    batch = {P0: records(P0, range(0, 10)), P1: records(P1, range(3, 6))}
    owned = owned_records(batch, {P0, P1}, {0: 10, 1: 0}, set())
    assert offsets(owned) == {1: [3, 4, 5]}
    assert owned_records({P0: records(P0, range(0, 10))}, {P0}, {0: 10}, set()) == {}


def test_records_of_partitions_not_in_the_assignment_are_dropped() -> None:
    # Revoked since getmany returned: they belong to the new owner now.
    batch = {P0: records(P0, range(0, 3)), P1: records(P1, range(0, 3))}
    owned = owned_records(batch, {P1}, {0: 0, 1: 0}, set())
    assert offsets(owned) == {1: [0, 1, 2]}


def test_the_assignment_is_matched_by_topic_and_partition() -> None:
    other_topic = TopicPartition("other.payments.requested", 0)
    owned = owned_records({P0: records(P0, range(0, 3))}, {other_topic}, {0: 0}, set())
    assert owned == {}


def test_an_assigned_partition_not_yet_claimed_is_dropped() -> None:
    # Assigned, but its claim (epoch and seek) has not finished: no position yet.
    batch = {P0: records(P0, range(0, 3)), P1: records(P1, range(0, 3))}
    owned = owned_records(batch, {P0, P1}, {1: 0}, set())
    assert offsets(owned) == {1: [0, 1, 2]}


def test_fenced_partitions_are_dropped_until_claimed_again() -> None:
    batch = {P0: records(P0, range(0, 3)), P1: records(P1, range(0, 3)), P2: records(P2, range(7, 9))}
    owned = owned_records(batch, {P0, P1, P2}, {0: 0, 1: 0, 2: 0}, {0, 2})
    assert offsets(owned) == {1: [0, 1, 2]}


def test_offset_gaps_are_allowed() -> None:
    # Transaction markers and compaction leave holes: every record at or after the position stays.
    gappy = [3, 4, 7, 8, 20, 21, 1_000]
    owned = owned_records({P0: records(P0, gappy)}, {P0}, {0: 4}, set())
    assert offsets(owned) == {0: [4, 7, 8, 20, 21, 1_000]}


def test_a_position_inside_a_gap_keeps_everything_after_it() -> None:
    owned = owned_records({P0: records(P0, [3, 9, 10])}, {P0}, {0: 5}, set())
    assert offsets(owned) == {0: [9, 10]}


def test_kept_records_are_the_fetched_objects_in_fetch_order() -> None:
    fetched = records(P0, [5, 6, 9])
    owned = owned_records({P0: fetched}, {P0}, {0: 6}, set())
    assert owned[P0] == fetched[1:]
    assert all(a is b for a, b in zip(owned[P0], fetched[1:], strict=True))


def test_every_rule_at_once() -> None:
    batch = {
        P0: records(P0, [0, 1, 5, 6]),  # assigned, claimed at 5: the first two are stale
        P1: records(P1, [0, 1]),  # fenced
        P2: records(P2, [4, 8]),  # revoked
    }
    owned = owned_records(batch, {P0, P1}, {0: 5, 1: 0, 2: 0}, {1})
    assert offsets(owned) == {0: [5, 6]}
