"""The stage graph: who reads which topic and writes which, declared once; diagrams drawn from it."""

from __future__ import annotations

from dataclasses import dataclass

from topology.topics import (
    DEAD_LETTER,
    FUNDS_HELD,
    PAYMENTS_APPROVED,
    PAYMENTS_CLEARED,
    PAYMENTS_OUTCOMES,
    PAYMENTS_REQUESTED,
    SETTLEMENTS_CLOSED,
    TOPICS,
)


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    key_owner: str
    description: str


STAGES: tuple[StageSpec, ...] = (
    StageSpec("upstream", (), (PAYMENTS_REQUESTED,), "-", "systems that request payments"),
    StageSpec("risk", (PAYMENTS_REQUESTED,), (PAYMENTS_APPROVED, PAYMENTS_OUTCOMES, DEAD_LETTER), "payer",
              "limits, velocity, blocklists: approve or reject"),
    StageSpec("funds", (PAYMENTS_APPROVED,), (FUNDS_HELD, PAYMENTS_OUTCOMES, DEAD_LETTER), "payer",
              "hold the amount on the payer's account or decline"),
    StageSpec("clearing", (FUNDS_HELD,), (PAYMENTS_CLEARED, PAYMENTS_OUTCOMES, DEAD_LETTER), "payer",
              "capture the hold, compute the fee, post the journal"),
    StageSpec("settlement", (PAYMENTS_CLEARED,), (SETTLEMENTS_CLOSED, PAYMENTS_OUTCOMES, DEAD_LETTER), "merchant",
              "batch per merchant, currency and cycle; close and pay out"),
    StageSpec("downstream", (PAYMENTS_OUTCOMES, SETTLEMENTS_CLOSED), (), "-",
              "systems that act on outcomes and settlements"),
)  # fmt: skip

MONEY_STAGES = tuple(s for s in STAGES if s.name not in ("upstream", "downstream"))


def stage_spec(name: str) -> StageSpec:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def render_text() -> str:
    lines = ["topics:"]
    for topic in TOPICS:
        lines.append(
            f"  {topic.name:<24} {topic.partitions:>2} partitions  key={topic.key:<14} value={topic.value_schema}"
        )
    lines.append("stages:")
    for stage in STAGES:
        consumes = ", ".join(stage.consumes) or "-"
        produces = ", ".join(stage.produces) or "-"
        lines.append(f"  {stage.name:<11} {consumes:<40} -> {produces}")
    return "\n".join(lines)


def _node(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


def render_mermaid() -> str:
    """A Mermaid flowchart: stages as boxes, topics as rounded nodes, edges from the declaration."""
    lines = ["flowchart LR"]
    for topic in TOPICS:
        lines.append(f"    {_node(topic.name)}([{topic.name}<br/>key: {topic.key}])")
    for stage in STAGES:
        lines.append(f"    {stage.name}[{stage.name}]")
    for stage in STAGES:
        for consumed in stage.consumes:
            lines.append(f"    {_node(consumed)} --> {stage.name}")
        for produced in stage.produces:
            lines.append(f"    {stage.name} --> {_node(produced)}")
    return "\n".join(lines)
