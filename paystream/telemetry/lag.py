"""Consumer lag: how far each claimed partition's next offset trails the broker's high-water mark."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import TopicPartition


def partition_lag(highwater: int | None, position: int | None) -> int | None:
    """Records the loop has yet to process; None when either end is unknown (nothing fetched yet).

    `highwater` is the offset the broker will give the next record, `position`
    the next offset the loop will apply: both point past the last record, so
    their difference is the count. A position past the high-water mark (its
    value is from the last fetch, the position from the last commit) is 0.
    """
    if highwater is None or position is None:
        return None
    return max(0, highwater - position)


def partition_lags(
    topic: str,
    positions: Mapping[int, int],
    assignment: Collection[TopicPartition],
    highwater: Any,
) -> dict[int, int]:
    """Lag per claimed partition that is still assigned and whose high-water mark is known.

    `highwater` is the consumer's own `highwater(tp)`: the value the broker
    sent with the last fetch response, so reading it costs no request.
    """
    lags = {}
    for partition, position in positions.items():
        tp = TopicPartition(topic, partition)
        if tp not in assignment:
            continue  # revoked since: the consumer would refuse to answer for it
        lag = partition_lag(highwater(tp), position)
        if lag is not None:
            lags[partition] = lag
    return lags


def stage_lags(loop: Any) -> dict[int, int]:
    """A stage loop's lag per partition, read from its consumer (no broker request)."""
    consumer = loop.consumer
    return partition_lags(loop.topic, dict(loop.positions), consumer.assignment(), consumer.highwater)
