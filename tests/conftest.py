"""Suite-wide test organisation.

The suite runs on two pytest-xdist workers (`-n 2 --dist loadfile` in pyproject.toml).
Tests that start the real service (tests/e2e, tests/fault) measure reaction times
against the wall clock, with a simulated MCU that is an ordinary process: two services
running at once on two cores would measure each other. So those tests take a lock
shared by the workers and run one at a time; unit tests run alongside them.

Tests marked `beside_services` start services that measure no reaction time (the
kernel-cache recovery: minutes of compiling, then a check that the printer works).
They skip the lock and are scheduled first, so their compiles run on one worker while
the other works through the rest: the timed tests then run on a busy machine, which the
control process's real-time priority is there for.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

_SERVICE_DIRS = ("e2e", "fault")


def _starts_services(node) -> bool:
    return any(part in _SERVICE_DIRS for part in Path(str(node.fspath)).parts[-3:-1])


def pytest_collection_modifyitems(config, items):
    """Tests that run beside the others go first (a stable sort keeps the rest in order)."""
    items.sort(key=lambda item: item.get_closest_marker("beside_services") is None)


@pytest.fixture(autouse=True)
def _one_service_test_at_a_time(request, tmp_path_factory):
    if (not _starts_services(request.node)
            or request.node.get_closest_marker("beside_services") is not None):
        yield
        return
    # The base temp is per worker (.../pytest-N/popen-gwK); its parent is per run.
    lock = tmp_path_factory.getbasetemp().parent / "service-tests.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
