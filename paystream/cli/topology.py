"""`paystream topology apply|show`: create or verify the declared topics; print the stage graph."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.settings import Settings
from topology.apply import apply_topology
from topology.graph import render_mermaid, render_text
from topology.topics import PROFILES


def register(sub: Any) -> None:
    parser = sub.add_parser("topology", help="topics and the stage graph")
    actions = parser.add_subparsers(dest="topology_command", metavar="ACTION", required=True)
    apply = actions.add_parser("apply", help="create missing topics, verify existing ones (idempotent)")
    apply.add_argument("--profile", choices=sorted(PROFILES), default="local")
    apply.set_defaults(func=run_apply)
    show = actions.add_parser("show", help="print the topics and the stage graph")
    show.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart instead of text")
    show.set_defaults(func=run_show)


async def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    report = await apply_topology(settings, PROFILES[args.profile])
    for name in report.created:
        print(f"created  {name}")
    for name in report.ok:
        print(f"ok       {name}")
    for name, problems in report.drift.items():
        print(f"DRIFT    {name}: {'; '.join(problems)}")
    return 1 if report.drift else 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    print(render_mermaid() if args.mermaid else render_text())
    return 0
