"""The service raises its descriptor limit to what server.max_connections needs."""

from __future__ import annotations

import logging
import resource

from printhost import service


def _fake_limits(monkeypatch, soft: int, hard: int) -> list[tuple[int, int]]:
    state = {"limits": (soft, hard)}
    calls: list[tuple[int, int]] = []

    def getrlimit(which):
        assert which == resource.RLIMIT_NOFILE
        return state["limits"]

    def setrlimit(which, limits):
        if limits[0] > state["limits"][1]:
            raise ValueError("not allowed")
        calls.append(limits)
        state["limits"] = limits

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return calls


def test_the_soft_limit_is_raised_to_what_max_connections_needs(monkeypatch, caplog):
    calls = _fake_limits(monkeypatch, 256, 4096)
    service.ensure_fd_limit(256)
    needed = 256 + 2 * service.ACCEPT_BACKLOG + service.FD_RESERVE
    assert calls == [(needed, 4096)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_high_enough_limit_is_left_alone(monkeypatch):
    calls = _fake_limits(monkeypatch, 4096, 4096)
    service.ensure_fd_limit(256)
    assert calls == []


def test_a_hard_limit_too_low_is_used_as_far_as_it_goes_and_warned_about(monkeypatch, caplog):
    calls = _fake_limits(monkeypatch, 256, 512)
    with caplog.at_level(logging.WARNING, logger="printhost.supervisor"):
        service.ensure_fd_limit(1000)
    assert calls == [(512, 512)]
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "descriptor limit (512) is below server.max_connections (1000)" in record.getMessage()
    assert "LimitNOFILE" in record.getMessage()
