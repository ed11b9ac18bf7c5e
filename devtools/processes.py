"""Herald's services as real OS processes (``herald run <service>``), for ``make up``, the
end-to-end tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devtools import ports
from herald.services import SERVICES

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range (``devtools.ports``)."""
    return ports.free_port()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    service: ServiceProcess | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; on timeout, fail with the service's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    detail = f"\n--- {service.name} log ---\n{service.log_tail()}" if service else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        prefix = self.name.upper()
        env = {**self.env, f"{prefix}_PORT": str(self.port), f"{prefix}_HOST": self.host}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "herald.cli", "run", self.name],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )

    def readyz(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.readyz() == 200

        wait_for(ready, timeout, f"{self.name} /readyz 200", self)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (the service drains in-flight work), SIGKILL only after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def herald_env(database_url: str, amqp_url: str, **extra: str) -> dict[str, str]:
    """Environment for Herald processes on this infrastructure: this process's environment less
    any Herald settings, ``test`` (not development, so real secrets are required, as in
    production) with freshly generated secrets, plus ``extra``."""
    from shared.crypto import SecretBox

    prefixes = ("HERALD_", *(f"{name.upper()}_" for name in SERVICES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        HERALD_ENVIRONMENT="test",
        HERALD_DATABASE_URL=database_url,
        HERALD_AMQP_URL=amqp_url,
        HERALD_ENCRYPTION_KEYS=SecretBox.generate_key(),
        HERALD_SECRET_KEY=uuid.uuid4().hex,
        HERALD_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def ingest_env(
    sender_port: int, host: str = "127.0.0.1", *, pipeline_port: int | None = None
) -> dict[str, str]:
    """What ingest needs to reach the sender on this machine (a webhook source's ``channel_id`` is
    checked there) and the pipeline (an event of a tenant's own type is checked against the type's
    schema there): pass it to ingest's environment wherever they run as processes."""
    env = {"INGEST_SENDER_URL": f"http://{host}:{sender_port}"}
    if pipeline_port is not None:
        env["INGEST_PIPELINE_URL"] = f"http://{host}:{pipeline_port}"
    return env


def pipeline_env(sender_port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """What the pipeline needs to reach the sender on this machine (a rule's catalogue template is
    checked there when the rule is saved): pass it to the pipeline's environment wherever both run
    as processes."""
    return {"PIPELINE_SENDER_URL": f"http://{host}:{sender_port}"}


def herald_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run ``herald …`` with ``env``; returns stdout, raises with stderr on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "herald.cli", *args],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(f"herald {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout
