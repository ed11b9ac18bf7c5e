"""The four services as real processes (``herald run …``), against the session's infrastructure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Infra

SERVICES = ("ingest", "scheduler", "pipeline", "sender")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**self.env, f"{self.name.upper()}_PORT": str(self.port), f"{self.name.upper()}_HOST": "127.0.0.1"}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "run", self.name], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self.readyz() == 200, timeout, f"{self.name} /readyz 200", self)

    def readyz(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
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


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, service: ServiceProcess | None = None,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    detail = f"\n--- {service.name} log ---\n{service.log_tail()}" if service else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@dataclass
class Herald:
    infra: Infra
    services: dict[str, ServiceProcess]
    env: dict[str, str]
    tmp: Path
    _keys: dict[str, str] = field(default_factory=dict)

    def create_tenant(self, name: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "shared.cli", "tenant", "create", name, "--json"],
            env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )
        data = json.loads(out.stdout)
        self._keys[name] = data["api_key"]
        return data["api_key"]

    def client(self, service: str, api_key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.services[service].url, headers=headers, timeout=10)

    def stop(self) -> None:
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                svc.terminate()


@pytest.fixture(scope="module")
def herald(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    tmp = Path(tmp_path_factory.mktemp("herald"))
    env = infra.service_env(
        SENDER_SENDING_LEASE_SECONDS="3",
        HERALD_GRACEFUL_TIMEOUT_SECONDS="10",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    services = {
        name: ServiceProcess(name, free_port(), env, tmp / f"{name}.log") for name in SERVICES
    }
    system = Herald(infra=infra, services=services, env=env, tmp=tmp)
    for svc in services.values():
        svc.start()
    try:
        for svc in services.values():
            svc.wait_ready()
        yield system
    finally:
        system.stop()
