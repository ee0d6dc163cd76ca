"""The faust app behind `paystream views`: topics, tables, agents and web pages.

The flow (every topic and table name starts with the namespace, docs/views.md):

1. `decode` reads payments.outcomes (key payment id) as raw bytes and decodes
   each record with paystream's own strict decoder (payment.outcome v1 and v2,
   payment.refunded). A record that fails is counted under `skipped` in the
   platform view, by rule, and logged once per rule; it never stops the app.
2. It forwards the outcome's `Fact` twice: keyed by merchant (so one worker
   owns each merchant's windows) and under the one platform key.
3. `count_merchant` and `count_platform` add each fact to a tumbling-minute and
   a hopping-hour table, windowed on the fact's event time (`at_s`, the
   outcome's `occurred_at`), never on the record's timestamp.
4. The web pages answer from the tables; faust's table routing sends a request
   to the worker that owns the key (`app.table_route`), so every worker
   answers for every merchant.

Tables live in memory (faust's rocksdb is not installed); a worker that starts
rebuilds its partitions from the changelog topics before it answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import msgspec
import structlog

from paystream.settings import Settings
from paystream.views.aggregate import Fact, add_fact, fact_of
from paystream.views.pages import PLATFORM_KEY, add_pages
from paystream.views.windows import (
    EVENT_AGE_S_MAX,
    HOUR_KEEP_S,
    HOUR_S,
    HOUR_STEP_S,
    MINUTE_KEEP_S,
    MINUTE_S,
)
from schemas.codec import Decoder, Invalid
from schemas.payments import PaymentOutcome
from schemas.refunds import PaymentRefunded
from schemas.retired import PaymentOutcomeV1
from topology.topics import PAYMENTS_OUTCOMES, VIEWS_APP, topic_spec

log = structlog.get_logger("paystream.views")

# Platform totals are kept under one key (PLATFORM_KEY), so one worker owns them
# and a request for them is routed like a merchant's. One partition: the key needs no more.
PLATFORM_PARTITIONS = 1
# The merchant-keyed topic and tables have as many partitions as payments.outcomes:
# faust assigns equal partition numbers of co-partitioned topics to one worker,
# so up to that many workers share the reading, re-keying and counting.
MERCHANT_PARTITIONS = topic_spec(PAYMENTS_OUTCOMES).partitions
# How often faust drops windows past their `expires` from memory.
TABLE_CLEANUP_S = 30.0
OUTCOME_TYPES = (PaymentOutcome, PaymentRefunded, PaymentOutcomeV1)
# Table writes wait in faust's producer buffer; past this many, processing
# waits for it to drain (and faust logs "producer buffer full"). faust's 100 is
# under what a handful of outcomes write: each updates 7 windows in each of two tables.
PRODUCER_BUFFER_MESSAGES_MAX = 2_000


class PlatformItem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A value of the platform topic: one outcome's fact, or the rule a skipped record broke."""

    fact: Fact | None = None
    skipped: str | None = None


def app_id(settings: Settings) -> str:
    """The faust app id, which is also its consumer group and the prefix of its topics."""
    return settings.topic(VIEWS_APP)


def advertised_url(host: str, port: int) -> str:
    """The URL other views workers forward requests to: the bound address, or this machine's name when bound to all."""
    if host in ("0.0.0.0", "::"):  # a wildcard is where it listens, not an address another worker can reach
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def state_dir(settings: Settings) -> Path:
    """faust's data directory: per namespace, so runs (tests) never share one."""
    return settings.stack_dir / "views" / (settings.namespace.rstrip(".") or "default")


@dataclass(frozen=True, slots=True)
class ViewsApp:
    """The app and what the command and tests need of it."""

    app: faust.App
    merchant_minutes: Any  # faust's windowed table wrappers are untyped
    merchant_hours: Any
    platform_minutes: Any
    platform_hours: Any
    platform_skipped: Any


class Refusals:
    """What `decode` does not count: logged once per kind, so a flood is one line, never a crash.

    A record the decoder refuses is also counted under `skipped` (by rule) in
    the platform view; an outcome older than every window kept only here.
    """

    def __init__(self) -> None:
        self.logged: set[str] = set()
        self.too_old = 0

    def skip(self, invalid: Invalid, partition: int, offset: int) -> str:
        if invalid.rule not in self.logged:
            self.logged.add(invalid.rule)
            log.warning(
                "views skip a record they cannot decode (logged once per rule)",
                rule=invalid.rule,
                field=invalid.field,
                detail=invalid.detail,
                partition=partition,
                offset=offset,
            )
        return invalid.rule

    def old(self, fact: Fact, now_s: float) -> bool:
        """True (and logged the first time) when `fact` is older than every window the views keep."""
        if fact.at_s >= now_s - EVENT_AGE_S_MAX:
            return False
        self.too_old += 1
        if self.too_old == 1:
            log.info("views do not count outcomes older than their windows", age_s_max=EVENT_AGE_S_MAX)
        return True


def build_app(settings: Settings, port: int, replication_factor: int) -> ViewsApp:
    """The views app for `settings`' namespace, serving on `settings.views_host:port`."""
    name = app_id(settings)
    app = faust.App(
        name,
        broker=[f"kafka://{address}" for address in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(state_dir(settings)),
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.views_host,
        web_port=port,
        canonical_url=advertised_url(settings.views_host, port),
        key_serializer="json",
        value_serializer="json",
        topic_partitions=MERCHANT_PARTITIONS,
        topic_replication_factor=replication_factor,
        # A new views group reads what the outcomes topic retains; decode drops
        # what is older than any window kept (EVENT_AGE_S_MAX).
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        table_cleanup_interval=TABLE_CLEANUP_S,
    )
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES_MAX
    source = app.topic(settings.topic(PAYMENTS_OUTCOMES), key_serializer="raw", value_serializer="raw")
    by_merchant = app.topic(
        f"{name}-outcomes-by-merchant",
        partitions=MERCHANT_PARTITIONS,
        replicas=replication_factor,
        internal=True,
        retention=HOUR_S + HOUR_KEEP_S,
        key_serializer="json",
        value_serializer="json",
    )
    platform = app.topic(
        f"{name}-outcomes-platform",
        partitions=PLATFORM_PARTITIONS,
        replicas=replication_factor,
        internal=True,
        retention=HOUR_S + HOUR_KEEP_S,
        key_serializer="json",
        value_serializer="json",
    )
    tables = _tables(app)
    _agents(app, tables, source, by_merchant, platform)
    add_pages(
        app,
        (tables.merchant_minutes, tables.merchant_hours),
        (tables.platform_minutes, tables.platform_hours),
        tables.platform_skipped,
    )
    return tables


def _tables(app: faust.App) -> ViewsApp:
    def windowed(table_name: str, partitions: int, at: Callable[[Any], float]) -> tuple[Any, Any]:
        # Keys and values are JSON (the app's serializers): a windowed key is
        # written as [key, [start, end]].
        options: dict[str, Any] = {"default": dict, "partitions": partitions}
        # `relative_to` (a callable giving each event's time) is on faust's WindowWrapper, not on its type.
        minutes: Any = app.Table(f"{table_name}-minutes", **options).tumbling(MINUTE_S, expires=MINUTE_KEEP_S)
        hours: Any = app.Table(f"{table_name}-hours", **options).hopping(HOUR_S, HOUR_STEP_S, expires=HOUR_KEEP_S)
        return minutes.relative_to(at), hours.relative_to(at)

    merchant_minutes, merchant_hours = windowed("merchant", MERCHANT_PARTITIONS, _merchant_time)
    platform_minutes, platform_hours = windowed("platform", PLATFORM_PARTITIONS, _platform_time)
    skipped = app.Table("platform-skipped", default=dict, partitions=PLATFORM_PARTITIONS)
    return ViewsApp(app, merchant_minutes, merchant_hours, platform_minutes, platform_hours, skipped)


def _merchant_time(event: Any) -> float:
    """Event time of a by-merchant record: the outcome's occurred_at, carried in the fact."""
    return float(event.value["at_s"])


def _platform_time(event: Any) -> float:
    """The same for a platform record; only facts update windows (a skipped record, the skipped table)."""
    return float(event.value["fact"]["at_s"])


def _agents(app: faust.App, views: ViewsApp, source: Any, by_merchant: Any, platform: Any) -> None:
    decoder: Decoder[Any] = Decoder(OUTCOME_TYPES)
    refusals = Refusals()

    @app.agent(source, name="decode")
    async def decode(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            decoded = decoder.decode(event.value)
            if isinstance(decoded, Invalid):
                rule = refusals.skip(decoded, message.partition, message.offset)
                await platform.send(key=PLATFORM_KEY, value=msgspec.to_builtins(PlatformItem(skipped=rule)))
                continue
            fact = fact_of(decoded)
            if refusals.old(fact, time.time()):
                continue
            await by_merchant.send(key=fact.merchant_id, value=msgspec.to_builtins(fact))
            await platform.send(key=PLATFORM_KEY, value=msgspec.to_builtins(PlatformItem(fact=fact)))

    @app.agent(by_merchant, name="count-merchant")
    async def count_merchant(stream: Any) -> None:
        async for value in stream:
            fact = msgspec.convert(value, Fact)
            views.merchant_minutes[fact.merchant_id].apply(add_fact, fact)
            views.merchant_hours[fact.merchant_id].apply(add_fact, fact)

    @app.agent(platform, name="count-platform")
    async def count_platform(stream: Any) -> None:
        async for value in stream:
            item = msgspec.convert(value, PlatformItem)
            if item.skipped is not None:
                current = dict(views.platform_skipped[PLATFORM_KEY])
                current[item.skipped] = current.get(item.skipped, 0) + 1
                views.platform_skipped[PLATFORM_KEY] = current
            elif item.fact is not None:
                views.platform_minutes[PLATFORM_KEY].apply(add_fact, item.fact)
                views.platform_hours[PLATFORM_KEY].apply(add_fact, item.fact)
