"""`paystream replay record|play|copy` and `paystream loadtest --from` on the real broker and database.

One source environment for the module: two bursts of generated payments
(and two invalid records) half a second apart, processed by the pipeline and
recorded. Each test plays, copies or load-tests into its own namespace. The
time-window test writes its own bursts with pauses between them and builds its
window from the timestamps the broker gave them, never from how fast a burst went.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from paystream.db.pool import connect
from paystream.kafka import make_producer
from paystream.prepare import drop_database, isolated_settings
from paystream.replay.player import Pace, play
from paystream.replay.recording import RecordedRecord, Recording
from paystream.replay.rewrite import derived_payment_id
from paystream.settings import REPO_ROOT, Settings
from paystream.topic_scan import read_topic
from tests.support.pipeline import drain, fast_settings, fresh_environment, generate, publish
from topology.apply import apply_topology
from topology.topics import PAYMENTS_REQUESTED

pytestmark = pytest.mark.integration

BURST = 60
GAP_S = 0.5
INVALID = [b"\x00\x01garbage", b'{"payment_id": "cut']
CLI_TIMEOUT_S = 120.0


@dataclass
class Source:
    settings: Settings
    first_ids: list[str]
    second_ids: list[str]
    statuses: dict[str, str]
    recording: Path
    record_stdout: str
    records: list[RecordedRecord]

    @property
    def gap_ms(self) -> int:
        """A time between the two bursts: every record is stamped before or after it."""
        first = max(r.timestamp_ms for r in self.records if _payment_id(r) in set(self.first_ids))
        second = min(r.timestamp_ms for r in self.records if _payment_id(r) in set(self.second_ids))
        assert second - first > GAP_S * 1000 / 2, (first, second)
        return (first + second) // 2


async def cli(namespace: str, *argv: str) -> tuple[int, str, str]:
    """Run the real command line in its own process, in the topic namespace `namespace`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paystream.cli.main",
        *argv,
        env={**os.environ, "PAYSTREAM_NAMESPACE": namespace},
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def statuses_of(settings: Settings) -> dict[str, str]:
    connection = await connect(settings)
    try:
        rows = await connection.fetch("SELECT payment_id, status FROM payments")
    finally:
        await connection.close()
    return {row["payment_id"]: row["status"] for row in rows}


async def dead_letter_count(settings: Settings) -> int:
    connection = await connect(settings)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM dead_letters WHERE stage = 'risk'"))
    finally:
        await connection.close()


def decision(status: str) -> str:
    """What the pipeline decided; settled or only cleared depends on when the cycle closed."""
    return "cleared" if status == "settled" else status


def iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _payment_id(record: RecordedRecord) -> str | None:
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None
    return value.get("payment_id") if isinstance(value, dict) else None


@pytest.fixture(scope="module")
async def source(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Source]:
    settings = await fresh_environment("rsrc")
    generated = generate(2 * BURST, settings.namespace.rstrip("."))
    await publish(settings, generated[:BURST])
    await asyncio.sleep(GAP_S)
    await publish(settings, generated[BURST:], raw=INVALID)
    await drain(settings)
    path = tmp_path_factory.mktemp("replay") / "full.jsonl.gz"
    code, out, err = await cli(
        settings.namespace, "replay", "record", "--topic", PAYMENTS_REQUESTED, "--out", str(path)
    )
    assert code == 0, err
    ids = [g.payment.payment_id for g in generated]
    yield Source(
        settings, ids[:BURST], ids[BURST:], await statuses_of(settings), path, out, list(Recording(path).records())
    )
    await drop_database(settings)


async def topics_only(prefix: str) -> Settings:
    """A namespace with the declared topics and no database: for tests that only look at topics."""
    settings = isolated_settings(fast_settings(), f"{prefix}{os.urandom(4).hex()}")
    await apply_topology(settings)
    return settings


async def test_record_keeps_every_record_of_the_topic_in_timestamp_order(source: Source) -> None:
    on_topic = await read_topic(source.settings, source.settings.topic(PAYMENTS_REQUESTED))
    assert len(on_topic) == 2 * BURST + len(INVALID)
    assert sorted((r.partition, r.offset, r.timestamp, r.key, r.value) for r in on_topic) == sorted(
        (r.partition, r.offset, r.timestamp_ms, r.key, r.value) for r in source.records
    )
    stamps = [r.timestamp_ms for r in source.records]
    assert stamps == sorted(stamps)
    for partition in {r.partition for r in source.records}:
        offsets = [r.offset for r in source.records if r.partition == partition]
        assert offsets == sorted(offsets)
    header = Recording(source.recording).header
    assert (header.topic, header.source_topic) == (PAYMENTS_REQUESTED, source.settings.topic(PAYMENTS_REQUESTED))
    size_kib = source.recording.stat().st_size / 1024
    assert source.record_stdout == (
        f"recorded 122 of 122 records read from {header.source_topic} into {source.recording}"
        f" ({size_kib:.1f} KiB): timestamps {iso(stamps[0])} .. {iso(stamps[-1])}"
        f" ({(stamps[-1] - stamps[0]) / 1000:.1f} s), in {source.record_stdout.rsplit(' in ', 1)[1]}"
    )


# The window test: three bursts, each acknowledged before an explicit pause, so each burst's
# timestamps (the broker's append time, read back) lie strictly after the previous burst's. The
# window is bounded by timestamps read back from the broker: it never depends on how many
# milliseconds a burst took or on the machine being idle.
WINDOW_BURSTS = {"before": 4, "inside": 6, "after": 4}
WINDOW_PAUSE_S = 0.2


async def publish_bursts(settings: Settings) -> None:
    """WINDOW_BURSTS records named `<burst>-<n>`, keyed over several payers (several partitions)."""
    producer = make_producer(settings, "paystream-tests")
    await producer.start()
    try:
        for burst, count in WINDOW_BURSTS.items():
            sent = [
                await producer.send(
                    settings.topic(PAYMENTS_REQUESTED), key=f"payer-{n % 5:06d}".encode(), value=f"{burst}-{n}".encode()
                )
                for n in range(count)
            ]
            await asyncio.gather(*sent)  # acknowledged: stamped before the pause
            await asyncio.sleep(WINDOW_PAUSE_S)
    finally:
        await producer.stop()


async def test_record_since_until_keeps_only_that_window(tmp_path: Path) -> None:
    target = await topics_only("rwin")
    await publish_bursts(target)
    on_topic = await read_topic(target, target.topic(PAYMENTS_REQUESTED))
    stamps: dict[str, list[int]] = {burst: [] for burst in WINDOW_BURSTS}
    for record in on_topic:
        stamps[record.value.decode().split("-")[0]].append(record.timestamp)
    assert {burst: len(found) for burst, found in stamps.items()} == WINDOW_BURSTS
    # The premise, checked rather than assumed: the bursts do not overlap in time.
    assert max(stamps["before"]) < min(stamps["inside"]) <= max(stamps["inside"]) < min(stamps["after"]), stamps
    # Both bounds sit on records: since (inclusive) on the inside burst's first, until (exclusive) on the next's.
    since_ms, until_ms = min(stamps["inside"]), min(stamps["after"])

    path = tmp_path / "window.jsonl.gz"
    argv = ["replay", "record", "--topic", PAYMENTS_REQUESTED, "--out", str(path), "--quiet"]
    code, out, err = await cli(target.namespace, *argv, "--since", iso(since_ms), "--until", iso(until_ms))
    assert code == 0, err
    window = list(Recording(path).records())
    assert sorted(r.value or b"" for r in window) == sorted(
        f"inside-{n}".encode() for n in range(WINDOW_BURSTS["inside"])
    )
    # Each record as the broker has it, merged in (timestamp, partition, offset) order.
    expected = sorted(
        (r for r in on_topic if since_ms <= r.timestamp < until_ms), key=lambda r: (r.timestamp, r.partition, r.offset)
    )
    assert [(r.timestamp_ms, r.partition, r.offset, r.key, r.value) for r in window] == [
        (r.timestamp, r.partition, r.offset, r.key, r.value) for r in expected
    ]
    assert out.startswith(f"recorded {WINDOW_BURSTS['inside']} of ")
    header = Recording(path).header
    assert (header.since_ms, header.until_ms) == (since_ms, until_ms)


async def test_replay_without_new_ids_is_absorbed_as_duplicates(source: Source) -> None:
    settings = await fresh_environment("rplay")
    try:
        code, out, err = await cli(settings.namespace, "replay", "play", str(source.recording), "--speed", "max")
        assert code == 0, err
        assert out.startswith(f"sent 122 records to {settings.topic(PAYMENTS_REQUESTED)} in ")
        assert out.rstrip().endswith("payment ids kept")
        assert "playing" in err  # the progress bar, on stderr
        await drain(settings)
        first = await statuses_of(settings)
        # A faithful copy of the traffic: the same payments, decided the same way.
        assert {p: decision(s) for p, s in first.items()} == {p: decision(s) for p, s in source.statuses.items()}
        assert await dead_letter_count(settings) == len(INVALID)

        report = await play(
            settings, settings.topic(PAYMENTS_REQUESTED), Recording(source.recording).records(), Pace(0)
        )
        assert report.sent == 122
        await drain(settings)
        assert await statuses_of(settings) == first  # no new payment, no status changed
        # The replay was read and processed: its invalid records were refused again, at their new offsets.
        assert await dead_letter_count(settings) == 2 * len(INVALID)
    finally:
        await drop_database(settings)


async def test_replay_with_new_ids_is_processed_as_new_payments(source: Source) -> None:
    settings = await fresh_environment("rnew")
    try:
        argv = ["replay", "play", str(source.recording), "--speed", "max", "--rewrite-ids", "--id-salt", "s1"]
        code, out, err = await cli(settings.namespace, *argv, "--quiet")
        assert code == 0, err
        assert out.rstrip().endswith(
            "ids rewritten with --id-salt s1: 120 rewritten, 2 untouched (not a valid payment.requested)"
        )
        assert err == ""
        await drain(settings)
        replayed = await statuses_of(settings)
        expected = {derived_payment_id("s1", p): decision(s) for p, s in source.statuses.items()}
        assert {p: decision(s) for p, s in replayed.items()} == expected
        mix = Counter(expected.values())
        assert mix["cleared"] > 0 and mix["rejected"] > 0, mix  # a mix worth comparing
        assert await dead_letter_count(settings) == len(INVALID)
    finally:
        await drop_database(settings)


async def test_copy_topic_to_topic_keeps_each_payers_order(source: Source) -> None:
    target = await topics_only("rcopy")
    argv = ["replay", "copy", "--from-topic", PAYMENTS_REQUESTED, "--from-namespace", source.settings.namespace]
    code, out, err = await cli(target.namespace, *argv, "--since", iso(source.gap_ms), "--speed", "max", "--quiet")
    assert code == 0, err
    expected = [r for r in source.records if r.timestamp_ms >= source.gap_ms]
    assert out.startswith(f"read {len(expected)} records from {source.settings.topic(PAYMENTS_REQUESTED)}; sent ")
    copied = await read_topic(target, target.topic(PAYMENTS_REQUESTED))
    assert sorted((r.key, r.value) for r in copied) == sorted((r.key, r.value) for r in expected)
    for key in {r.key for r in expected}:
        in_order = [r.value for r in sorted(copied, key=lambda r: (r.partition, r.offset)) if r.key == key]
        assert in_order == [r.value for r in expected if r.key == key]


async def test_a_slowed_replay_takes_at_least_the_scaled_time(source: Source) -> None:
    target = await topics_only("rslow")
    topic = target.topic(PAYMENTS_REQUESTED)
    span_s = (source.records[-1].timestamp_ms - source.records[0].timestamp_ms) / 1000
    assert span_s > GAP_S
    slowed = await play(target, topic, source.records, Pace(speed=0.5))
    assert slowed.sent == 122
    assert slowed.wall_s >= span_s / 0.5
    capped = await play(target, topic, source.records, Pace(speed=0, rate_per_s_max=200))
    assert capped.sent == 122
    assert capped.wall_s >= (122 - 2) / 200  # 2 = the cap's burst, 10 ms of records
    assert len(await read_topic(target, topic)) == 2 * 122


async def test_headers_null_values_and_large_records_keep_their_place() -> None:
    """Records that cannot go in a partition batch are sent one by one, between the batched ones, in order."""
    target = await topics_only("rhead")
    topic = target.topic(PAYMENTS_REQUESTED)
    large = bytes(200 * 1024)
    played = [
        RecordedRecord(1_000 + i, 0, i, b"payer-1", value, headers)
        for i, (value, headers) in enumerate(
            [
                (b"a", ()),
                (b"b", (("trace", b"t-1"), ("empty", None))),
                (None, ()),
                (large, ()),
                (b"e", ()),
            ]
        )
    ]
    report = await play(target, topic, played, Pace(0))
    assert (report.sent, report.skipped) == (5, 0)
    on_topic = sorted(await read_topic(target, topic), key=lambda r: r.offset)
    assert [r.value for r in on_topic] == [b"a", b"b", None, large, b"e"]
    assert {r.partition for r in on_topic} == {on_topic[0].partition}
    assert [tuple(r.headers) for r in on_topic] == [(), (("trace", b"t-1"), ("empty", None)), (), (), ()]


async def test_loadtest_from_a_recording(source: Source, tmp_path: Path) -> None:
    code, out, err = await cli("", "loadtest", "--from", str(source.recording), "--rate", "80", "--out", str(tmp_path))
    assert code == 0, err + out
    lines = out.splitlines()
    assert lines[0].startswith(f"{source.recording}: 122 records; recorded gaps divided by ")
    assert lines[0].endswith(" for a mean of 80/s, about 1.5 s")
    data = orjson.loads((tmp_path / "loadtest.json").read_bytes())
    assert (data["published"], data["outcomes_expected"], data["completed"]) == (122, 120, 120)
    assert data["recording_untouched"] == len(INVALID)
    assert data["publish_rate_achieved_per_s"] <= 80 * 1.1
    assert sum(row["published"] for row in data["timeline"]) == 122
    assert 0 < data["latency_ms"]["p50"] <= data["latency_ms"]["max"] < 60_000
