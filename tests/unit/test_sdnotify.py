"""sd_notify client against real AF_UNIX datagram sockets, like systemd's own."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from printhost import sdnotify


def _bound_socket(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def test_sends_ready_to_path_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    with _bound_socket(path) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("READY=1") is True
        assert server.recv(4096) == b"READY=1"


def test_sends_multiline_state(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    with _bound_socket(path) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("STATUS=printing cube.gcode\nMAINPID=%d" % os.getpid())
        assert server.recv(4096) == ("STATUS=printing cube.gcode\nMAINPID=%d" % os.getpid()).encode()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or os.uname().sysname != "Linux",
                    reason="abstract-namespace sockets exist only on Linux")
def test_sends_to_abstract_socket(monkeypatch):
    name = "printhost-test-" + uuid.uuid4().hex
    with _bound_socket(b"\0" + name.encode()) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1") is True
        assert server.recv(4096) == b"READY=1"


def test_without_systemd_returns_false(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_unreachable_socket_returns_false(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.notify("READY=1") is False


def test_relative_address_is_ignored(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify.sock")
    assert sdnotify.socket_address() is None
    assert sdnotify.notify("READY=1") is False
