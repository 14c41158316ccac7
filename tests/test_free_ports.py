"""The ports tests give their services: outside the range outgoing connections take theirs from, never handed out
twice, and free when handed out (a service started moments later binds it)."""

from __future__ import annotations

import contextlib
import random
import socket

import pytest

from devstack import processes
from devstack.processes import LISTEN_PORTS_FROM, ephemeral_ports, free_port


def test_free_ports_avoid_the_ephemeral_range_and_each_other() -> None:
    ephemeral = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if ephemeral.start - LISTEN_PORTS_FROM >= 1000:  # room below the range: every port comes from there
        assert all(LISTEN_PORTS_FROM <= port < ephemeral.start for port in ports), (ephemeral, sorted(ports)[:5])
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ports the chooser will draw are taken by listeners first: none of them comes back."""
    below = range(LISTEN_PORTS_FROM, ephemeral_ports().start)
    if len(below) < 1000:
        pytest.skip("no room below this machine's ephemeral range")
    draws = random.Random(7)
    listeners: list[socket.socket] = []
    try:
        for _ in range(10):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with contextlib.suppress(OSError):  # already in use: taken either way
                sock.bind(("127.0.0.1", draws.choice(below)))
                sock.listen()
            listeners.append(sock)
        taken = {sock.getsockname()[1] for sock in listeners} - {0}
        monkeypatch.setattr(processes, "_choose", random.Random(7))
        port = free_port()
        assert port not in taken and LISTEN_PORTS_FROM <= port < ephemeral_ports().start
    finally:
        for sock in listeners:
            sock.close()
