"""Tests for devtools/infra.py: a real local RabbitMQ + PostgreSQL under a temporary state dir.

The integration tests share one LocalInfra (module fixture) and run in file order: they walk
through the lifecycle start -> use -> broker stop/start -> broker kill/start -> adopt ->
full stop -> restart with the same data.  The small tests at the end need no servers.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest

from devtools import infra as infra_mod
from devtools.infra import InfraURLs, LocalInfra, docker_available, resolve_infra

CONNECT_ERRORS = (ConnectionError, OSError, aiormq.exceptions.AMQPConnectionError, asyncio.TimeoutError)
QUEUE = f"infra-test-{uuid.uuid4().hex[:8]}"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def _publish(amqp_url: str, body: bytes) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()  # publisher confirms on: publish returns once stored
        await channel.declare_queue(QUEUE, durable=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE
        )


async def _assert_broker_refuses(amqp_url: str) -> None:
    """A connection attempt fails fast.  aio-pika leaves the half-built Connection for the GC,
    whose finaliser warns about an un-awaited close(); collect it here, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(CONNECT_ERRORS):
            await aio_pika.connect(amqp_url, timeout=3)
        gc.collect()


async def _get(amqp_url: str) -> bytes | None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True)
        message = await queue.get(no_ack=True, fail=False)
        return None if message is None else message.body


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalInfra, InfraURLs, float]]:
    infra = LocalInfra(tmp_path_factory.mktemp("infra") / "state", log=print)
    t0 = time.monotonic()
    urls = infra.start()
    elapsed = time.monotonic() - t0
    print(f"LocalInfra.start() took {elapsed:.1f} s")
    try:
        yield infra, urls, elapsed
    finally:
        infra.stop()


@pytest.mark.integration
async def test_start_gives_postgres_with_herald_database(local: tuple[LocalInfra, InfraURLs, float]) -> None:
    _, urls, elapsed = local
    assert urls.kind == "local"
    assert urls.database_url.startswith("postgresql+asyncpg://herald:herald@127.0.0.1:")
    assert urls.database_url.endswith("/herald")
    assert elapsed < 60
    conn = await asyncpg.connect(_asyncpg_dsn(urls.database_url), timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_user") == "herald"
        assert await conn.fetchval("SELECT current_database()") == "herald"
        await conn.execute("CREATE TABLE IF NOT EXISTS infra_probe (v text)")
        await conn.execute("INSERT INTO infra_probe VALUES ('kept')")
    finally:
        await conn.close()


@pytest.mark.integration
async def test_postgres_rejects_wrong_password(local: tuple[LocalInfra, InfraURLs, float]) -> None:
    _, urls, _ = local
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(_asyncpg_dsn(urls.database_url).replace("herald:herald@", "herald:nope@"))


@pytest.mark.integration
async def test_broker_accepts_durable_queue_and_persistent_message(
    local: tuple[LocalInfra, InfraURLs, float],
) -> None:
    _, urls, _ = local
    assert urls.amqp_url.startswith("amqp://guest:guest@127.0.0.1:")
    await _publish(urls.amqp_url, b"survives-stop")


@pytest.mark.integration
async def test_stop_broker_then_start_broker_keeps_persistent_message(
    local: tuple[LocalInfra, InfraURLs, float],
) -> None:
    infra, urls, _ = local
    old_pids = infra.processes()["rabbitmq"]
    infra.stop_broker()
    assert infra.processes()["rabbitmq"] == []
    assert not any(_alive(pid) for pid in old_pids)
    await _assert_broker_refuses(urls.amqp_url)
    # PostgreSQL is untouched by a broker outage.
    conn = await asyncpg.connect(_asyncpg_dsn(urls.database_url), timeout=10)
    await conn.close()

    t0 = time.monotonic()
    infra.start_broker()
    print(f"start_broker() took {time.monotonic() - t0:.1f} s")
    assert infra.urls == urls
    assert await _get(urls.amqp_url) == b"survives-stop"


@pytest.mark.integration
async def test_kill_broker_then_start_broker_keeps_confirmed_message(
    local: tuple[LocalInfra, InfraURLs, float],
) -> None:
    infra, urls, _ = local
    await _publish(urls.amqp_url, b"survives-kill")
    old_pids = infra.processes()["rabbitmq"]
    infra.kill_broker()
    assert not any(_alive(pid) for pid in old_pids)
    await _assert_broker_refuses(urls.amqp_url)
    infra.start_broker()
    assert await _get(urls.amqp_url) == b"survives-kill"


@pytest.mark.integration
def test_rabbitmqctl_shares_the_erlang_cookie(local: tuple[LocalInfra, InfraURLs, float]) -> None:
    infra, _, _ = local
    result = infra.rabbitmqctl("list_queues", "name", "durable")
    assert result.returncode == 0, result.stderr
    assert QUEUE in result.stdout


@pytest.mark.integration
def test_second_start_adopts_running_servers(local: tuple[LocalInfra, InfraURLs, float]) -> None:
    infra, urls, _ = local
    before = infra.processes()
    other = LocalInfra(infra.state_dir)
    t0 = time.monotonic()
    assert other.start() == urls
    assert time.monotonic() - t0 < 5
    assert infra.processes() == before


@pytest.mark.integration
async def test_stop_leaves_no_process_and_restart_keeps_data(
    local: tuple[LocalInfra, InfraURLs, float],
) -> None:
    infra, urls, _ = local
    processes = infra.processes()
    pids = processes["postgres"] + processes["rabbitmq"]
    assert len(processes["postgres"]) > 1  # postmaster plus its auxiliary processes
    assert len(processes["rabbitmq"]) > 1  # wrapper script plus the Erlang VM and helpers

    infra.stop()
    assert [pid for pid in pids if _alive(pid)] == []
    assert infra.processes() == {"postgres": [], "rabbitmq": []}
    infra.stop()  # already stopped: must not raise

    assert infra.start() == urls  # same ports, same data
    conn = await asyncpg.connect(_asyncpg_dsn(urls.database_url), timeout=10)
    try:
        assert await conn.fetchval("SELECT v FROM infra_probe") == "kept"
    finally:
        await conn.close()


# ---- no servers needed -------------------------------------------------------------------


def test_docker_available_is_fast_and_never_raises() -> None:
    t0 = time.monotonic()
    assert isinstance(docker_available(), bool)
    assert time.monotonic() - t0 < 2.5


def test_resolve_infra_prefers_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_TEST_DATABASE_URL", "postgresql+asyncpg://u:p@db:5432/x")
    monkeypatch.setenv("HERALD_TEST_AMQP_URL", "amqp://u:p@mq:5672/")
    urls, handle = resolve_infra(tmp_path)
    assert handle is None
    assert urls == InfraURLs("postgresql+asyncpg://u:p@db:5432/x", "amqp://u:p@mq:5672/", "env")
    assert not (tmp_path / "state.json").exists()


def test_up_defers_to_docker_when_an_engine_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(infra_mod, "docker_available", lambda: True)
    assert infra_mod.main(["up", "--state-dir", str(tmp_path)]) == infra_mod.EXIT_USE_DOCKER
    assert not (tmp_path / "state.json").exists()


def test_env_file_update_keeps_other_lines(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nOTHER=1\nexport HERALD_AMQP_URL=old\n")
    infra_mod._update_env_file(env_file, {"HERALD_DATABASE_URL": "db", "HERALD_AMQP_URL": "mq"})
    assert env_file.read_text() == "# comment\nOTHER=1\nHERALD_AMQP_URL=mq\nHERALD_DATABASE_URL=db\n"


def test_missing_rabbitmq_without_root_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infra_mod, "_find_rabbitmq_scripts", lambda: None)
    monkeypatch.setattr(infra_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(infra_mod.InfraError, match="apt-get install -y rabbitmq-server"):
        infra_mod._rabbitmq_scripts(print)


def test_status_and_down_on_empty_state_dir(tmp_path: Path) -> None:
    assert infra_mod.main(["status", "--state-dir", str(tmp_path / "none")]) == 1
    assert infra_mod.main(["down", "--state-dir", str(tmp_path / "none")]) == 0
