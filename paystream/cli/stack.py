"""`paystream stack up|down|status|logs|restart|ensure`: the local Kafka broker and PostgreSQL server."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.cli.args import ROWS
from paystream.settings import Settings
from paystream.stack import kafka, postgres
from paystream.stack.process import log_tail
from paystream.stack.services import (
    STACK_DATABASE_URL,
    STACK_KAFKA_BOOTSTRAP,
    ensure_stack,
    restart_kafka,
    restart_postgres,
    stack_down,
    stack_up,
    status,
)


def register(sub: Any) -> None:
    parser = sub.add_parser("stack", help="the local Kafka broker and PostgreSQL server")
    actions = parser.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    actions.add_parser("up", help="start both (idempotent) and print the connection settings").set_defaults(func=up)
    actions.add_parser("down", help="stop both").set_defaults(func=down)
    actions.add_parser("status", help="what runs where, with server versions").set_defaults(func=show_status)
    actions.add_parser("ensure", help="start the stack only if the configured services do not answer").set_defaults(
        func=ensure
    )
    logs = actions.add_parser("logs", help="the tail of a service's log")
    logs.add_argument("service", choices=("kafka", "postgres"))
    logs.add_argument("--lines", type=ROWS, default=50)
    logs.set_defaults(func=show_logs)
    restart = actions.add_parser("restart", help="restart one service")
    restart.add_argument("service", choices=("kafka", "postgres"))
    restart.set_defaults(func=do_restart)


async def up(args: argparse.Namespace, settings: Settings) -> int:
    await stack_up(settings)
    for service in await status(settings):
        print(service.line())
    print(f"\nPAYSTREAM_KAFKA_BOOTSTRAP={STACK_KAFKA_BOOTSTRAP}\nPAYSTREAM_DATABASE_URL={STACK_DATABASE_URL}")
    print(f"(also written to {settings.stack_dir / 'env'})")
    return 0


def down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = stack_down(settings)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


async def show_status(args: argparse.Namespace, settings: Settings) -> int:
    services = await status(settings)
    for service in services:
        print(service.line())
    return 0 if all(s.running for s in services) else 1


async def ensure(args: argparse.Namespace, settings: Settings) -> int:
    await ensure_stack(settings)
    print("services are reachable")
    return 0


def show_logs(args: argparse.Namespace, settings: Settings) -> int:
    path = kafka.log_file(settings) if args.service == "kafka" else postgres.log_file(settings)
    print(log_tail(path, args.lines))
    return 0


async def do_restart(args: argparse.Namespace, settings: Settings) -> int:
    await (restart_kafka(settings) if args.service == "kafka" else restart_postgres(settings))
    print(f"{args.service} restarted")
    return 0
