"""Every topic paystream uses, declared once: partitions, key, value schema, retention.

Replication and min.insync.replicas come from a profile (`local` or
`production`), so the same declaration serves the one-broker stack and a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000

PAYMENTS_REQUESTED = "payments.requested"
PAYMENTS_APPROVED = "payments.approved"
FUNDS_HELD = "funds.held"
PAYMENTS_CLEARED = "payments.cleared"
PAYMENTS_OUTCOMES = "payments.outcomes"
SETTLEMENTS_CLOSED = "settlements.closed"
DEAD_LETTER = "paystream.dead-letter"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    value_schema: str
    retention_ms: int
    description: str
    cleanup_policy: str = "delete"
    max_message_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class TopologyProfile:
    name: str
    replication_factor: int
    min_insync_replicas: int


PROFILES = {
    "local": TopologyProfile("local", replication_factor=1, min_insync_replicas=1),
    "production": TopologyProfile("production", replication_factor=3, min_insync_replicas=2),
}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(PAYMENTS_REQUESTED, 8, "payer_account", "payment.requested", 7 * DAY_MS,
              "payment requests from upstream systems"),
    TopicSpec(PAYMENTS_APPROVED, 8, "payer_account", "risk.assessed", 7 * DAY_MS,
              "payments the risk stage approved"),
    TopicSpec(FUNDS_HELD, 8, "payer_account", "funds.held", 7 * DAY_MS,
              "payments whose amount is held on the payer's account"),
    TopicSpec(PAYMENTS_CLEARED, 8, "merchant_id", "payment.cleared", 7 * DAY_MS,
              "captured payments with their fee split, for settlement"),
    TopicSpec(PAYMENTS_OUTCOMES, 8, "payment_id", "payment.outcome", 30 * DAY_MS,
              "terminal and customer-visible statuses, for downstream systems"),
    TopicSpec(SETTLEMENTS_CLOSED, 4, "merchant_id", "settlement.batch_closed", 90 * DAY_MS,
              "closed settlement batches with fixed totals, for payouts"),
    TopicSpec(DEAD_LETTER, 2, "stage", "dead_letter", 30 * DAY_MS,
              "records a stage could not use, with the reason and origin"),
)  # fmt: skip


def topic_spec(name: str) -> TopicSpec:
    for spec in TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic {name!r} is declared; topics: {', '.join(t.name for t in TOPICS)}")


def topic_config(spec: TopicSpec, profile: TopologyProfile) -> dict[str, str]:
    """The broker-side configs paystream sets on (and verifies for) each topic."""
    return {
        "retention.ms": str(spec.retention_ms),
        "cleanup.policy": spec.cleanup_policy,
        "min.insync.replicas": str(profile.min_insync_replicas),
        "max.message.bytes": str(spec.max_message_bytes),
        "message.timestamp.type": "CreateTime",
    }
