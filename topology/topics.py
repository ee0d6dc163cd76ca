"""Every topic paystream uses, declared once: partitions, key, value schema, retention.

Replication and min.insync.replicas come from a profile (`local` or
`production`), so the same declaration serves the one-broker stack and a
cluster. Other modules import the name constants, never a string literal, so a
renamed topic is one edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

DAY_MS = 86_400_000

PAYMENTS_REQUESTED = "payments.requested"
PAYMENTS_APPROVED = "payments.approved"
FUNDS_HELD = "funds.held"
PAYMENTS_CLEARED = "payments.cleared"
PAYMENTS_OUTCOMES = "payments.outcomes"
ACCOUNTS_OUTCOMES = "accounts.outcomes"
SETTLEMENTS_CLOSED = "settlements.closed"
DEAD_LETTER = "paystream.dead-letter"

# Live views (`paystream views`, docs/views.md): a faust app whose id is VIEWS_APP,
# namespaced like every topic, so each topic faust makes for it is named
# `<namespace>paystream.views-<suffix>`. faust creates them with its own configs
# (changelogs compacted and kept as long as their windows), so they are declared
# by name here, not in TOPICS: `paystream topology apply` neither creates nor
# checks them. tests/unit/test_views_app.py checks the app makes exactly these.
VIEWS_APP = "paystream.views"
VIEWS_TOPIC_SUFFIXES = (
    "outcomes-by-merchant",  # repartition of payments.outcomes, key merchant_id
    "outcomes-platform",  # the same facts under one key, for platform totals
    "merchant-minutes-changelog",
    "merchant-hours-changelog",
    "platform-minutes-changelog",
    "platform-hours-changelog",
    "platform-skipped-changelog",
    "__assignor-__leader",  # faust's leader election among the views workers
)
VIEWS_TOPICS = tuple(f"{VIEWS_APP}-{suffix}" for suffix in VIEWS_TOPIC_SUFFIXES)

# Kafka's own rule for topic names; checked here so a bad name fails at import, not at apply.
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
# Kafka's `message.timestamp.type`: the producer's clock (CreateTime) or the
# broker's, set when it appends the record (LogAppendTime).
TimestampType = Literal["CreateTime", "LogAppendTime"]
TIMESTAMP_TYPES: tuple[str, ...] = get_args(TimestampType)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as paystream needs it; `key` names what the record key holds.

    `timestamp_type` is what a record's timestamp means: LogAppendTime where a
    stage judges records by it (the event-time window on payments.requested),
    so no producer's clock can move a record in or out of the window.
    """

    name: str
    partitions: int
    key: str
    value_schema: str
    retention_ms: int
    cleanup_policy: str
    description: str
    max_message_bytes: int = 1_048_576
    timestamp_type: TimestampType = "CreateTime"

    def __post_init__(self) -> None:
        # Programmer errors in the declaration: crash at import.
        assert _LEGAL_NAME.fullmatch(self.name), self.name
        assert self.partitions >= 1, self
        assert self.retention_ms > 0, self
        assert self.cleanup_policy in CLEANUP_POLICIES, self
        assert self.timestamp_type in TIMESTAMP_TYPES, self
        assert self.key and self.value_schema, self


@dataclass(frozen=True, slots=True)
class TopologyProfile:
    """Durability settings that depend on the cluster, not on the topic."""

    name: str
    replication_factor: int
    min_insync_replicas: int

    def __post_init__(self) -> None:
        # min ISR above the replication factor would refuse every acks=all write.
        assert 1 <= self.min_insync_replicas <= self.replication_factor, self


PROFILES: dict[str, TopologyProfile] = {
    "local": TopologyProfile("local", replication_factor=1, min_insync_replicas=1),
    # Survives the loss of one broker without refusing writes or losing acknowledged ones.
    "production": TopologyProfile("production", replication_factor=3, min_insync_replicas=2),
}
DEFAULT_PROFILE = PROFILES["local"]

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=PAYMENTS_REQUESTED,
        partitions=8,
        key="payer_account",
        # One payer-keyed topic for everything that touches a payer's account, so
        # an account's deposits, withdrawals and payments keep their order (§13).
        value_schema="payment.requested | account.open.requested | account.close.requested"
        " | deposit.requested | withdrawal.requested",
        retention_ms=7 * DAY_MS,
        cleanup_policy="delete",
        description="payment and account requests from upstream systems (key: the payer's account)",
        # The risk stage's event-time window is measured from the append time.
        timestamp_type="LogAppendTime",
    ),
    TopicSpec(
        name=PAYMENTS_APPROVED,
        partitions=8,
        key="payer_account",
        value_schema="risk.assessed | account.request.approved",
        retention_ms=7 * DAY_MS,
        cleanup_policy="delete",
        description="payments and account requests the risk stage approved",
    ),
    TopicSpec(
        name=FUNDS_HELD,
        partitions=8,
        key="payer_account",
        value_schema="funds.held",
        retention_ms=7 * DAY_MS,
        cleanup_policy="delete",
        description="payments whose amount is held on the payer's account",
    ),
    TopicSpec(
        name=PAYMENTS_CLEARED,
        partitions=8,
        key="merchant_id",
        value_schema="payment.cleared",
        retention_ms=7 * DAY_MS,
        cleanup_policy="delete",
        description="captured payments with their fee split, for settlement",
    ),
    TopicSpec(
        name=PAYMENTS_OUTCOMES,
        partitions=8,
        key="payment_id",
        value_schema="payment.outcome",
        retention_ms=30 * DAY_MS,
        cleanup_policy="delete",
        description="terminal and customer-visible statuses, for downstream systems",
    ),
    TopicSpec(
        name=ACCOUNTS_OUTCOMES,
        partitions=8,
        key="account_id",
        value_schema="account.outcome",
        retention_ms=30 * DAY_MS,
        cleanup_policy="delete",
        description="the answer to each account request (open, close, deposit, withdrawal), for downstream",
    ),
    TopicSpec(
        name=SETTLEMENTS_CLOSED,
        partitions=4,
        key="merchant_id",
        value_schema="settlement.batch_closed",
        retention_ms=90 * DAY_MS,
        cleanup_policy="delete",
        description="closed settlement batches with fixed totals; downstream keys its own state on batch_id",
    ),
    TopicSpec(
        name=DEAD_LETTER,
        partitions=2,
        key="stage",
        value_schema="dead_letter",
        retention_ms=30 * DAY_MS,
        cleanup_policy="delete",
        description="records a stage could not use, with the reason and their origin",
    ),
)


def topic_spec(name: str) -> TopicSpec:
    """The declaration of one topic; an unknown name is a programmer error and says what exists."""
    for spec in TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic {name!r} is declared; topics: {', '.join(t.name for t in TOPICS)}")


def topic_config(spec: TopicSpec, profile: TopologyProfile) -> dict[str, str]:
    """The broker-side configs paystream sets on (and verifies for) each topic.

    All are set explicitly, even where they equal Kafka's default, so a broker
    with other defaults cannot change how long payments are kept.
    """
    return {
        "retention.ms": str(spec.retention_ms),
        "cleanup.policy": spec.cleanup_policy,
        "min.insync.replicas": str(profile.min_insync_replicas),
        "max.message.bytes": str(spec.max_message_bytes),
        "message.timestamp.type": spec.timestamp_type,
    }
