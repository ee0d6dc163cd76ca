"""Hostile input on the real stack: odd and extreme requests among good payments of the same payers.

A few hundred records shaped like a `payment.requested` carry values drawn by
Hypothesis (`tests/support/hostile.py`: NUL and lone surrogates, repeated keys
however spelt, timestamps at the window bounds and in years 1 and 9999, amounts
at and past their bounds, ids and metadata at and past their limits, records at
the size limits, currencies, payers and merchants the demo world does not know).
Each is keyed by the payer of a good generated payment and published next to
it, so they share partitions. One pipeline run (all four stages, in this
process) consumes everything; then:

- every good payment is terminal, and every ordinary one settled;
- every hostile record has exactly one answer: a risk dead letter at its
  (topic, partition, offset) with the field and rule its kind calls for, or a
  payments row with the status its values call for; never both, never neither;
- no hold is open, no customer account holds money, reconcile finds nothing,
  no stage died and no record was isolated as poison (a hostile record isolated
  as poison would mean an edge rule is missing).

The expectations come from each record's kind and the documented rules, not
from the decoder; records near the event-time window bounds are judged against
their real append time, read back from the topic, so a slow machine changes no
verdict. Two kinds the decoder refuses, but not as documented, are pinned by
xfail tests at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.generator import GeneratedPayment
from paystream.prepare import drop_database
from paystream.publisher import PaymentPublisher
from paystream.reconcile import ReconcileReport, reconcile
from paystream.runner import run_stages
from paystream.settings import Settings
from paystream.stage.loop import LoopStats
from paystream.topic_scan import read_topic
from schemas.codec import encode
from tests.support.hostile import (
    LONE_MASKED,
    PATH_SUFFIX,
    Accept,
    Deviation,
    Expectation,
    Hostile,
    Judged,
    Refuse,
    Slot,
    draw_drafts,
    resolve,
)
from tests.support.pipeline import TERMINAL, fresh_environment, generate, wait_terminal
from topology.topics import PAYMENTS_REQUESTED
from workers import STAGE_NAMES

pytestmark = pytest.mark.integration

GOOD_COUNT = 300
GOOD_SEED = 29
# Every kind is drawn this many times (the first the simplest): 42 kinds, 294 records.
EXAMPLES_PER_KIND = 7
HYPOTHESIS_SEED = 20_260_301
# The future bound, lowered from 300 s: a request inside it is settled only once its
# settlement cycle (in event time) has closed, and the run waits for that.
FUTURE_S_MAX = 10
# Generous: the run itself takes about 15 s on two shared cores.
DRAIN_TIMEOUT_S = 120
APPEND_TIME = 1  # Kafka's timestamp type: LogAppendTime
EXAMPLES_SHOWN = 12

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Located:
    hostile: Hostile
    partition: int
    offset: int
    expect: Expectation  # resolved against the append time


@dataclass(slots=True)
class Outcome:
    settings: Settings
    topic: str
    goods: list[GeneratedPayment]
    good_origins: dict[str, tuple[int, int]]
    located: list[Located]
    letters: dict[tuple[str, int, int], Any]
    rows: dict[str, Any]
    stats: dict[str, LoopStats]
    open_holds: int
    holding_accounts: list[Any]
    report: ReconcileReport
    # Wrong answers seen once risk had consumed everything; the run stopped there (no wait for terminals).
    early: list[str]
    seconds: float


@pytest.fixture(scope="module")
async def outcome() -> AsyncIterator[Outcome]:
    settings = (await fresh_environment("hostile")).with_overrides(event_time_future_s_max=FUTURE_S_MAX)
    try:
        yield await _run(settings)
    finally:
        await drop_database(settings)


async def _run(settings: Settings) -> Outcome:
    started = time.monotonic()
    prefix = settings.namespace.rstrip(".")
    goods = generate(GOOD_COUNT, f"{prefix}-good", seed=GOOD_SEED)
    ordinary = [g for g in goods if g.kind == "ordinary"]
    drafts = draw_drafts(EXAMPLES_PER_KIND, HYPOTHESIS_SEED)
    world = build_world()
    now = datetime.now(UTC)
    hostiles = [
        draft.build(
            Slot(serial, f"{prefix}-h{serial:04d}", ordinary[serial % len(ordinary)].payment, now, settings, world)
        )
        for serial, draft in enumerate(drafts)
    ]
    assert len({h.raw for h in hostiles}) == len(hostiles), "every hostile record must be unique to be found again"

    # Each hostile record goes right before (even serials) or after (odd) the good payment whose payer it borrows.
    before: dict[int, list[Hostile]] = defaultdict(list)
    after: dict[int, list[Hostile]] = defaultdict(list)
    for serial, hostile in enumerate(hostiles):
        (after if serial % 2 else before)[serial % len(ordinary)].append(hostile)
    order: list[GeneratedPayment | Hostile] = []
    for index, good in enumerate(ordinary):
        order += [*before[index], good, *after[index]]
    order += [g for g in goods if g.kind != "ordinary"]
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for item in order:
            if isinstance(item, GeneratedPayment):
                await publisher.publish(item.payment)
            else:
                await publisher.send_raw(item.key, item.raw)

    topic = settings.topic(PAYMENTS_REQUESTED)
    records = {record.value: record for record in await read_topic(settings, topic)}
    assert len(records) == len(goods) + len(hostiles), (len(records), len(goods), len(hostiles))
    assert {r.timestamp_type for r in records.values()} == {APPEND_TIME}, "the window is measured on append time"
    located = [
        Located(
            h,
            records[h.raw].partition,
            records[h.raw].offset,
            resolve(h.expect, records[h.raw].timestamp, settings),
        )
        for h in hostiles
    ]
    good_values = {g.payment.payment_id: encode(g.payment) for g in goods}  # as the publisher sends them
    good_origins = {pid: (records[value].partition, records[value].offset) for pid, value in good_values.items()}
    ends: dict[int, int] = {}
    for record in records.values():
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)

    stop = asyncio.Event()
    runner = asyncio.create_task(run_stages(settings, STAGE_NAMES, stop=stop))
    accepted = [g.payment.payment_id for g in goods] + [
        item.hostile.payment_id
        for item in located
        if isinstance(item.expect, Accept) and item.hostile.payment_id is not None
    ]
    try:
        await _while_running(runner, _risk_consumed(settings, topic, ends))
        # Risk has answered every record: a wrong answer shows now, not as a payment that never ends.
        letters, rows = await _answers(settings, goods, located)
        early = [
            f"{item.hostile.kind}: {problem}" for item, problem in _problems(topic, located, letters, rows, early=True)
        ]
        if not early:
            await _while_running(runner, wait_terminal(settings, accepted, timeout_s=DRAIN_TIMEOUT_S))
    except BaseException:
        stop.set()
        await asyncio.gather(runner, return_exceptions=True)
        raise
    stop.set()
    stats = await runner  # raises the error of any stage that died

    letters, rows = await _answers(settings, goods, located)
    connection = await connect(settings)
    try:
        open_holds = await connection.fetchval("SELECT count(*) FROM holds WHERE status = 'held'")
        holding = await connection.fetch(
            "SELECT account_id, held_minor FROM accounts WHERE kind = 'customer' AND held_minor <> 0"
        )
        report = await reconcile(connection)
    finally:
        await connection.close()
    return Outcome(
        settings,
        topic,
        goods,
        good_origins,
        located,
        letters,
        rows,
        stats,
        open_holds,
        list(holding),
        report,
        early,
        time.monotonic() - started,
    )


async def _answers(
    settings: Settings, goods: list[GeneratedPayment], located: list[Located]
) -> tuple[dict[tuple[str, int, int], Any], dict[str, Any]]:
    """Every dead letter by origin, and the payments rows of the good and hostile payment ids."""
    ids = [g.payment.payment_id for g in goods] + [i.hostile.payment_id for i in located if i.hostile.payment_id]
    connection = await connect(settings)
    try:
        letters = await connection.fetch(
            "SELECT stage, origin_topic, origin_partition, origin_offset, field, rule, detail FROM dead_letters"
        )
        rows = await connection.fetch(
            """SELECT payment_id, status, risk_reasons, decline_reasons, failure_reasons
               FROM payments WHERE payment_id = ANY($1::text[])""",
            ids,
        )
    finally:
        await connection.close()
    return (
        {(row["origin_topic"], row["origin_partition"], row["origin_offset"]): row for row in letters},
        {row["payment_id"]: row for row in rows},
    )


async def _while_running(runner: asyncio.Task[dict[str, LoopStats]], waiting: Awaitable[T]) -> T:
    """`waiting`'s result, unless the stages stop first: then the error of the stage that died."""
    waiter = asyncio.ensure_future(waiting)
    done, _ = await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
    if waiter in done:
        return waiter.result()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    runner.result()  # a stage died: its error
    raise AssertionError("the stages returned before the run was drained, yet none died")


async def _risk_consumed(settings: Settings, topic: str, ends: dict[int, int]) -> None:
    """Until the risk stage has decided (or dead-lettered) every record published to its input."""
    connection = await connect(settings)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while True:
            rows = await connection.fetch(
                "SELECT partition, next_offset FROM stage_offsets WHERE group_id = $1 AND topic = $2",
                settings.group("risk"),
                topic,
            )
            reached = {row["partition"]: row["next_offset"] for row in rows}
            behind = {p: (reached.get(p, 0), end) for p, end in ends.items() if reached.get(p, 0) < end}
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"after {DRAIN_TIMEOUT_S} s risk is behind on partitions (at, end): {behind}")
            await asyncio.sleep(0.3)
    finally:
        await connection.close()


def _answer(outcome: Outcome, item: Located) -> tuple[Any, Any]:
    letter = outcome.letters.get((outcome.topic, item.partition, item.offset))
    row = outcome.rows.get(item.hostile.payment_id) if item.hostile.payment_id else None
    return letter, row


def _problems(
    topic: str,
    located: list[Located],
    letters: dict[tuple[str, int, int], Any],
    rows: dict[str, Any],
    early: bool = False,
) -> list[tuple[Located, str]]:
    """The hostile records whose answer is wrong, and why; `early`: before later stages ended the payments."""
    found = []
    for item in located:
        letter = letters.get((topic, item.partition, item.offset))
        row = rows.get(item.hostile.payment_id) if item.hostile.payment_id else None
        problem = _problem(item, letter, row, early)
        if problem:
            found.append((item, f"@{item.partition}/{item.offset}: {problem}; raw {item.hostile.raw[:160]!r}"))
    return found


def _problem(item: Located, letter: Any, row: Any, early: bool = False) -> str | None:
    """What is wrong with a hostile record's answer, or None."""
    expect = item.expect
    assert not isinstance(expect, Judged)  # resolved when located
    seen = (
        f"letter={(letter['field'], letter['rule']) if letter else None}"
        f" row={(row['status'], list(row['risk_reasons']) + list(row['decline_reasons'])) if row else None}"
    )
    if isinstance(expect, Accept):
        if letter is not None or row is None or (row["status"] not in expect.statuses and not early):
            return f"expected a payment {'/'.join(sorted(expect.statuses))}, got {seen}"
        return None
    if row is not None:
        return f"refused records must not become payments, got {seen}"
    if letter is None or not (letter["field"] and letter["rule"] and letter["detail"]):
        return f"expected a dead letter with field, rule and detail, got {seen}"
    if letter["stage"] != "risk":
        return f"expected the risk stage to refuse it, got stage {letter['stage']}: {seen}"
    if isinstance(expect, Refuse) and (letter["field"], letter["rule"]) != (expect.field, expect.rule):
        return f"expected {expect.field!r} / {expect.rule}, got {seen} ({letter['detail'][:120]})"
    return None


def _summary(outcome: Outcome) -> str:
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for item in outcome.located:
        letter, row = _answer(outcome, item)
        answers[item.hostile.kind][f"{letter['rule']}" if letter else (row["status"] if row else "nothing")] += 1
    lines = [f"{sum(c.values()):3d}  {kind}: {dict(c)}" for kind, c in answers.items()]
    statuses = Counter(outcome.rows[g.payment.payment_id]["status"] for g in outcome.goods)
    poisoned = {name: stats.poisoned for name, stats in outcome.stats.items()}
    return "\n".join(
        [
            f"hostile records: {len(outcome.located)} of {len(answers)} kinds; good payments: {len(outcome.goods)}"
            f" {dict(statuses)}; run {outcome.seconds:.1f} s; poisoned per stage {poisoned}",
            *lines,
        ]
    )


# -- the run's claims ------------------------------------------------------------


async def test_every_hostile_record_has_exactly_one_answer(outcome: Outcome) -> None:
    print(_summary(outcome))  # shown with -s: what was drawn and what became of it
    assert not outcome.early, (
        f"once risk had consumed everything, {len(outcome.early)} hostile records were answered wrongly"
        " (the run stopped there):\n" + "\n".join(outcome.early[:EXAMPLES_SHOWN])
    )
    problems = [
        f"{item.hostile.kind} {problem}"
        for item, problem in _problems(outcome.topic, outcome.located, outcome.letters, outcome.rows)
    ]
    assert not problems, f"{len(problems)} hostile records answered wrongly:\n" + "\n".join(problems[:EXAMPLES_SHOWN])
    # And no dead letter for anything else (a good payment, another stage's input).
    hostile_origins = {(outcome.topic, item.partition, item.offset) for item in outcome.located}
    strays = [dict(row) for origin, row in outcome.letters.items() if origin not in hostile_origins]
    assert not strays, strays[:EXAMPLES_SHOWN]


async def test_every_good_payment_is_terminal_and_ordinary_ones_settle(outcome: Outcome) -> None:
    assert not outcome.early, "the run stopped once risk had answered hostile records wrongly (see the first test)"
    statuses = {g.payment.payment_id: outcome.rows.get(g.payment.payment_id) for g in outcome.goods}
    not_terminal = {p: row and row["status"] for p, row in statuses.items() if not row or row["status"] not in TERMINAL}
    assert not not_terminal, not_terminal
    unsettled = [
        (g.payment.payment_id, dict(outcome.rows[g.payment.payment_id]))
        for g in outcome.goods
        if g.kind == "ordinary" and outcome.rows[g.payment.payment_id]["status"] != "settled"
    ]
    assert not unsettled, unsettled[:EXAMPLES_SHOWN]
    assert "failed" not in {row["status"] for row in outcome.rows.values()}, "failed: a record was isolated as poison"
    lettered = [p for p, origin in outcome.good_origins.items() if (outcome.topic, *origin) in outcome.letters]
    assert not lettered, lettered


async def test_no_hold_is_open_reconcile_holds_and_no_stage_died_or_isolated_poison(outcome: Outcome) -> None:
    assert sorted(outcome.stats) == sorted(STAGE_NAMES)  # run_stages raised had any stage died
    poison = [dict(row) for row in outcome.letters.values() if row["rule"] == "stage_error"]
    assert {name: s.poisoned for name, s in outcome.stats.items()} == dict.fromkeys(STAGE_NAMES, 0), poison
    assert outcome.open_holds == 0
    assert outcome.holding_accounts == []
    assert outcome.report.ok, [str(v) for v in outcome.report.violations]


# -- known gaps: refused, but not with the documented field and rule ---------------


def _documented_mismatches(outcome: Outcome, kind: str) -> list[str]:
    mismatches = []
    items = [item for item in outcome.located if item.hostile.kind == kind]
    # Not AssertionError: the xfail below expects one only from the documented answer.
    if not items or not all(isinstance(item.expect, Deviation) for item in items):
        raise LookupError(f"no records of the kind {kind!r}, or not all of them deviations")
    for item in items:
        assert isinstance(item.expect, Deviation)
        letter, _ = _answer(outcome, item)
        documented = (item.expect.documented.field, item.expect.documented.rule)
        got = (letter["field"], letter["rule"]) if letter else None
        if got != documented:
            mismatches.append(f"documented {documented}, got {got}: {item.hostile.raw[-120:]!r}")
    return mismatches


async def test_a_lone_surrogate_is_refused_as_text_whatever_follows_it(outcome: Outcome) -> None:
    mismatches = _documented_mismatches(outcome, LONE_MASKED)
    assert not mismatches, "\n".join(mismatches)


async def test_an_unknown_field_is_named_as_sent_even_when_it_ends_like_a_path(outcome: Outcome) -> None:
    mismatches = _documented_mismatches(outcome, PATH_SUFFIX)
    assert not mismatches, "\n".join(mismatches)
