"""The `signout-worker` command (contracts.md §7): run | publish | schema | dlq replay."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from worker import __version__
from worker.events import json_schema
from worker.settings import SettingsError, load_settings

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"signout-worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signout-worker", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="consume sign-out requests until stopped (SIGTERM)")
    run.add_argument(
        "--until-idle",
        type=float,
        metavar="SECONDS",
        help="stop once caught up and idle for SECONDS (batch runs, tests)",
    )
    run.set_defaults(func=_run)
    schema = commands.add_parser("schema", help="print the JSON Schema of a sign-out request")
    schema.set_defaults(func=_schema)
    from worker import publish, replay

    publish.add_commands(commands)
    replay.add_commands(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    from worker.app import RunOptions, run_worker, tune_collector
    from worker.logs import configure
    from worker.startup import StartupError

    settings = load_settings()
    configure(settings.log.level, settings.log.format, wire_debug=settings.log.wire_debug)
    tune_collector()
    try:
        return asyncio.run(run_worker(settings, RunOptions(until_idle_seconds=args.until_idle)))
    except StartupError as exc:  # its one line is the whole story: no traceback
        print(f"signout-worker: {exc}", file=sys.stderr)
        return exc.exit_code


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0
