"""``make up`` keeps the stack running when one service process dies.

As Compose's ``restart: unless-stopped`` and a Kubernetes Deployment do: a process that exits is
started again (after a short back-off that doubles, capped), the rest keep running, and the
console says so. A process that keeps crashing — ``max_crashes`` exits within ``window`` seconds —
is given up on, with the path of its log, rather than restarted forever.

Nothing here knows what a service is: a supervised thing has a ``name``, a ``proc``
(``subprocess.Popen`` or None), a ``log_path`` and a ``start()`` (``devtools.processes.ServiceProcess``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Supervised(Protocol):
    name: str
    log_path: Path

    @property
    def proc(self): ...  # subprocess.Popen[bytes] | None

    def start(self) -> None: ...


@dataclass
class GaveUp:
    """A process that crashed too often: what to tell the person at the console."""

    name: str
    crashes: int
    window: float
    log_path: Path
    returncode: int | None

    def __str__(self) -> str:
        return (
            f"{self.name} crashed {self.crashes} times in {self.window:.0f} s (last exit code "
            f"{self.returncode}); not restarting it again. Its log: {self.log_path}"
        )


@dataclass
class _Track:
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    backoff: float = 0.0
    returncode: int | None = None


class Supervisor:
    """Restart what exits; give up on what crash-loops. Call ``poll()`` a few times a second."""

    def __init__(
        self,
        processes: Iterable[Supervised],
        say: Callable[[str], None],
        *,
        max_crashes: int = 5,
        window: float = 120.0,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.processes = list(processes)
        self.say = say
        self.max_crashes = max_crashes
        self.window = window
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.restarts: dict[str, int] = {p.name: 0 for p in self.processes}
        self._tracks: dict[str, _Track] = {p.name: _Track() for p in self.processes}

    def poll(self) -> GaveUp | None:
        """Restart processes that exited (once their back-off has passed). A process that crashed
        ``max_crashes`` times within ``window`` seconds is returned, and the caller stops."""
        now = self.clock()
        for proc in self.processes:
            track = self._tracks[proc.name]
            if track.restart_at is not None:
                if now >= track.restart_at:
                    track.restart_at = None
                    proc.start()
                    self.restarts[proc.name] += 1
                    self.say(f"{proc.name} restarted (restart {self.restarts[proc.name]})")
                continue
            popen = proc.proc
            if popen is None or popen.poll() is None:
                if popen is not None and track.crashes and now - track.crashes[-1] > self.window:
                    track.backoff = 0.0  # it has run well for a whole window: start afresh
                continue
            track.returncode = popen.returncode
            track.crashes.append(now)
            while track.crashes and now - track.crashes[0] > self.window:
                track.crashes.popleft()
            if len(track.crashes) >= self.max_crashes:
                return GaveUp(proc.name, len(track.crashes), self.window, proc.log_path, popen.returncode)
            track.backoff = min(self.max_backoff, track.backoff * 2 if track.backoff else self.first_backoff)
            track.restart_at = now + track.backoff
            self.say(
                f"{proc.name} exited with {popen.returncode}; the others keep running. Restarting it in "
                f"{track.backoff:.0f} s (log: {proc.log_path})"
            )
        return None
