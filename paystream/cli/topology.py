"""`paystream topology apply|show|docs`: create or verify the declared topics; draw the stage graph.

Exit codes: 0 when the cluster (or the docs) match the declaration, 1 when a
difference remains, 2 for an operating error (broker unreachable or refusing).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from paystream.errors import PaystreamError
from paystream.settings import Settings
from topology.apply import ApplyReport, TopicResult, apply_topology, describe_topology
from topology.render import DOCS_PATH, regenerate, render_mermaid, render_text
from topology.topics import PROFILES

EXIT_OK = 0
EXIT_DIFFERENT = 1


def register(sub: Any) -> None:
    parser = sub.add_parser("topology", help="topics and the stage graph")
    actions = parser.add_subparsers(dest="topology_command", metavar="ACTION", required=True)

    apply = actions.add_parser("apply", help="create missing topics, verify existing ones (idempotent)")
    _add_profile(apply)
    apply.add_argument(
        "--fix", action="store_true", help="add missing partitions and set declared configs (stop the stages first)"
    )
    apply.set_defaults(func=run_apply)

    show = actions.add_parser("show", help="print the topics and the stage graph")
    show.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart instead of text")
    show.add_argument("--live", action="store_true", help="also compare each topic with the broker (changes nothing)")
    _add_profile(show)
    show.set_defaults(func=run_show)

    docs = actions.add_parser("docs", help="regenerate the tables and diagram in docs/topology.md")
    docs.add_argument("--check", action="store_true", help="change nothing; exit 1 if the docs are out of date")
    docs.add_argument("--path", type=Path, default=DOCS_PATH, help=f"default: {DOCS_PATH}")
    docs.set_defaults(func=run_docs)


def _add_profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="local", help="replication and min ISR (default: local)"
    )


async def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    report = await apply_topology(settings, PROFILES[args.profile], fix=args.fix)
    for result in report.topics:
        print(_result_line(result, args.fix))
    return EXIT_DIFFERENT if report.drift_remains else EXIT_OK


def _result_line(result: TopicResult, fix_given: bool) -> str:
    line = f"{result.status:<8} {result.topic}"
    if result.fixed:
        line += ": " + "; ".join(f"{d.field} {d.actual} -> {d.expected}" for d in result.fixed)
    if result.drift:
        fixable = [d.field for d in result.drift if d.fixable]
        hint = f" [--fix repairs: {', '.join(fixable)}]" if fixable and not fix_given else ""
        line += (" | still: " if result.fixed else ": ") + "; ".join(str(d) for d in result.drift) + hint
    return line


async def run_show(args: argparse.Namespace, settings: Settings) -> int:
    print(render_mermaid() if args.mermaid else render_text())
    if args.live:
        print(_live_text(await describe_topology(settings, PROFILES[args.profile]), settings))
    return EXIT_OK


def _live_text(report: ApplyReport, settings: Settings) -> str:
    lines = [f"live at {settings.kafka_bootstrap} (namespace {settings.namespace!r}, profile {report.profile.name}):"]
    width = max(len(result.topic) for result in report.topics)
    for result in report.topics:
        live = result.live
        shape = f"{live.partitions:>2} partitions  replication {live.replication_factor}" if live.exists else ""
        detail = "; ".join(str(d) for d in result.drift) if result.status == "drift" else ""
        lines.append(f"  {result.topic:<{width}}  {shape:<28} {result.status}{': ' + detail if detail else ''}")
    return "\n".join(lines)


def run_docs(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.path
    if not path.is_file():
        raise PaystreamError(f"no docs file at {path}")
    current = path.read_text(encoding="utf-8")
    wanted = regenerate(current)
    if current == wanted:
        print(f"up to date: {path}")
        return EXIT_OK
    if args.check:
        print(f"out of date: {path} (run: paystream topology docs)")
        return EXIT_DIFFERENT
    path.write_text(wanted, encoding="utf-8")
    print(f"regenerated: {path}")
    return EXIT_OK
