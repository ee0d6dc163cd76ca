"""The declared topology is consistent, and its docs are generated from it."""

from __future__ import annotations

import re
from pathlib import Path

from topology.graph import MONEY_STAGES, STAGES, render_mermaid
from topology.topics import DEAD_LETTER, PAYMENTS_OUTCOMES, PROFILES, TOPICS, topic_config, topic_spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "topology.md"


def test_every_edge_names_a_declared_topic() -> None:
    declared = {t.name for t in TOPICS}
    for stage in STAGES:
        assert set(stage.consumes) <= declared, stage
        assert set(stage.produces) <= declared, stage


def test_every_topic_is_written_and_read() -> None:
    produced = {t for s in STAGES for t in s.produces}
    consumed = {t for s in STAGES for t in s.consumes}
    for topic in TOPICS:
        assert topic.name in produced, topic.name
        assert topic.name in consumed or topic.name == DEAD_LETTER, topic.name


def test_each_money_stage_reads_one_topic_and_reports_outcomes_and_dead_letters() -> None:
    for stage in MONEY_STAGES:
        assert len(stage.consumes) == 1
        assert PAYMENTS_OUTCOMES in stage.produces
        assert DEAD_LETTER in stage.produces


def test_profiles_set_min_isr_below_replication() -> None:
    for profile in PROFILES.values():
        assert 1 <= profile.min_insync_replicas <= profile.replication_factor
    assert topic_config(topic_spec("payments.requested"), PROFILES["production"])["min.insync.replicas"] == "2"


def test_mermaid_has_every_edge() -> None:
    diagram = render_mermaid()
    for stage in STAGES:
        for topic in stage.consumes:
            assert re.search(rf"{topic.replace('.', '_').replace('-', '_')} --> {stage.name}\b", diagram)


def test_docs_diagram_is_generated_from_the_declaration() -> None:
    text = DOCS.read_text()
    block = text.split("```mermaid\n", 1)[1].split("```", 1)[0].strip()
    assert block == render_mermaid().strip()
