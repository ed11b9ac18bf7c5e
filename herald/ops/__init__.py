"""The operator commands of ``herald``: send, messages, dead-letters, schedules, channels,
templates, campaign. They talk to the services' HTTP APIs only (see :mod:`herald.ops.client`); each command
group is one module with a ``register(sub, common)`` adding its parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from herald.ops.client import INTERRUPTED, Client, OpsError, client_from_env
from herald.ops.output import error

#: a command: parsed arguments and a client in, exit code out
Command = Callable[[argparse.Namespace, Client], int]


def common_options() -> argparse.ArgumentParser:
    """Options every operator command takes (``parents=`` of each leaf parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON (the API's answer) for scripts")
    common.add_argument(
        "--api-key", metavar="KEY", help="the tenant's API key (default: HERALD_API_KEY, then .herald/)"
    )
    return common


def runs(command: Command) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: build the client, turn failures into their message and exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            with client_from_env(getattr(args, "api_key", None)) as client:
                return command(args, client)
        except OpsError as exc:
            error(exc.message)
            return exc.exit_code
        except KeyboardInterrupt:
            return INTERRUPTED

    return run


def add_command(
    sub: Any,
    name: str,
    command: Command,
    common: argparse.ArgumentParser,
    help: str,
    examples: str,
) -> argparse.ArgumentParser:
    """A leaf parser with the common options, ``help``, and ``examples`` in its epilog."""
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        parents=[common],
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=runs(command))
    return p


def group(sub: Any, name: str, help: str) -> Any:
    return sub.add_parser(name, help=help, description=help).add_subparsers(
        dest=f"{name}_command", required=True
    )


def register(sub: Any) -> None:
    """Add every operator command group to ``herald``'s subcommands."""
    from herald.ops import campaigns, channels, dead_letters, messages, schedules, templates

    common = common_options()
    for module in (messages, dead_letters, schedules, channels, templates, campaigns):
        module.register(sub, common)
