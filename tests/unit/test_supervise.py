"""`make up`'s supervisor on real child processes: a dead one is restarted and the others keep
running; a crash-looping one is given up on with its log path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.supervise import Supervisor


@dataclass
class Child:
    name: str
    log_path: Path
    code: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = subprocess.Popen([sys.executable, "-c", self.code])


def until(condition, sup: Supervisor, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = sup.poll()
        if condition(result):
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def children(tmp_path: Path):
    made: list[Child] = []
    yield made
    for child in made:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


def test_a_killed_process_is_restarted_and_the_others_keep_running(tmp_path: Path, children) -> None:
    forever = "import time\nwhile True: time.sleep(1)"
    a, b = (
        Child("sender", tmp_path / "sender.log", forever),
        Child("ingest", tmp_path / "ingest.log", forever),
    )
    children += [a, b]
    a.start()
    b.start()
    said: list[str] = []
    sup = Supervisor([a, b], said.append, first_backoff=0.1)
    b_pid = b.proc.pid
    old = a.proc
    os.kill(old.pid, signal.SIGKILL)
    old.wait()
    until(lambda _: a.starts == 2 and a.proc.poll() is None, sup)
    assert a.proc.pid != old.pid
    assert b.proc.pid == b_pid and b.proc.poll() is None, "the other process must not be touched"
    assert sup.restarts == {"sender": 1, "ingest": 0}
    assert any("sender exited with -9" in line and "sender.log" in line for line in said), said
    assert any("sender restarted" in line for line in said), said


def test_a_crash_looping_process_is_given_up_on_with_its_log(tmp_path: Path, children) -> None:
    crashing = Child("pipeline", tmp_path / "pipeline.log", "import sys; sys.exit(3)")
    children.append(crashing)
    crashing.start()
    said: list[str] = []
    sup = Supervisor([crashing], said.append, max_crashes=3, window=60, first_backoff=0.05)
    gave_up = until(lambda r: r is not None, sup)
    assert gave_up.name == "pipeline" and gave_up.crashes == 3 and gave_up.returncode == 3
    assert str(tmp_path / "pipeline.log") in str(gave_up)
    assert crashing.starts == 3, "started once, restarted twice, then given up on"


def test_back_off_doubles_and_is_capped() -> None:
    now = [0.0]

    @dataclass
    class Dead:
        name: str = "scheduler"
        log_path: Path = Path("scheduler.log")
        proc: subprocess.Popen[bytes] | None = None
        starts: int = 0

        def start(self) -> None:
            self.starts += 1
            self.proc = subprocess.Popen([sys.executable, "-c", "pass"])
            self.proc.wait()

    dead = Dead()
    dead.start()
    said: list[str] = []
    sup = Supervisor(
        [dead], said.append, max_crashes=100, window=1e9, first_backoff=1, max_backoff=4, clock=lambda: now[0]
    )
    waits = []
    for _ in range(5):
        assert sup.poll() is None  # records the exit, schedules the restart
        waits.append(float(said[-1].split("Restarting it in ")[1].split(" s")[0]))
        now[0] += waits[-1]
        sup.poll()  # restarts it (and it exits at once again)
    assert waits == [1, 2, 4, 4, 4]
    assert dead.starts == 6
