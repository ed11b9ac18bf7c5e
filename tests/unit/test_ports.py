"""Ports for servers started a moment later: never from the range outgoing connections use."""

from __future__ import annotations

import socket

from devtools import ports


def test_a_picked_port_is_free_below_the_ephemeral_range_and_never_given_twice():
    top = ports._ephemeral_start()
    picked = [ports.free_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)
    assert all(ports._LOWEST <= p < top for p in picked), (top, sorted(picked)[-3:])
    assert not set(picked) & ports.RESERVED
    with socket.socket() as s:
        s.bind(("127.0.0.1", picked[-1]))  # free: a server can bind it


def test_a_port_a_server_holds_is_not_picked(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        offered = []

        def choose(lo: int, hi: int) -> int:  # the held port twice, then anything the OS calls free
            offered.append(port if len(offered) < 2 else _os_port())
            return offered[-1]

        monkeypatch.setattr(ports, "_ephemeral_start", lambda: 65_000)
        monkeypatch.setattr(ports.random, "randrange", choose)
        monkeypatch.setattr(ports, "_given", set())
        assert ports.free_port() != port
        assert offered[:2] == [port, port]


def _os_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
