"""The declared topology is consistent, its drift check is right, and its docs are generated from it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from topology.apply import LiveTopic, diff_topic
from topology.graph import GRAPH, MONEY_STAGES, STAGES, Topology, problems, stage_spec
from topology.render import DOCS_PATH, GENERATED, generated_region, regenerate, render_mermaid, render_text
from topology.topics import (
    ACCOUNTS_OUTCOMES,
    DEAD_LETTER,
    PAYMENTS_CLEARED,
    PAYMENTS_OUTCOMES,
    PAYMENTS_REQUESTED,
    PROFILES,
    SETTLEMENTS_CLOSED,
    TOPICS,
    TopicSpec,
    topic_config,
    topic_spec,
)

LOCAL = PROFILES["local"]
PRODUCTION = PROFILES["production"]


# --- the declaration -----------------------------------------------------------------------------


def test_the_declared_graph_has_no_problems() -> None:
    assert problems(GRAPH) == []


def test_every_edge_names_a_declared_topic() -> None:
    declared = {t.name for t in TOPICS}
    for stage in STAGES:
        assert set(stage.consumes) <= declared, stage
        assert set(stage.produces) <= declared, stage


def test_every_topic_is_written_by_a_stage_and_read_by_one_except_dead_letters() -> None:
    produced = {t for s in STAGES for t in s.produces}
    consumed = {t for s in STAGES for t in s.consumes}
    for topic in TOPICS:
        assert topic.name in produced, topic.name
        assert topic.name in consumed or topic.name == DEAD_LETTER, topic.name


def test_each_payment_topic_has_exactly_one_writer() -> None:
    # Outcomes and dead letters are written by every stage, account outcomes by risk and funds
    # (a rejection and the applied request); every other topic by one node only.
    shared = {PAYMENTS_OUTCOMES, DEAD_LETTER}
    assert [s.name for s in STAGES if ACCOUNTS_OUTCOMES in s.produces] == ["risk", "funds"]
    shared.add(ACCOUNTS_OUTCOMES)
    for topic in TOPICS:
        writers = [s.name for s in STAGES if topic.name in s.produces]
        if topic.name not in shared:
            assert len(writers) == 1, (topic.name, writers)


def test_each_money_stage_reads_one_topic_keyed_by_what_it_owns() -> None:
    assert [s.name for s in MONEY_STAGES] == ["risk", "funds", "clearing", "settlement"]
    for stage in MONEY_STAGES:
        assert len(stage.consumes) == 1
        assert topic_spec(stage.consumes[0]).key == stage.key_owner
        assert PAYMENTS_OUTCOMES in stage.produces
        assert DEAD_LETTER in stage.produces


def test_declared_values_match_the_design() -> None:
    assert [(t.name, t.partitions, t.key, t.retention_ms // 86_400_000) for t in TOPICS] == [
        ("payments.requested", 8, "payer_account", 7),
        ("payments.approved", 8, "payer_account", 7),
        ("funds.held", 8, "payer_account", 7),
        ("payments.cleared", 8, "merchant_id", 7),
        ("payments.outcomes", 8, "payment_id", 30),
        ("accounts.outcomes", 8, "account_id", 30),
        ("settlements.closed", 4, "merchant_id", 90),
        ("paystream.dead-letter", 2, "stage", 30),
    ]
    assert stage_spec("downstream").consumes == (PAYMENTS_OUTCOMES, ACCOUNTS_OUTCOMES, SETTLEMENTS_CLOSED)
    assert stage_spec("upstream").produces == (PAYMENTS_REQUESTED,)


def test_payment_requests_are_stamped_by_the_broker_and_the_rest_by_their_producer() -> None:
    # The event-time window is measured from the record's timestamp: the broker's append time.
    assert {t.name: t.timestamp_type for t in TOPICS} == {
        "payments.requested": "LogAppendTime",
        "payments.approved": "CreateTime",
        "funds.held": "CreateTime",
        "payments.cleared": "CreateTime",
        "payments.outcomes": "CreateTime",
        "accounts.outcomes": "CreateTime",
        "settlements.closed": "CreateTime",
        "paystream.dead-letter": "CreateTime",
    }
    assert topic_config(topic_spec(PAYMENTS_CLEARED), LOCAL)["message.timestamp.type"] == "CreateTime"
    with pytest.raises(AssertionError, match=r"^TopicSpec\(name='ok', .*timestamp_type='AppendTime'\)$"):
        TopicSpec("ok", 1, "k", "v", 1, "delete", "d", timestamp_type="AppendTime")  # type: ignore[arg-type]


def test_lookups_name_what_exists_when_the_name_is_unknown() -> None:
    with pytest.raises(KeyError, match=r"payments\.requested"):
        topic_spec("payments.nope")
    with pytest.raises(KeyError, match="settlement"):
        stage_spec("nope")


def test_problems_catches_a_broken_graph() -> None:
    funds = stage_spec("funds")
    broken_funds = dataclasses.replace(funds, consumes=(PAYMENTS_CLEARED,), produces=(funds.produces[0], "nowhere"))
    stages = tuple(broken_funds if s is funds else s for s in STAGES)
    found = problems(Topology(TOPICS, stages))
    assert "stage 'funds' uses undeclared topic 'nowhere'" in found
    assert "stage 'funds' owns 'payer_account' but reads 'payments.cleared' keyed by 'merchant_id'" in found
    assert "stage 'funds' does not write 'payments.outcomes'" in found
    assert "topic 'payments.approved' is read by no stage" in found


def _failed_check(raised: pytest.ExceptionInfo[AssertionError]) -> str:
    """The source of the `assert` statement that raised: which check refused, not only that one did."""
    return str(raised.traceback[-1].statement).strip()


def test_a_bad_declaration_fails_at_construction() -> None:
    TopicSpec("ok", 1, "k", "v", 1, "delete", "d")  # the control: each case below changes one field
    with pytest.raises(AssertionError, match=r"^bad name!$") as raised:
        TopicSpec("bad name!", 1, "k", "v", 1, "delete", "d")
    assert _failed_check(raised) == "assert _LEGAL_NAME.fullmatch(self.name), self.name"
    with pytest.raises(AssertionError, match=r"^TopicSpec\(name='ok', partitions=0,") as raised:
        TopicSpec("ok", 0, "k", "v", 1, "delete", "d")
    assert _failed_check(raised) == "assert self.partitions >= 1, self"


def test_profiles_keep_min_isr_at_or_below_replication() -> None:
    assert (LOCAL.replication_factor, LOCAL.min_insync_replicas) == (1, 1)
    assert (PRODUCTION.replication_factor, PRODUCTION.min_insync_replicas) == (3, 2)
    spec = topic_spec(PAYMENTS_REQUESTED)
    assert topic_config(spec, PRODUCTION) == {
        "retention.ms": "604800000",
        "cleanup.policy": "delete",
        "min.insync.replicas": "2",
        "max.message.bytes": "1048576",
        "message.timestamp.type": "LogAppendTime",
    }


# --- comparing with a live topic -------------------------------------------------------------------


def _live(spec: TopicSpec, **changes: object) -> LiveTopic:
    matching = LiveTopic("ns." + spec.name, True, spec.partitions, 1, topic_config(spec, LOCAL))
    return dataclasses.replace(matching, **changes)  # type: ignore[arg-type]


def test_a_matching_topic_has_no_drift() -> None:
    spec = topic_spec(PAYMENTS_CLEARED)
    assert diff_topic(spec, _live(spec), LOCAL) == ()


def test_too_few_partitions_is_fixable_too_many_is_not() -> None:
    spec = topic_spec(PAYMENTS_CLEARED)
    (fewer,) = diff_topic(spec, _live(spec, partitions=2), LOCAL)
    (more,) = diff_topic(spec, _live(spec, partitions=12), LOCAL)
    assert (fewer.field, fewer.expected, fewer.actual, fewer.fixable) == ("partitions", "8", "2", True)
    assert (more.field, more.expected, more.actual, more.fixable) == ("partitions", "8", "12", False)
    assert str(more) == "partitions: expected 8, found 12 (Kafka cannot remove partitions)"


def test_replication_and_configs_are_compared_with_the_profile() -> None:
    spec = topic_spec(PAYMENTS_CLEARED)
    configs = {**topic_config(spec, LOCAL), "max.message.bytes": "1048588"}
    configs.pop("retention.ms")
    drift = diff_topic(spec, _live(spec, configs=configs), PRODUCTION)
    assert [(d.field, d.expected, d.actual, d.fixable) for d in drift] == [
        ("replication", "3", "1", False),
        ("retention.ms", "604800000", "(unset)", True),
        ("min.insync.replicas", "2", "1", False),  # never above the replica count
        ("max.message.bytes", "1048576", "1048588", True),
    ]


def test_a_topic_stamped_by_the_producer_where_the_broker_should_is_fixable_drift() -> None:
    spec = topic_spec(PAYMENTS_REQUESTED)
    configs = {**topic_config(spec, LOCAL), "message.timestamp.type": "CreateTime"}
    (drift,) = diff_topic(spec, _live(spec, configs=configs), LOCAL)
    assert (drift.field, drift.expected, drift.actual, drift.fixable) == (
        "message.timestamp.type",
        "LogAppendTime",
        "CreateTime",
        True,
    )
    assert str(drift) == "message.timestamp.type: expected LogAppendTime, found CreateTime"


def test_min_isr_above_the_replica_count_is_never_fixed() -> None:
    # Setting it would make the broker refuse every acks=all write to the topic.
    spec = topic_spec(PAYMENTS_CLEARED)
    drift = diff_topic(spec, _live(spec, replication_factor=1), PRODUCTION)
    assert [(d.field, d.fixable) for d in drift] == [("replication", False), ("min.insync.replicas", False)]
    three_replicas = diff_topic(spec, _live(spec, replication_factor=3), PRODUCTION)
    assert [(d.field, d.fixable) for d in three_replicas] == [("min.insync.replicas", True)]


def test_a_missing_topic_is_one_unfixable_drift() -> None:
    spec = topic_spec(PAYMENTS_CLEARED)
    (missing,) = diff_topic(spec, LiveTopic("ns.payments.cleared", exists=False), LOCAL)
    assert (missing.field, missing.fixable) == ("exists", False)


# --- drawings and docs -----------------------------------------------------------------------------


def _node(topic: str) -> str:
    return "t_" + re.sub(r"[^a-zA-Z0-9_]", "_", topic)


def test_mermaid_has_every_edge_and_node() -> None:
    diagram = render_mermaid()
    assert diagram.startswith("flowchart LR\n")
    edges = set(re.findall(r"^\s+(\S+) --> (\S+)$", diagram, re.MULTILINE))
    expected = {(_node(t), s.name) for s in STAGES for t in s.consumes}
    expected |= {(s.name, _node(t)) for s in STAGES for t in s.produces}
    assert edges == expected
    for topic in TOPICS:
        assert f'{_node(topic.name)}(["{topic.name}<br/>key: {topic.key}"])' in diagram


def test_text_lists_every_topic_and_stage() -> None:
    text = render_text()
    for topic in TOPICS:
        assert re.search(rf"{re.escape(topic.name)}\s+{topic.partitions} partitions\s+key={topic.key}\s", text)
    assert "  settlement  payments.cleared" in text
    assert "-> settlements.closed, payments.outcomes, paystream.dead-letter" in text


def test_docs_diagram_is_the_generated_one() -> None:
    text = DOCS_PATH.read_text(encoding="utf-8")
    block = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block.strip() == render_mermaid().strip(), "run: paystream topology docs"


def test_every_generated_region_of_the_docs_is_up_to_date() -> None:
    text = DOCS_PATH.read_text(encoding="utf-8")
    for name in GENERATED:
        assert generated_region(text, name) is not None, f"docs/topology.md lost its {name} markers"
    assert regenerate(text) == text, "docs/topology.md is out of date: run `paystream topology docs`"


def test_regenerate_replaces_only_the_marked_regions() -> None:
    text = "".join(f"before {n}\n<!-- generated:{n} -->\nstale\n<!-- /generated:{n} -->\n" for n in GENERATED)
    fresh = regenerate(text)
    assert "stale" not in fresh
    assert all(f"before {n}\n" in fresh for n in GENERATED)
    assert regenerate(fresh) == fresh
