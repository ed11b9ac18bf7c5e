"""A real RabbitMQ and a real PostgreSQL for Herald development and tests.

This module is the single place that answers "where are the broker and the database?":

* ``HERALD_TEST_DATABASE_URL`` + ``HERALD_TEST_AMQP_URL`` in the environment win (CI services,
  a shared staging box, ...): nothing is started.
* Otherwise, where a Docker engine answers, :class:`DockerInfra` starts throw-away containers
  through testcontainers.
* Otherwise :class:`LocalInfra` runs the machine's own ``rabbitmq-server`` and PostgreSQL
  binaries under one state folder, fully isolated from any system instance (own data dirs,
  node name, ports, config, Erlang cookie).  Linux only: process bookkeeping reads ``/proc``.

Invariants kept by :class:`LocalInfra`:

* Everything it creates lives below ``state_dir``; ``state.json`` there records ports, the
  broker's node name and the pids, so a later process (``down``, a second ``up``) finds and
  adopts running servers instead of starting duplicates.
* Each server is launched as the leader of a new session (``start_new_session=True``): Ctrl-C
  in the launching terminal does not reach it, and it survives the launcher's exit.
  ``stop()`` waits for every process that belongs to a server -- its session plus all
  descendants, because Erlang's port helpers and PostgreSQL's backends call setsid()
  themselves -- and SIGKILLs stragglers, so nothing is left behind.  The Erlang port mapper
  ``epmd`` is the one deliberate exception: it daemonises on its own and is shared by every
  Erlang node on the machine (port 4369).
* Data survives ``stop()``/``start()``, ``stop_broker()``/``start_broker()`` and
  ``kill_broker()``/``start_broker()``; the broker always comes back on the same port.

Command line (see ``python -m devtools.infra --help``)::

    python -m devtools.infra up --state-dir .herald/infra [--durable] [--env-file PATH] [--no-docker]
    python -m devtools.infra status --state-dir .herald/infra
    python -m devtools.infra down --state-dir .herald/infra
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DockerInfra",
    "InfraError",
    "InfraURLs",
    "LocalInfra",
    "docker_available",
    "local_infra",
    "main",
    "resolve_infra",
]

_logger = logging.getLogger(__name__)

#: Credentials baked into every environment this module creates (dev/test only).
DB_USER = "herald"
DB_PASSWORD = "herald"
DB_NAME = "herald"
AMQP_USER = "guest"
AMQP_PASSWORD = "guest"

HOST = "127.0.0.1"

#: Exit code of ``up`` when a Docker engine answers and ``--no-docker`` was not given.
EXIT_USE_DOCKER = 3

_STARTUP_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05

# The AMQP 0-9-1 protocol header; a broker that is ready answers with a Connection.Start method frame.
_AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the `rabbitmq` user with `su`
# (dropping our environment) and redirects output to /var/log/rabbitmq; the scripts in this
# directory are the real ones and honour the RABBITMQ_* variables.
_RABBITMQ_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin",)
_RABBITMQ_APT_INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server"

# Variables inherited from the caller that would redirect or reconfigure our Erlang VM.
_ERLANG_ENV_BLOCKLIST = ("ERL_LIBS", "ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ERL_CRASH_DUMP")


class InfraError(RuntimeError):
    """A server could not be provided; the message says what to do about it."""


@dataclass(frozen=True)
class InfraURLs:
    """Where Herald finds its broker and database.

    ``database_url`` is an SQLAlchemy async URL (``postgresql+asyncpg://...``), ``amqp_url`` a plain
    AMQP URL, and ``kind`` tells where they came from: ``"env"``, ``"docker"`` or ``"local"``.
    """

    database_url: str
    amqp_url: str
    kind: str


def _make_urls(pg_host: str, pg_port: int, amqp_host: str, amqp_port: int, kind: str) -> InfraURLs:
    return InfraURLs(
        database_url=f"postgresql+asyncpg://{DB_USER}:{DB_PASSWORD}@{pg_host}:{pg_port}/{DB_NAME}",
        amqp_url=f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{amqp_host}:{amqp_port}/",
        kind=kind,
    )


# --------------------------------------------------------------------------------------------
# Small process, port and file helpers (Linux /proc based).
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, below the ephemeral range (``devtools.ports``)."""
    from devtools.ports import free_port

    return free_port(HOST)


def _port_free(port: int) -> bool:
    """True if a server could bind 127.0.0.1:port now (SO_REUSEADDR, like the servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _tcp_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _amqp_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True once the broker answers the AMQP protocol header with a Connection.Start frame.

    A listening socket alone is not enough: the frame proves the broker finished booting its
    client-facing part (vhosts, default user, queue recovery run before the listener opens).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_AMQP_PROTOCOL_HEADER)
            header = b""
            while len(header) < 7:
                chunk = sock.recv(7 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    # frame type 1 (method) on channel 0
    return header[0] == 1 and header[1:3] == b"\x00\x00"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, parent pid, session id) of ``pid``, or None when it does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _all_procs() -> Iterator[tuple[int, tuple[str, int, int]]]:
    """(pid, stat) of every live process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_stat(int(entry))
            if info is not None and info[0] not in ("Z", "X"):
                yield int(entry), info


def _alive(pid: int | None) -> bool:
    """True if ``pid`` runs (zombies count as dead: they only wait to be reaped)."""
    if not pid:
        return False
    info = _proc_stat(pid)
    return info is not None and info[0] not in ("Z", "X")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _session_members(sid: int) -> list[int]:
    """Live pids whose session id is ``sid`` (the server and every helper it forked)."""
    return sorted(pid for pid, info in _all_procs() if info[2] == sid)


def _with_descendants(roots: list[int]) -> list[int]:
    """``roots`` plus all their live descendants.

    Sessions alone do not find every helper: PostgreSQL's auxiliary processes and backends and
    Erlang's ``erl_child_setup`` call setsid() themselves, so the parent links are followed too.
    """
    procs = list(_all_procs())
    found = {pid for pid in roots if _alive(pid)}
    grew = True
    while grew:
        grew = False
        for pid, info in procs:
            if pid not in found and info[1] in found:
                found.add(pid)
                grew = True
    return sorted(found)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_dead(pids: list[int], timeout: float, reap: Callable[[], None] = lambda: None) -> bool:
    """Wait until none of ``pids`` runs; ``reap`` lets the caller collect its own children."""
    deadline = time.monotonic() + timeout
    while True:
        reap()
        if not any(_alive(pid) for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def _grant_traverse(path: Path, uid: int, gids: set[int]) -> list[Path]:
    """Make every ancestor of ``path`` searchable by ``uid`` by adding o+x where it is missing.

    PostgreSQL runs as the ``postgres`` user but the state dir may sit below a root-only
    directory (pytest's ``/tmp/pytest-of-root`` is 0700).  Search permission lets that user
    reach its own data dir without being able to list or read anything on the way.
    Returns the directories that were changed.
    """
    changed = []
    for directory in reversed(path.parents):
        st = directory.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in gids:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            changed.append(directory)
    return changed


# --------------------------------------------------------------------------------------------
# Binary discovery.
# --------------------------------------------------------------------------------------------


def _pg_bindir() -> Path:
    """Directory holding initdb/postgres/psql: $HERALD_PG_BIN, the `postgres` on PATH, or the
    newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH)."""
    override = os.environ.get("HERALD_PG_BIN")
    if override:
        return Path(override)
    on_path = shutil.which("postgres")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise InfraError(
        "postgres: PostgreSQL server binaries not found (install e.g. `postgresql-15` or set HERALD_PG_BIN)"
    )


def _find_rabbitmq_scripts() -> Path | None:
    for directory in _RABBITMQ_SCRIPT_DIRS:
        if os.access(os.path.join(directory, "rabbitmq-server"), os.X_OK):
            return Path(directory)
    on_path = shutil.which("rabbitmq-server")
    if on_path:
        real = Path(os.path.realpath(on_path))
        # The Debian wrapper in /usr/sbin is not a symlink; only trust real RabbitMQ scripts.
        if (real.parent / "rabbitmq-env").exists():
            return real.parent
    return None


def _rabbitmq_scripts(log: Callable[[str], None]) -> Path:
    """The RabbitMQ scripts directory, installing Debian's package first when missing and root."""
    found = _find_rabbitmq_scripts()
    if found is not None:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise InfraError(
            "rabbitmq: rabbitmq-server is not installed; install it as root with: " + _RABBITMQ_APT_INSTALL
        )
    log("rabbitmq: rabbitmq-server not installed; installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "rabbitmq-server"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise InfraError(f"rabbitmq: `{' '.join(cmd)}` failed:\n{output}")
    found = _find_rabbitmq_scripts()
    if found is None:
        raise InfraError("rabbitmq: apt-get installed rabbitmq-server but its scripts were not found")
    log("rabbitmq: rabbitmq-server installed")
    return found


# --------------------------------------------------------------------------------------------
# LocalInfra
# --------------------------------------------------------------------------------------------


CHROMIUM = Path("/usr/bin/chromium")
_CHROMIUM_APT_INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"


def ensure_chromium(log: Callable[[str], None] = print) -> Path:
    """Debian's ``chromium`` for the console's browser tests (Playwright drives it; it never
    downloads a browser), installed with apt-get when missing and root. Fails clearly otherwise."""
    found = CHROMIUM if CHROMIUM.exists() else (Path(p) if (p := shutil.which("chromium")) else None)
    if found is not None:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise InfraError("chromium is not installed; install it as root with: " + _CHROMIUM_APT_INSTALL)
    log("chromium: not installed; installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise InfraError(f"chromium: `{' '.join(cmd)}` failed:\n{output}")
    if not CHROMIUM.exists():
        raise InfraError(f"chromium: apt-get installed chromium but {CHROMIUM} is missing")
    log("chromium: installed")
    return CHROMIUM


class LocalInfra:
    """RabbitMQ + PostgreSQL from the machine's own packages, under one state folder.

    Layout of ``state_dir``::

        state.json              ports, broker node name, pids (written after every change)
        postgres/data/          PGDATA, owned by the `postgres` user when we run as root
        postgres/run/           unix socket directory (sockets disabled if the path is too long)
        postgres/postgres.log   server log
        rabbitmq/               HOME of the broker (holds .erlang.cookie, mode 0400), config files
        rabbitmq/mnesia/        RABBITMQ_MNESIA_BASE (queues, messages, feature flags, pid file)
        rabbitmq/log/           RABBITMQ_LOG_BASE; rabbitmq/stdout.log gets the console output

    ``durable=False`` runs PostgreSQL with fsync, synchronous_commit and full_page_writes off:
    fast, but an OS crash may corrupt the data.  RabbitMQ always persists durable queues and
    persistent messages (that is what outage tests rely on).

    ``detach=True`` is for the ``up`` command: servers outlive this process.  Otherwise an
    ``atexit`` hook stops whatever this object launched, in case a test run forgets ``stop()``.
    Servers found running from an earlier ``up`` are adopted (``start()`` returns their URLs)
    and are only stopped by an explicit ``stop()``.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        pg_port: int | None = None,
        amqp_port: int | None = None,
        durable: bool = False,
        management: bool = False,
        detach: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.durable = durable
        self.management = management
        self.detach = detach
        self._log = log or _logger.info
        self._want_pg_port = pg_port
        self._want_amqp_port = amqp_port
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._launched: set[str] = set()
        self._atexit_registered = False
        self._state: dict[str, object] = self._load_state()

    # ---- paths -------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _pg_root(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def _pg_data(self) -> Path:
        return self._pg_root / "data"

    @property
    def _pg_log(self) -> Path:
        return self._pg_root / "postgres.log"

    @property
    def _rmq_root(self) -> Path:
        return self.state_dir / "rabbitmq"

    @property
    def _rmq_stdout(self) -> Path:
        return self._rmq_root / "stdout.log"

    # ---- state file --------------------------------------------------------------------

    def _load_state(self) -> dict[str, object]:
        try:
            return dict(json.loads(self._state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._state_file, json.dumps(self._state, indent=2, sort_keys=True) + "\n")

    def _int_state(self, key: str) -> int | None:
        value = self._state.get(key)
        return int(value) if isinstance(value, int) else None

    # ---- public API --------------------------------------------------------------------

    @property
    def urls(self) -> InfraURLs:
        """URLs of the servers (valid once ``start()`` ran here or in an earlier process)."""
        pg_port = self._int_state("pg_port")
        amqp_port = self._int_state("amqp_port")
        if pg_port is None or amqp_port is None:
            raise InfraError(f"no infrastructure was started in {self.state_dir}")
        return _make_urls(HOST, pg_port, HOST, amqp_port, "local")

    def start(self) -> InfraURLs:
        """Start both servers (or adopt running ones) and wait until both accept clients.

        The broker is launched first because it boots slowest; PostgreSQL's initdb and boot
        overlap with it.  An existing data dir is reused, so data survives ``stop()``.
        On failure everything launched by this call is stopped again before raising.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state = self._load_state()
        # Fail before launching anything when an explicitly requested port is taken.
        if self._want_pg_port is not None and self._postgres_pid() is None:
            self._pick_port("pg_port", self._want_pg_port, "postgres")
        if self._want_amqp_port is not None and not self._broker_members():
            self._pick_port("amqp_port", self._want_amqp_port, "rabbitmq")
        try:
            broker_t0 = self._launch_broker()
            pg_t0 = self._launch_postgres()
            if pg_t0 is not None:
                self._wait_postgres(pg_t0)
            self._ensure_database()
            if broker_t0 is not None:
                self._wait_broker(broker_t0)
            elif not _amqp_ready(HOST, int(self._state["amqp_port"])):  # type: ignore[arg-type]
                self._wait_broker(time.monotonic())
        except BaseException:
            self._stop_services(sorted(self._launched), quiet=True)
            raise
        finally:
            self._save_state()
        return self.urls

    def stop(self) -> None:
        """Stop both servers (also ones started by another process) and wait for their exit.

        Never raises because something is already stopped; escalates to SIGKILL for anything
        still alive after the grace period so that no process of either session survives.
        """
        if not self.state_dir.exists():
            self._log(f"infra: nothing to stop ({self.state_dir} does not exist)")
            return
        self._state = self._load_state()
        self._stop_services(["postgres", "rabbitmq"], quiet=False)

    def stop_broker(self) -> None:
        """Gracefully stop RabbitMQ only (SIGTERM to the Erlang VM); its data stays on disk."""
        self._state = self._load_state()
        self._stop_services(["rabbitmq"], quiet=False)

    def start_broker(self) -> None:
        """Start RabbitMQ again on the same ports with the same node name and data.

        Durable queues and persistent messages written before a stop or a kill are recovered.
        Raises :class:`InfraError` if the port was taken meanwhile (the URL must not change).
        """
        self._state = self._load_state()
        if self._int_state("amqp_port") is None:
            raise InfraError("rabbitmq: start() must run before start_broker()")
        started = self._launch_broker(same_ports=True)
        try:
            self._wait_broker(started if started is not None else time.monotonic())
        except BaseException:
            self._stop_services(["rabbitmq"], quiet=True)
            raise
        finally:
            self._save_state()

    def stop_database(self) -> None:
        """Stop PostgreSQL only (fast shutdown: open connections are cut); its data stays."""
        self._state = self._load_state()
        self._stop_services(["postgres"], quiet=False)

    def start_database(self) -> None:
        """Start PostgreSQL again on the same port with the same data (the URL stays valid)."""
        self._state = self._load_state()
        port = self._int_state("pg_port")
        if port is None:
            raise InfraError("postgres: start() must run before start_database()")
        if self._postgres_pid() is None and not _port_free(port):
            raise InfraError(f"postgres: port {port} was taken while the database was stopped")
        started = self._launch_postgres()
        try:
            if started is not None:
                self._wait_postgres(started)
        except BaseException:
            self._stop_services(["postgres"], quiet=True)
            raise
        finally:
            self._save_state()

    def kill_broker(self) -> None:
        """SIGKILL the broker's Erlang VM (a hard crash: no clean shutdown), keeping its data."""
        self._state = self._load_state()
        members = self._broker_members()
        if not members:
            self._log("rabbitmq: not running")
            return
        for pid in members:
            if _comm(pid) == "beam.smp":
                _signal(pid, signal.SIGKILL)
        # The wrapper script and erl_child_setup exit on their own once the VM is gone.
        if not _wait_dead(members, 10.0, self._reap):
            for pid in members:
                _signal(pid, signal.SIGKILL)
            _wait_dead(members, 5.0, self._reap)
        self._reap()
        self._procs.pop("rabbitmq", None)
        self._state["rabbitmq_pid"] = None
        self._save_state()
        self._log("rabbitmq: killed (SIGKILL)")

    def processes(self) -> dict[str, list[int]]:
        """Live pids per server: the main process plus all helpers, backends and descendants."""
        self._state = self._load_state()
        pg_pid = self._postgres_pid()
        return {"postgres": self._pg_members(pg_pid), "rabbitmq": self._broker_members()}

    def status(self) -> dict[str, dict[str, object]]:
        """Per server: running flag, pid, port and whether it accepts clients right now."""
        self._state = self._load_state()
        pg_pid = self._postgres_pid()
        pg_port = self._int_state("pg_port")
        rmq = self._broker_members()
        amqp_port = self._int_state("amqp_port")
        return {
            "postgres": {
                "running": pg_pid is not None,
                "pid": pg_pid,
                "port": pg_port,
                "ready": bool(pg_pid and pg_port and _tcp_open(pg_port)),
            },
            "rabbitmq": {
                "running": bool(rmq),
                "pid": self._int_state("rabbitmq_pid") if rmq else None,
                "port": amqp_port,
                "node": self._state.get("nodename"),
                "ready": bool(rmq and amqp_port and _amqp_ready(HOST, amqp_port)),
            },
        }

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE ARGS`` with the broker's HOME, so the Erlang cookie matches."""
        nodename = self._state.get("nodename")
        if not nodename:
            raise InfraError("rabbitmq: start() must run before rabbitmqctl()")
        scripts = _rabbitmq_scripts(self._log)
        return subprocess.run(
            [str(scripts / "rabbitmqctl"), "-n", str(nodename), *args],
            env=self._broker_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # ---- shared stop logic -------------------------------------------------------------

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    def _stop_services(self, names: list[str], *, quiet: bool) -> None:
        """Signal all named servers first, then wait for them together (parallel shutdown)."""
        # name -> (session id to sweep, or None; pids seen before signalling)
        targets: dict[str, tuple[int | None, list[int]]] = {}
        if "rabbitmq" in names:
            members = self._broker_members()
            if members:
                beams = [pid for pid in members if _comm(pid) == "beam.smp"]
                # SIGTERM to the VM is RabbitMQ's graceful shutdown; the wrapper script then exits.
                for pid in beams or members:
                    _signal(pid, signal.SIGTERM)
                targets["rabbitmq"] = (self._int_state("rabbitmq_pid"), members)
            elif not quiet:
                self._log("rabbitmq: not running")
        if "postgres" in names:
            pg_pid = self._postgres_pid()
            if pg_pid is not None:
                members = self._pg_members(pg_pid)
                _signal(pg_pid, signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
                targets["postgres"] = (None, members)
            elif not quiet:
                self._log("postgres: not running")

        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for name, (sid, pids) in targets.items():
            if not _wait_dead(pids, max(0.0, deadline - time.monotonic()), self._reap):
                self._log(f"{name}: did not stop within {_STOP_TIMEOUT_S:.0f} s; sending SIGKILL")
            # Anything still alive (a timeout, or a helper orphaned by a crash) gets SIGKILL.
            leftovers = {pid for pid in pids if _alive(pid)}
            if sid is not None:
                leftovers.update(_session_members(sid))
            for pid in leftovers:
                _signal(pid, signal.SIGKILL)
            _wait_dead(sorted(leftovers), 5.0, self._reap)
            proc = self._procs.pop(name, None)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5.0)
            self._launched.discard(name)
            self._state[f"{name}_pid"] = None
            if not quiet:
                self._log(f"{name}: stopped")
        if targets:
            self._save_state()

    def _register_atexit(self) -> None:
        if not self.detach and not self._atexit_registered:
            atexit.register(self._atexit_stop)
            self._atexit_registered = True

    def _atexit_stop(self) -> None:
        """Last-resort cleanup for processes this object launched (tests that forgot stop())."""
        with contextlib.suppress(Exception):
            self._stop_services(sorted(self._launched), quiet=True)

    def _pick_port(self, key: str, wanted: int | None, what: str) -> int:
        """Explicit port (must be free) > port from state.json if still free > a fresh free port."""
        if wanted is not None:
            if not _port_free(wanted):
                raise InfraError(f"{what}: port {wanted} on {HOST} is already in use")
            return wanted
        saved = self._int_state(key)
        if saved is not None and _port_free(saved):
            return saved
        return _free_port()

    # ---- PostgreSQL --------------------------------------------------------------------

    def _pg_user(self) -> pwd.struct_passwd | None:
        """The account PostgreSQL runs as: `postgres` when we are root (it refuses root), else us."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise InfraError(
                "postgres: running as root but there is no `postgres` system user to run the server as"
            ) from None

    def _postgres_pid(self) -> int | None:
        """Pid of the running postmaster of our data dir, from its own lock file."""
        try:
            lines = (self._pg_data / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) and _comm(pid) == "postgres" else None

    def _pg_members(self, pid: int | None) -> list[int]:
        if pid is None:
            return []
        return _with_descendants([pid])

    def _pg_socket_dir(self) -> Path | None:
        run = self._pg_root / "run"
        # sun_path holds 107 bytes; ".s.PGSQL.65535.lock" is the longest name placed there.
        return run if len(os.fsencode(run)) + len("/.s.PGSQL.65535.lock") <= 107 else None

    def _launch_postgres(self) -> float | None:
        """Initialise the cluster if needed and launch the postmaster; None if already running."""
        running = self._postgres_pid()
        if running is not None:
            lines = (self._pg_data / "postmaster.pid").read_text().splitlines()
            port = int(lines[3])
            if self._want_pg_port is not None and self._want_pg_port != port:
                raise InfraError(
                    f"postgres: already running on port {port} (pid {running}); "
                    f"stop it before asking for port {self._want_pg_port}"
                )
            self._state["pg_port"] = port
            self._state["postgres_pid"] = running
            self._log(f"postgres: already running on {HOST}:{port} (pid {running})")
            return None

        bindir = _pg_bindir()
        user = self._pg_user()
        self._pg_root.mkdir(parents=True, exist_ok=True)
        if user is not None:
            gids = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
            for directory in _grant_traverse(self._pg_data, user.pw_uid, gids):
                self._log(f"postgres: added o+x to {directory} so the postgres user can reach its data")
        if not (self._pg_data / "PG_VERSION").exists():
            self._initdb(bindir, user)

        socket_dir = self._pg_socket_dir()
        if socket_dir is not None:
            socket_dir.mkdir(exist_ok=True)
            if user is not None:
                os.chown(socket_dir, user.pw_uid, user.pw_gid)
            os.chmod(socket_dir, 0o755)

        port = self._pick_port("pg_port", self._want_pg_port, "postgres")
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(socket_dir) if socket_dir is not None else "",
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "logging_collector": "off",
        }
        cmd = [str(bindir / "postgres"), "-D", str(self._pg_data), "-p", str(port)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        if user is not None:
            env["HOME"] = user.pw_dir
        with open(self._pg_log, "ab") as logfile:
            proc = subprocess.Popen(
                cmd,
                cwd=self._pg_data,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._pg_privileges(user),
            )
        self._procs["postgres"] = proc
        self._launched.add("postgres")
        self._register_atexit()
        self._state.update(pg_port=port, postgres_pid=proc.pid, durable=self.durable)
        self._save_state()
        return time.monotonic()

    @staticmethod
    def _pg_privileges(user: pwd.struct_passwd | None) -> dict[str, object]:
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "umask": 0o077}

    def _initdb(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        """Create the cluster with `herald` as bootstrap superuser (password auth over TCP)."""
        t0 = time.monotonic()
        self._pg_data.mkdir(parents=True, exist_ok=True)
        pwfile = self._pg_root / ".pwfile"
        _write_atomic(pwfile, DB_PASSWORD + "\n", mode=0o600)
        if user is not None:
            os.chown(self._pg_data, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        os.chmod(self._pg_data, 0o700)
        cmd = [
            str(bindir / "initdb"),
            "-D", str(self._pg_data),
            "-U", DB_USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        if not self.durable:
            cmd.append("--no-sync")
        try:
            result = subprocess.run(
                cmd,
                cwd=self._pg_root,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                capture_output=True,
                text=True,
                check=False,
                **self._pg_privileges(user),  # type: ignore[arg-type]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise InfraError(f"postgres: initdb failed:\n{output}")
        self._log(f"postgres: initialised {self._pg_data} in {time.monotonic() - t0:.1f} s")

    def _wait_postgres(self, t0: float) -> None:
        """Wait for postmaster.pid to say "ready" and the TCP port to accept connections."""
        port = int(self._state["pg_port"])  # type: ignore[arg-type]
        proc = self._procs.get("postgres")
        deadline = t0 + _STARTUP_TIMEOUT_S
        while True:
            if proc is not None and proc.poll() is not None:
                raise InfraError(
                    f"postgres: exited with code {proc.returncode} during startup; "
                    f"log {self._pg_log}:\n{_tail(self._pg_log)}"
                )
            try:
                lines = (self._pg_data / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready" and _tcp_open(port):
                break
            if time.monotonic() > deadline:
                raise InfraError(
                    f"postgres: not ready after {_STARTUP_TIMEOUT_S:.0f} s; log {self._pg_log}:\n"
                    f"{_tail(self._pg_log)}"
                )
            time.sleep(_POLL_S)
        self._log(
            f"postgres: started on {HOST}:{port} in {time.monotonic() - t0:.1f} s (data in {self._pg_data})"
        )

    def _psql(self, sql: str, database: str = "postgres") -> str:
        port = int(self._state["pg_port"])  # type: ignore[arg-type]
        psql = _pg_bindir() / "psql"
        cmd = [
            str(psql) if psql.exists() else (shutil.which("psql") or "psql"),
            "-X", "-q", "-t", "-A",
            "-h", HOST, "-p", str(port), "-U", DB_USER, "-d", database,
            "-v", "ON_ERROR_STOP=1",
            "-c", sql,
        ]  # fmt: skip
        env = {**os.environ, "PGPASSWORD": DB_PASSWORD, "PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise InfraError(f"postgres: `{sql}` failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _ensure_database(self) -> None:
        """Create the `herald` database on first start (cheap check on every start)."""
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'") != "1":
            self._psql(f'CREATE DATABASE "{DB_NAME}" OWNER "{DB_USER}"')
            self._log(f"postgres: created database {DB_NAME} (user {DB_USER}/{DB_PASSWORD})")

    # ---- RabbitMQ ----------------------------------------------------------------------

    def _broker_members(self) -> list[int]:
        """Live pids of our broker's session, or [] if it does not run.

        The recorded pid is the session leader (the rabbitmq-server script); the session is only
        trusted if it really holds a RabbitMQ process, so a recycled pid is never signalled.
        """
        leader = self._int_state("rabbitmq_pid")
        nodename = str(self._state.get("nodename") or "")
        if not leader or not nodename:
            return []
        members = _session_members(leader)
        for pid in members:
            comm = _comm(pid)
            if comm == "rabbitmq-server" or (comm == "beam.smp" and nodename.split("@")[0] in _cmdline(pid)):
                return _with_descendants(members)
        return []

    def _broker_env(self) -> dict[str, str]:
        """Environment isolating our node from any system RabbitMQ (and from the caller's RABBITMQ_*).

        HOME is the broker's own directory for the server and for rabbitmqctl alike, so both
        read the same ``.erlang.cookie``; every path RabbitMQ would take from /etc/rabbitmq or
        /var/lib/rabbitmq is pointed into the state dir.
        """
        root = self._rmq_root
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("RABBITMQ_") and key not in _ERLANG_ENV_BLOCKLIST
        }
        env.update(
            HOME=str(root),
            RABBITMQ_NODENAME=str(self._state["nodename"]),
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self._state["amqp_port"]),
            RABBITMQ_DIST_PORT=str(self._state["dist_port"]),
            RABBITMQ_MNESIA_BASE=str(root / "mnesia"),
            RABBITMQ_LOG_BASE=str(root / "log"),
            RABBITMQ_CONFIG_FILE=str(root / "rabbitmq.conf"),
            RABBITMQ_CONFIG_FILES=str(root / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(root / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(root / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(root / "enabled_plugins"),
            RABBITMQ_MOTD_FILE=str(root / "motd"),
            # Erlang distribution (used by rabbitmqctl) only on loopback; epmd too if we start it.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS=HOST,
            ERL_CRASH_DUMP=str(root / "log" / "erl_crash.dump"),
        )
        return env

    def _write_broker_config(self) -> None:
        root = self._rmq_root
        for sub in ("mnesia", "log", "conf.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        cookie = root / ".erlang.cookie"
        if not cookie.exists():
            _write_atomic(cookie, secrets.token_hex(20).upper(), mode=0o400)
        lines = [
            "# Written by devtools/infra.py on every start; edits are overwritten.",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = info",
        ]
        mgmt_port = self._int_state("mgmt_port")
        if self.management and mgmt_port is not None:
            lines += [f"management.tcp.ip = {HOST}", f"management.tcp.port = {mgmt_port}"]
        _write_atomic(root / "rabbitmq.conf", "\n".join(lines) + "\n")
        _write_atomic(root / "advanced.config", "[].\n")
        _write_atomic(root / "rabbitmq-env.conf", "# intentionally empty: isolates us from /etc/rabbitmq\n")
        plugins = "[rabbitmq_management]." if self.management else "[]."
        _write_atomic(root / "enabled_plugins", plugins + "\n")

    def _launch_broker(self, *, same_ports: bool = False) -> float | None:
        """Launch rabbitmq-server in a new session; None if our node already runs.

        ``same_ports`` (start_broker) insists on the recorded ports so URLs stay valid.
        """
        members = self._broker_members()
        if members:
            port = self._int_state("amqp_port")
            if not same_ports and self._want_amqp_port is not None and self._want_amqp_port != port:
                raise InfraError(
                    f"rabbitmq: already running on port {port}; stop it before asking for "
                    f"port {self._want_amqp_port}"
                )
            self._log(f"rabbitmq: already running on {HOST}:{port} (pid {self._state['rabbitmq_pid']})")
            return None

        scripts = _rabbitmq_scripts(self._log)
        if same_ports:
            for key in ("amqp_port", "dist_port", "mgmt_port"):
                port = self._int_state(key)
                if port is not None and not _port_free(port):
                    raise InfraError(
                        f"rabbitmq: port {port} ({key}) is taken; cannot restart on the same URL"
                    )
        else:
            amqp_port = self._pick_port("amqp_port", self._want_amqp_port, "rabbitmq")
            self._state["amqp_port"] = amqp_port
            self._state["dist_port"] = self._pick_port("dist_port", None, "rabbitmq")
            if self.management:
                self._state["mgmt_port"] = self._pick_port("mgmt_port", None, "rabbitmq management")
            self._state["management"] = self.management
            # The node name names the data directory, so it is fixed at the first start.
            self._state.setdefault("nodename", f"herald-{amqp_port}@localhost")
        self._write_broker_config()
        with open(self._rmq_stdout, "ab") as logfile:
            proc = subprocess.Popen(
                [str(scripts / "rabbitmq-server")],
                cwd=self._rmq_root,
                env=self._broker_env(),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs["rabbitmq"] = proc
        self._launched.add("rabbitmq")
        self._register_atexit()
        self._state["rabbitmq_pid"] = proc.pid
        self._save_state()
        return time.monotonic()

    def _wait_broker(self, t0: float) -> None:
        """Wait until the broker answers the AMQP handshake (or fail with its log tail)."""
        port = int(self._state["amqp_port"])  # type: ignore[arg-type]
        deadline = t0 + _STARTUP_TIMEOUT_S
        while not _amqp_ready(HOST, port):
            if not self._broker_members():
                log_file = self._rmq_root / "log" / f"{self._state['nodename']}.log"
                raise InfraError(
                    f"rabbitmq: exited during startup; logs {self._rmq_stdout} and {log_file}:\n"
                    f"{_tail(self._rmq_stdout)}"
                )
            if time.monotonic() > deadline:
                raise InfraError(
                    f"rabbitmq: no AMQP handshake after {_STARTUP_TIMEOUT_S:.0f} s; log {self._rmq_stdout}"
                )
            time.sleep(_POLL_S)
        mgmt_port = self._int_state("mgmt_port")
        if self.management and mgmt_port is not None:
            while not _tcp_open(mgmt_port) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
        self._log(
            f"rabbitmq: started {self._state['nodename']} on {HOST}:{port} in "
            f"{time.monotonic() - t0:.1f} s (data in {self._rmq_root / 'mnesia'})"
        )
        if self.management and mgmt_port is not None:
            self._log(f"rabbitmq: management UI at http://{HOST}:{mgmt_port}/ ({AMQP_USER}/{AMQP_PASSWORD})")


# --------------------------------------------------------------------------------------------
# Docker
# --------------------------------------------------------------------------------------------


def docker_available(timeout: float = 1.5) -> bool:
    """True only if a Docker engine answers a ping within ``timeout`` seconds; never raises.

    The probe runs in a daemon thread so that a hanging DOCKER_HOST cannot block the caller.
    """
    answer: list[bool] = []

    def probe() -> None:
        try:
            import docker

            client = docker.from_env(timeout=1)
            try:
                answer.append(bool(client.ping()))
            finally:
                client.close()
        except Exception:
            answer.append(False)

    thread = threading.Thread(target=probe, name="docker-ping", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


class DockerInfra:
    """RabbitMQ (``rabbitmq:3.13-management``) and PostgreSQL (``postgres:16``) containers.

    Host ports are picked free up front and bound explicitly, so the URLs survive
    ``stop_broker()``/``start_broker()`` (Docker would otherwise map a new random port on
    restart); after a restart the mapping is re-read anyway.  Limits: the containers use
    their writable layer, so data survives a broker stop/start but not ``stop()``, which
    removes them; testcontainers' Ryuk reaper removes them if the process dies.
    """

    RABBITMQ_IMAGE = "rabbitmq:3.13-management"
    POSTGRES_IMAGE = "postgres:16"

    def __init__(self) -> None:
        self._pg: object | None = None
        self._rabbit: object | None = None
        self._urls: InfraURLs | None = None

    @property
    def urls(self) -> InfraURLs:
        if self._urls is None:
            raise InfraError("docker: start() has not run")
        return self._urls

    def start(self) -> InfraURLs:
        try:
            from testcontainers.community.postgres import PostgresContainer
            from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError:  # testcontainers < 4.10 kept the modules at top level
            from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]
            from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[no-redef]

        pg = PostgresContainer(
            self.POSTGRES_IMAGE, username=DB_USER, password=DB_PASSWORD, dbname=DB_NAME, driver="asyncpg"
        ).with_bind_ports(5432, _free_port())
        rabbit = (
            RabbitMqContainer(self.RABBITMQ_IMAGE, username=AMQP_USER, password=AMQP_PASSWORD)
            .with_bind_ports(5672, _free_port())
            .with_bind_ports(15672, _free_port())
        )
        try:
            pg.start()
            self._pg = pg
            rabbit.start()
            self._rabbit = rabbit
        except BaseException:
            self.stop()
            raise
        self._urls = self._read_urls()
        return self._urls

    def _read_urls(self) -> InfraURLs:
        pg, rabbit = self._pg, self._rabbit
        assert pg is not None and rabbit is not None
        return InfraURLs(
            database_url=pg.get_connection_url(),  # type: ignore[attr-defined]
            amqp_url=(
                f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{rabbit.get_container_host_ip()}:"  # type: ignore[attr-defined]
                f"{rabbit.get_exposed_port(5672)}/"  # type: ignore[attr-defined]
            ),
            kind="docker",
        )

    def stop(self) -> None:
        """Remove both containers; never raises if they are already gone."""
        for attr in ("_rabbit", "_pg"):
            container = getattr(self, attr)
            setattr(self, attr, None)
            if container is not None:
                with contextlib.suppress(Exception):
                    container.stop()

    def stop_broker(self) -> None:
        """`docker stop` the broker container (graceful); its writable layer keeps the data."""
        if self._rabbit is not None:
            self._rabbit.get_wrapped_container().stop(timeout=30)  # type: ignore[attr-defined]

    def kill_broker(self) -> None:
        """`docker kill` the broker container (SIGKILL); its writable layer keeps the data."""
        if self._rabbit is not None:
            self._rabbit.get_wrapped_container().kill()  # type: ignore[attr-defined]

    def start_broker(self) -> None:
        """`docker start` the broker again, wait for the AMQP handshake, re-read the port."""
        if self._rabbit is None:
            raise InfraError("docker: start() has not run")
        container = self._rabbit.get_wrapped_container()  # type: ignore[attr-defined]
        container.start()
        container.reload()
        self._urls = self._read_urls()
        host = self._rabbit.get_container_host_ip()  # type: ignore[attr-defined]
        port = int(self._rabbit.get_exposed_port(5672))  # type: ignore[attr-defined]
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not _amqp_ready(host, port):
            if time.monotonic() > deadline:
                raise InfraError(f"docker: broker not answering on {host}:{port} after restart")
            time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# Resolution for tests and tools
# --------------------------------------------------------------------------------------------


def resolve_infra(
    state_dir: Path, *, durable: bool = False
) -> tuple[InfraURLs, LocalInfra | DockerInfra | None]:
    """HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL from the environment if both set
    (returns ``(urls(kind='env'), None)``); else DockerInfra where a Docker engine answers
    (``HERALD_NO_DOCKER=1`` skips that); else LocalInfra (starting it).

    The returned infra object, if any, is running; the caller owns it and should ``stop()`` it.
    """
    database_url = os.environ.get("HERALD_TEST_DATABASE_URL")
    amqp_url = os.environ.get("HERALD_TEST_AMQP_URL")
    if database_url and amqp_url:
        return InfraURLs(database_url=database_url, amqp_url=amqp_url, kind="env"), None
    if os.environ.get("HERALD_NO_DOCKER", "") not in ("1", "true", "yes") and docker_available():
        docker_infra = DockerInfra()
        return docker_infra.start(), docker_infra
    local = LocalInfra(state_dir, durable=durable)
    return local.start(), local


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _update_env_file(path: Path, values: dict[str, str]) -> None:
    """Set KEY=value lines in ``path``, keeping every other line (and creating the file)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    remaining = dict(values)
    out = []
    for line in lines:
        key = line.removeprefix("export ").split("=", 1)[0].strip()
        if key in remaining:
            out.append(f"{key}={remaining.pop(key)}")
        else:
            out.append(line)
    out += [f"{key}={value}" for key, value in remaining.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, "\n".join(out) + "\n")


def _cmd_up(args: argparse.Namespace) -> int:
    if not args.no_docker and docker_available():
        _say("docker: a Docker engine answers; use `docker compose` instead (or pass --no-docker)")
        return EXIT_USE_DOCKER
    infra = LocalInfra(
        Path(args.state_dir),
        pg_port=args.pg_port,
        amqp_port=args.amqp_port,
        durable=args.durable,
        management=args.management,
        detach=True,
        log=_say,
    )
    urls = infra.start()
    values = {"HERALD_DATABASE_URL": urls.database_url, "HERALD_AMQP_URL": urls.amqp_url}
    if args.env_file:
        _update_env_file(Path(args.env_file), values)
        _say(f"env: wrote HERALD_DATABASE_URL and HERALD_AMQP_URL to {args.env_file}")
    else:
        for key, value in values.items():
            print(f"export {key}={value}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    LocalInfra(Path(args.state_dir), log=_say).stop()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    infra = LocalInfra(Path(args.state_dir), log=_say)
    report = infra.status()
    for name, info in report.items():
        if info["running"]:
            health = "accepting connections" if info["ready"] else "NOT accepting connections"
            _say(f"{name}: running (pid {info['pid']}) on {HOST}:{info['port']}, {health}")
        else:
            _say(f"{name}: stopped")
    if all(info["running"] for info in report.values()):
        urls = infra.urls
        print(f"HERALD_DATABASE_URL={urls.database_url}")
        print(f"HERALD_AMQP_URL={urls.amqp_url}")
        return 0
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.infra",
        description="Run Herald's RabbitMQ and PostgreSQL from local packages (no Docker needed).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_state_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", default=".herald/infra", help="where data, logs and pids live")

    up = sub.add_parser("up", help="start (or reuse) both servers in the background")
    add_state_dir(up)
    up.add_argument("--durable", action="store_true", help="keep fsync on (survives an OS crash)")
    up.add_argument("--env-file", help="write HERALD_*_URL lines here instead of printing exports")
    up.add_argument("--no-docker", action="store_true", help="use local servers even if Docker answers")
    up.add_argument("--management", action="store_true", help="enable the RabbitMQ management UI")
    up.add_argument("--pg-port", type=int, help="PostgreSQL port (default: previous or free)")
    up.add_argument("--amqp-port", type=int, help="AMQP port (default: previous or free)")
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="stop both servers (data is kept)")
    add_state_dir(down)
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser("status", help="show whether the servers run; exit 0 only if both do")
    add_state_dir(status)
    status.set_defaults(func=_cmd_status)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InfraError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def local_infra(state_dir: Path, **kwargs: object) -> Iterator[LocalInfra]:
    """``with local_infra(path) as infra:`` starts a LocalInfra and always stops it."""
    infra = LocalInfra(state_dir, **kwargs)  # type: ignore[arg-type]
    try:
        infra.start()
        yield infra
    finally:
        infra.stop()


if __name__ == "__main__":
    sys.exit(main())
