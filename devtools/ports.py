"""Picking a TCP port for a server that a test, a benchmark or ``make up`` starts a moment later.

Asking the OS for port 0 hands out a port from the *ephemeral* range, the same range the kernel
takes the source ports of outgoing connections from. Between the pick and the server's ``bind``,
one of the many client connections a test run opens can take it: a fresh clone's ``make test``
failed once with a sender that could not bind ("address already in use"). So the pick is a port
below the ephemeral range, which outgoing connections never use, checked free by binding it, and
never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket

#: well-known ports to leave alone: epmd, AMQP/PostgreSQL/management, and the range rabbitmqctl
#: binds for its own Erlang distribution (35672-35682 by default)
RESERVED = frozenset({4369, 5432, 5672, 15672, 25672, *range(35672, 35683)})
_LOWEST = 10_000
_given: set[int] = set()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free now and outside the ephemeral range where one exists."""
    top = _ephemeral_start()
    if top - _LOWEST >= 1_000:
        for _ in range(500):
            port = random.randrange(_LOWEST, top)
            if port in RESERVED or port in _given:
                continue
            if _bindable(host, port):
                _given.add(port)
                return port
    while True:  # no room below the ephemeral range: let the OS pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED and port not in _given:
            _given.add(port)
            return port
