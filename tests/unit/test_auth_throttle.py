"""Login throttle: exponential lockouts, the per-account key, and admission of concurrent
attempts. (The fixed-lockout basics are in test_api_units.py.)"""

from __future__ import annotations

import pytest

from printhost.api.auth.throttle import ADDRESS_FACTOR, LoginThrottle
from tests.auth_support import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def throttle(clock) -> LoginThrottle:
    return LoginThrottle(max_failures=3, window_s=60.0, lockout_s=10.0, clock=clock,
                         max_lockout_s=80.0)


def _fail(throttle: LoginThrottle, keys: list[str], times: int) -> None:
    for _ in range(times):
        assert throttle.begin(keys) is None
        throttle.end(keys, success=False)


def test_login_keys_count_the_account_from_anywhere():
    assert LoginThrottle.login_keys("Alice", "10.0.0.1") == [
        "pair:alice@10.0.0.1", "acct:alice", "addr:10.0.0.1"]


def test_lockouts_double_up_to_the_maximum_and_unlock_on_schedule(throttle, clock):
    keys = ["pair:alice@10.0.0.1"]
    schedule = []
    for _ in range(6):
        _fail(throttle, keys, 3)
        wait = throttle.retry_after(keys)
        schedule.append(wait)
        clock.now += wait - 0.5
        assert throttle.retry_after(keys) == 1          # still locked just before the end
        assert throttle.begin(keys) == 1
        clock.now += 0.5
        assert throttle.retry_after(keys) is None       # and open exactly at the end
    assert schedule == [10, 20, 40, 80, 80, 80]


def test_a_quiet_period_forgets_earlier_lockouts(throttle, clock):
    keys = ["pair:alice@10.0.0.1"]
    _fail(throttle, keys, 3)
    clock.now += 10
    _fail(throttle, keys, 3)
    assert throttle.retry_after(keys) == 20
    clock.now += 20 + 79                     # quiet, but not for max_lockout_s yet
    _fail(throttle, keys, 3)
    assert throttle.retry_after(keys) == 40
    clock.now += 40 + 80                     # quiet for max_lockout_s after the lockout
    _fail(throttle, keys, 3)
    assert throttle.retry_after(keys) == 10


def test_success_clears_the_strikes_of_the_cleared_keys(throttle, clock):
    keys = ["pair:alice@10.0.0.1", "addr:10.0.0.1"]
    _fail(throttle, keys[:1], 3)
    clock.now += 10
    assert throttle.begin(keys) is None
    throttle.end(keys, success=True, clear=keys[:1])
    _fail(throttle, keys[:1], 3)
    assert throttle.retry_after(keys[:1]) == 10


def test_account_key_locks_a_distributed_guess(clock):
    throttle = LoginThrottle(max_failures=2, window_s=60.0, lockout_s=30.0, clock=clock)
    limit = 2 * ADDRESS_FACTOR
    for i in range(limit - 1):
        _fail(throttle, throttle.login_keys("admin", f"10.0.0.{i}"), 1)
    assert throttle.retry_after(throttle.login_keys("admin", "10.9.9.9")) is None
    _fail(throttle, throttle.login_keys("admin", "10.0.0.200"), 1)
    # Now locked from every address, and only for that user name.
    assert throttle.retry_after(throttle.login_keys("admin", "10.9.9.9")) == 30
    assert throttle.retry_after(throttle.login_keys("bob", "10.9.9.9")) is None


def test_concurrent_attempts_count_while_in_flight(clock):
    """Ten guesses at once: only max_failures are admitted, the rest wait."""
    throttle = LoginThrottle(max_failures=3, window_s=60.0, lockout_s=30.0, clock=clock)
    keys = throttle.login_keys("alice", "10.0.0.1")
    admitted = [throttle.begin(keys) for _ in range(10)]
    assert admitted.count(None) == 3
    assert set(admitted) - {None} == {1}
    for _ in range(3):
        throttle.end(keys, success=False)
    assert throttle.retry_after(keys) == 30
    assert throttle._pending == {}


def test_an_attempt_that_ends_without_a_verdict_counts_nothing(throttle):
    keys = ["pair:a@x"]
    for _ in range(5):
        assert throttle.begin(keys) is None
        throttle.end(keys, success=True, clear=[])
    assert throttle.retry_after(keys) is None
    assert throttle._pending == {} and throttle._failures.get("pair:a@x") is None


def test_strikes_are_bounded(clock):
    t = LoginThrottle(max_failures=1, window_s=1.0, lockout_s=1.0, clock=clock,
                      max_lockout_s=2.0)
    for i in range(10001):
        t.record_failure([f"pair:u{i}@x"])
    clock.now += 10
    t.record_failure(["pair:late@x"])
    assert list(t._strikes) == ["pair:late@x"]
