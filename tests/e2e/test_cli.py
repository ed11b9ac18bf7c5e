"""The `herald` command from a second shell while `make up` runs: it finds the stack through the
`.herald/env` that `make up` writes, and a variable set in the environment always wins."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.processes import REPO
from devtools.up import write_env_file
from tests.conftest import Infra

pytestmark = pytest.mark.e2e


def _tenant_names(database_url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                return set((await conn.execute(sa.text("SELECT name FROM tenancy.tenants"))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _make_up_env(infra: Infra) -> dict[str, str]:
    """What `make up` runs its services with (development defaults, no secrets of its own)."""
    return {
        "HERALD_ENVIRONMENT": "development",
        "HERALD_DATABASE_URL": infra.database_url,
        "HERALD_AMQP_URL": infra.amqp_url,
    }


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    clean["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_uses_the_stack_make_up_wrote_down(infra: Infra, tmp_path: Path) -> None:
    env = _make_up_env(infra)
    write_env_file(tmp_path / ".herald" / "env", env, "hk_demo", {"sender": "http://localhost:8004"})
    shell = tmp_path / "some" / "folder"  # a second shell, somewhere inside the checkout
    shell.mkdir(parents=True)
    name = f"My shop {uuid.uuid4().hex[:6]}"

    done = _cli(shell, "tenant", "create", name, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["api_key"]
    assert name in _tenant_names(infra.database_url)


def test_a_database_url_in_the_environment_wins_over_the_file(infra: Infra, tmp_path: Path) -> None:
    write_env_file(tmp_path / ".herald" / "env", _make_up_env(infra), "hk_demo", {})
    name = f"elsewhere {uuid.uuid4().hex[:6]}"

    done = _cli(
        tmp_path,
        "tenant",
        "create",
        name,
        HERALD_DATABASE_URL="postgresql+asyncpg://nobody:nothing@127.0.0.1:9/none",
    )

    assert done.returncode != 0
    assert name not in _tenant_names(infra.database_url)
