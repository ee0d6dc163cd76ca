"""Text, Mermaid and Markdown views of the topology, drawn from the declaration only.

docs/topology.md carries generated regions between `<!-- generated:NAME -->`
and `<!-- /generated:NAME -->` markers; `paystream topology docs` rewrites them
and a unit test fails when they differ from what these functions draw, so the
docs cannot drift from the code. Text outside the markers is written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from paystream.errors import PaystreamError
from topology.graph import GRAPH, Topology
from topology.topics import DAY_MS, DEFAULT_PROFILE, PROFILES, TopologyProfile

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "topology.md"


def render_text(graph: Topology = GRAPH) -> str:
    """Topics with partitions, key and schema; stages with what they read and write."""
    lines = ["topics:"]
    for topic in graph.topics:
        lines.append(
            f"  {topic.name:<24} {topic.partitions:>2} partitions  key={topic.key:<14} value={topic.value_schema}"
        )
    lines.append("stages:")
    for stage in graph.stages:
        consumes = ", ".join(stage.consumes) or "-"
        produces = ", ".join(stage.produces) or "-"
        lines.append(f"  {stage.name:<11} {consumes:<40} -> {produces}")
    return "\n".join(lines)


def _topic_node(name: str) -> str:
    # A prefix keeps topic ids apart from stage ids; Mermaid ids allow no dots or dashes.
    return "t_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def render_mermaid(graph: Topology = GRAPH) -> str:
    """A Mermaid flowchart: stages as boxes, external systems as parallelograms, topics as rounded nodes."""
    lines = ["flowchart LR"]
    for topic in graph.topics:
        lines.append(f'    {_topic_node(topic.name)}(["{topic.name}<br/>key: {topic.key}"])')
    for stage in graph.stages:
        lines.append(f'    {stage.name}[/"{stage.name}"/]' if stage.external else f'    {stage.name}["{stage.name}"]')
    for stage in graph.stages:
        lines += [f"    {_topic_node(topic)} --> {stage.name}" for topic in stage.consumes]
        lines += [f"    {stage.name} --> {_topic_node(topic)}" for topic in stage.produces]
    return "\n".join(lines)


def _retention(retention_ms: int) -> str:
    days, rest = divmod(retention_ms, DAY_MS)
    return f"{days} days" if rest == 0 else f"{retention_ms} ms"


def render_topics_table(graph: Topology = GRAPH) -> str:
    """The topics as a Markdown table."""
    lines = [
        "| topic | partitions | key | value schema | retention | cleanup | timestamps | description |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    for t in graph.topics:
        lines.append(
            f"| `{t.name}` | {t.partitions} | `{t.key}` | `{t.value_schema}` | {_retention(t.retention_ms)}"
            f" | {t.cleanup_policy} | {t.timestamp_type} | {t.description} |"
        )
    return "\n".join(lines)


def render_stages_table(graph: Topology = GRAPH) -> str:
    """The stages as a Markdown table."""
    lines = ["| stage | reads | writes | owns rows keyed by | does |", "|---|---|---|---|---|"]
    for s in graph.stages:
        reads = ", ".join(f"`{t}`" for t in s.consumes) or "-"
        writes = ", ".join(f"`{t}`" for t in s.produces) or "-"
        owner = f"`{s.key_owner}`" if s.key_owner else "- (external)"
        lines.append(f"| {s.name} | {reads} | {writes} | {owner} | {s.description} |")
    return "\n".join(lines)


def render_profiles_table(profiles: Mapping[str, TopologyProfile] = PROFILES) -> str:
    """The profiles as a Markdown table."""
    lines = ["| profile | replication factor | `min.insync.replicas` |", "|---|---:|---:|"]
    for name, profile in profiles.items():
        default = " (default)" if profile == DEFAULT_PROFILE else ""
        lines.append(f"| `{name}`{default} | {profile.replication_factor} | {profile.min_insync_replicas} |")
    return "\n".join(lines)


GENERATED: dict[str, Callable[[Topology], str]] = {
    "topics": render_topics_table,
    "profiles": lambda _graph: render_profiles_table(),
    "stages": render_stages_table,
    "mermaid": lambda graph: f"```mermaid\n{render_mermaid(graph)}\n```",
    "text": lambda graph: f"```\n{render_text(graph)}\n```",
}


def _region(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.DOTALL)


def generated_region(text: str, name: str) -> str | None:
    """The current body of one generated region, or None when its markers are missing."""
    match = _region(name).search(text)
    return match.group(2) if match else None


def regenerate(text: str, graph: Topology = GRAPH) -> str:
    """`text` with every generated region redrawn; a missing marker pair is an error, not a silent skip."""
    for name, draw in GENERATED.items():
        match = _region(name).search(text)
        if match is None:
            raise PaystreamError(f"docs: no <!-- generated:{name} --> ... <!-- /generated:{name} --> markers")
        start, end = match.span(2)
        text = text[:start] + draw(graph) + "\n" + text[end:]
    return text
