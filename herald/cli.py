"""The ``herald`` command: migrate, run a service, manage tenants and keys, and the operator
commands (send, messages, dead-letters, schedules, channels, templates: :mod:`herald.ops`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING

from herald.services import COMPONENTS

if TYPE_CHECKING:
    from shared.settings import HeraldSettings


def _settings() -> HeraldSettings:
    # imported here: pydantic-settings costs the operator commands (HTTP only) most of their start-up
    from shared.settings import HeraldSettings

    return HeraldSettings()


def cmd_migrate(args: argparse.Namespace) -> int:
    from herald.migrate import MIGRATIONS, upgrade_all
    from shared.logging import configure_logging

    settings = _settings()
    configure_logging("migrate", settings.log_level, "console")
    schemas = args.schema or list(MIGRATIONS)
    unknown = set(schemas) - set(MIGRATIONS)
    if unknown:
        print(
            f"unknown schema(s): {', '.join(sorted(unknown))}; known: {', '.join(MIGRATIONS)}",
            file=sys.stderr,
        )
        return 2
    done = upgrade_all(settings.database_url, args.revision, schemas)
    print(f"migrated: {', '.join(done)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    runtime, app = COMPONENTS[args.service].build()
    from shared.service import bootstrap

    bootstrap(runtime.settings)
    runtime.serve(app)
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from shared.db import create_engine
    from shared.tenancy import TenantExists, create_tenant

    async def run() -> tuple[str, str]:
        engine = create_engine(_settings().database_url, pool_size=1)
        try:
            tenant, key = await create_tenant(engine, args.name)
            return str(tenant.id), key
        finally:
            await engine.dispose()

    try:
        tenant_id, key = asyncio.run(run())
    except TenantExists as exc:
        print(f"error: {exc}; pick another name", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"tenant_id": tenant_id, "api_key": key}))
    else:
        print(f"tenant {args.name!r} created: id {tenant_id}")
        print(f"API key (shown once, store it now): {key}")
    return 0


def cmd_keys_generate(_: argparse.Namespace) -> int:
    from shared.crypto import SecretBox

    print(SecretBox.generate_key())
    return 0


OPS_HELP = """operator commands talk to the services' HTTP APIs with the tenant's API key: HERALD_API_KEY,
else what `make up` wrote in .herald/ (service URLs: HERALD_<SERVICE>_URL, else .herald/env, else
localhost:8001-8004). Tables by default, --json for scripts; `herald COMMAND --help` has examples.

examples:
  herald send +5511999998888 "Your payment is confirmed" --priority 9
  herald messages tail
  herald messages list --status failed
  herald dead-letters replay --all
  herald schedules create +5511999998888 "Your table is ready" --in 30m
  herald channels pause CHANNEL_ID
  herald templates list --json"""


def parser() -> argparse.ArgumentParser:
    from herald.ops import register as register_ops
    from herald.ops.client import EXIT_CODES_HELP

    p = argparse.ArgumentParser(
        prog="herald",
        description="Herald: WhatsApp notifications and automation.",
        epilog=f"{OPS_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("migrate", help="apply database migrations (run before starting services)")
    m.add_argument("--schema", action="append", help="only this schema (repeatable)")
    m.add_argument("--revision", default="head")
    m.set_defaults(func=cmd_migrate)

    r = sub.add_parser("run", help="run one service in the foreground")
    r.add_argument("service", choices=list(COMPONENTS))
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tenant", help="manage tenants").add_subparsers(dest="tenant_command", required=True)
    tc = t.add_parser("create", help="create a tenant and print its API key")
    tc.add_argument("name")
    tc.add_argument("--json", action="store_true", help='print {"tenant_id": ..., "api_key": ...}')
    tc.set_defaults(func=cmd_tenant_create)

    k = sub.add_parser("keys", help="secrets").add_subparsers(dest="keys_command", required=True)
    kg = k.add_parser("generate", help="print a new Fernet key for HERALD_ENCRYPTION_KEYS")
    kg.set_defaults(func=cmd_keys_generate)

    register_ops(sub)
    return p


def load_local_env(start: str | None = None) -> None:
    """Load `.herald/env` (written by `make up`), searched from cwd upwards.

    Only used when HERALD_DATABASE_URL is not set; never overrides a set variable.
    """
    import os
    from pathlib import Path

    if os.environ.get("HERALD_DATABASE_URL"):
        return
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        f = d / ".herald" / "env"
        if f.is_file():
            for line in f.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                os.environ.setdefault(k.strip(), v.strip())
            return


def main(argv: list[str] | None = None) -> int:
    load_local_env()
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `herald messages tail | head`: the reader has gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
