"""The stage graph: who reads which topic and who writes which, declared once.

Diagrams and docs are drawn from this declaration (`topology.render`), and
`problems()` checks it is consistent with the topic declarations, so the graph
a reader sees is the graph the workers run.
"""

from __future__ import annotations

from dataclasses import dataclass

from topology.topics import (
    ACCOUNTS_OUTCOMES,
    DEAD_LETTER,
    FUNDS_HELD,
    PAYMENTS_APPROVED,
    PAYMENTS_CLEARED,
    PAYMENTS_OUTCOMES,
    PAYMENTS_REQUESTED,
    SETTLEMENTS_CLOSED,
    TOPICS,
    TopicSpec,
)


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One node of the graph.

    `consumes` is a tuple because the external `downstream` node reads
    several topics; every money stage reads exactly one. `key_owner` is the record key
    whose rows this stage alone writes (its input topic's key), empty for
    external systems.
    """

    name: str
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    key_owner: str
    description: str
    external: bool = False


@dataclass(frozen=True, slots=True)
class Topology:
    """Topics and stages together: what the renderers and checks take."""

    topics: tuple[TopicSpec, ...]
    stages: tuple[StageSpec, ...]


_OUTPUTS_OF_EVERY_STAGE = (PAYMENTS_OUTCOMES, DEAD_LETTER)

STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="upstream",
        consumes=(),
        produces=(PAYMENTS_REQUESTED,),
        key_owner="",
        description="systems that request payments and open, fund and pay out accounts",
        external=True,
    ),
    StageSpec(
        name="risk",
        consumes=(PAYMENTS_REQUESTED,),
        produces=(PAYMENTS_APPROVED, ACCOUNTS_OUTCOMES, *_OUTPUTS_OF_EVERY_STAGE),
        key_owner="payer_account",
        description="limits, velocity, blocklists: approve or reject payments and withdrawals",
    ),
    StageSpec(
        name="funds",
        consumes=(PAYMENTS_APPROVED,),
        produces=(FUNDS_HELD, ACCOUNTS_OUTCOMES, *_OUTPUTS_OF_EVERY_STAGE),
        key_owner="payer_account",
        description="hold the amount on the payer's account or decline; open, fund, pay out and close accounts",
    ),
    StageSpec(
        name="clearing",
        consumes=(FUNDS_HELD,),
        produces=(PAYMENTS_CLEARED, *_OUTPUTS_OF_EVERY_STAGE),
        key_owner="payer_account",
        description="capture the hold, compute the fee, post the journal",
    ),
    StageSpec(
        name="settlement",
        consumes=(PAYMENTS_CLEARED,),
        produces=(SETTLEMENTS_CLOSED, *_OUTPUTS_OF_EVERY_STAGE),
        key_owner="merchant_id",
        description="batch per merchant, currency and cycle; close at the cut-off",
    ),
    StageSpec(
        name="downstream",
        consumes=(PAYMENTS_OUTCOMES, ACCOUNTS_OUTCOMES, SETTLEMENTS_CLOSED),
        produces=(),
        key_owner="",
        description="systems that act on outcomes and settlements",
        external=True,
    ),
)

GRAPH = Topology(topics=TOPICS, stages=STAGES)
MONEY_STAGES: tuple[StageSpec, ...] = tuple(s for s in STAGES if not s.external)

# Topics nobody inside the graph has to read: dead letters are kept in PostgreSQL
# (`paystream dead-letters list`) and the topic is there for operators' own alerting.
READERLESS_TOPICS = frozenset({DEAD_LETTER})


def stage_spec(name: str) -> StageSpec:
    """The declaration of one stage; an unknown name is a programmer error and says what exists."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def problems(graph: Topology) -> list[str]:
    """Every inconsistency in a graph, as sentences; empty when it is sound."""
    found: list[str] = []
    topics = {t.name: t for t in graph.topics}
    names = [t.name for t in graph.topics] + [s.name for s in graph.stages]
    found += [f"name {n!r} is declared twice" for n in sorted(set(names)) if names.count(n) > 1]
    for stage in graph.stages:
        found += _stage_problems(stage, topics)
    produced = {t for s in graph.stages for t in s.produces}
    consumed = {t for s in graph.stages for t in s.consumes}
    found += [f"topic {t!r} is written by no stage" for t in topics if t not in produced]
    found += [f"topic {t!r} is read by no stage" for t in topics if t not in consumed | READERLESS_TOPICS]
    return found


def _stage_problems(stage: StageSpec, topics: dict[str, TopicSpec]) -> list[str]:
    found = [
        f"stage {stage.name!r} uses undeclared topic {t!r}" for t in stage.consumes + stage.produces if t not in topics
    ]
    if stage.external:
        return found
    if len(stage.consumes) != 1:
        found.append(f"stage {stage.name!r} must read exactly one topic, reads {len(stage.consumes)}")
    for topic in stage.consumes:
        # One writer per key: the stage's rows are keyed like its input, so one partition owner writes them.
        if topic in topics and topics[topic].key != stage.key_owner:
            found.append(
                f"stage {stage.name!r} owns {stage.key_owner!r} but reads {topic!r} keyed by {topics[topic].key!r}"
            )
    found += [f"stage {stage.name!r} does not write {t!r}" for t in _OUTPUTS_OF_EVERY_STAGE if t not in stage.produces]
    return found
