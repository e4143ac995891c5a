"""User records: validation, password changes, revocation, roles and the first admin."""

from __future__ import annotations

import stat
import time
from datetime import datetime, timedelta, timezone

import pytest

from printhost.api.auth import passwords
from printhost.store import users
from printhost.store.db import Store
from printhost.store.users import (
    ROLES,
    UserNotFound,
    add_user,
    delete_user,
    ensure_initial_admin,
    get_user,
    list_users,
    revoke_tokens,
    role_grants,
    set_password,
    validate_password,
    validate_username,
    verify_credentials,
)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "state")


@pytest.mark.parametrize("name", ["a", "alice", "Bob_2", "first.last", "x-y", "a" * 32])
def test_valid_usernames(name):
    assert validate_username(name) == name


@pytest.mark.parametrize("name,message", [
    ("", "empty"),
    ("a" * 33, "at most 32"),
    ("has space", "may only contain"),
    ("ålice", "may only contain"),
    ("semi;colon", "may only contain"),
    ("new\nline", "may only contain"),
    (None, "empty"),
])
def test_invalid_usernames(name, message):
    with pytest.raises(ValueError, match=message):
        validate_username(name)


def test_password_length_bounds():
    assert validate_password("x" * 8) == "x" * 8
    assert validate_password("x" * 1024) == "x" * 1024
    with pytest.raises(ValueError, match="at least 8"):
        validate_password("x" * 7)
    with pytest.raises(ValueError, match="at most 1024"):
        validate_password("x" * 1025)
    with pytest.raises(ValueError):
        validate_password(12345678)  # type: ignore[arg-type]


def test_add_and_get_user(store):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    record = add_user(store, "alice", "operator", "hunter2hunter2")
    user = get_user(store, "alice")
    assert user == record
    assert user["role"] == "operator"
    assert 0 <= user["token_version"] < 2 ** 31
    assert user["password_hash"].startswith("scrypt$")
    assert "hunter2" not in user["password_hash"]
    created = datetime.fromisoformat(user["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= datetime.now(timezone.utc)
    assert get_user(store, "nobody") is None


def test_add_user_rejects_duplicates_and_bad_input(store):
    add_user(store, "alice", "viewer", "password1")
    with pytest.raises(ValueError, match="already exists"):
        add_user(store, "alice", "admin", "password2")
    with pytest.raises(ValueError, match="already exists"):
        add_user(store, "ALICE", "viewer", "password2")
    with pytest.raises(ValueError, match="role"):
        add_user(store, "bob", "root", "password2")
    with pytest.raises(ValueError, match="at least 8"):
        add_user(store, "bob", "viewer", "short")
    with pytest.raises(ValueError):
        add_user(store, "bad name", "viewer", "password2")
    assert [u["username"] for u in list_users(store)] == ["alice"]


def test_users_persist_across_store_instances(tmp_path):
    add_user(Store(tmp_path), "alice", "admin", "password1")
    assert get_user(Store(tmp_path), "alice")["role"] == "admin"


def test_list_users_hides_hashes(store):
    add_user(store, "alice", "admin", "password1")
    add_user(store, "bob", "viewer", "password2")
    listed = list_users(store)
    assert [u["username"] for u in listed] == ["alice", "bob"]
    assert all("password_hash" not in u for u in listed)
    assert {u["role"] for u in listed} == {"admin", "viewer"}


def test_verify_credentials(store):
    add_user(store, "alice", "operator", "correct-pw")
    user = verify_credentials(store, "alice", "correct-pw")
    assert user is not None and user["username"] == "alice"
    assert user["token_version"] == get_user(store, "alice")["token_version"]
    assert verify_credentials(store, "alice", "wrong-pw!") is None
    assert verify_credentials(store, "Alice", "correct-pw") is None
    assert verify_credentials(store, "nobody", "correct-pw") is None
    assert verify_credentials(store, "bad name", "correct-pw") is None
    assert verify_credentials(store, "alice", "x" * 5000) is None


def test_missing_user_still_costs_a_hash(store, monkeypatch):
    """The unknown-user path must run scrypt too, or timing reveals which users exist."""
    add_user(store, "alice", "operator", "correct-pw")
    seen = []
    real = passwords.verify_password

    def spy(password, encoded):
        seen.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(users, "verify_password", spy)
    verify_credentials(store, "nobody", "some-guess")
    verify_credentials(store, "not valid!", "some-guess")
    verify_credentials(store, "alice", "some-guess")
    assert seen[:2] == [passwords.dummy_hash()] * 2
    assert seen[2] == get_user(store, "alice")["password_hash"]


def test_missing_and_existing_users_take_similar_time(store):
    add_user(store, "alice", "operator", "correct-pw")
    passwords.dummy_hash()  # exclude the one-time creation from the measurement

    def timed(name):
        start = time.perf_counter()
        for _ in range(3):
            verify_credentials(store, name, "wrong-guess")
        return time.perf_counter() - start

    existing, missing = timed("alice"), timed("nobody")
    # Both are dominated by the same scrypt work; without the dummy hash the missing
    # case would be orders of magnitude faster.
    assert missing > existing * 0.3


def test_set_password_bumps_version(store):
    v0 = add_user(store, "alice", "operator", "old-password")["token_version"]
    assert set_password(store, "alice", "new-password") == v0 + 1
    assert verify_credentials(store, "alice", "old-password") is None
    assert verify_credentials(store, "alice", "new-password")["token_version"] == v0 + 1
    with pytest.raises(ValueError):
        set_password(store, "alice", "short")
    with pytest.raises(UserNotFound):
        set_password(store, "nobody", "new-password")
    assert get_user(store, "alice")["token_version"] == v0 + 1


def test_revoke_tokens_bumps_version_only(store):
    v0 = add_user(store, "alice", "operator", "password1")["token_version"]
    old_hash = get_user(store, "alice")["password_hash"]
    assert revoke_tokens(store, "alice") == v0 + 1
    assert revoke_tokens(store, "alice") == v0 + 2
    user = get_user(store, "alice")
    assert user["token_version"] == v0 + 2 and user["password_hash"] == old_hash


def test_recreated_user_starts_from_a_new_token_version(store):
    from printhost.store.users import delete_user
    add_user(store, "admin", "admin", "password1")
    versions = set()
    for _ in range(5):
        add_user(store, "bob", "viewer", "password1")
        versions.add(get_user(store, "bob")["token_version"])
        delete_user(store, "bob")
    assert len(versions) == 5
    with pytest.raises(UserNotFound):
        revoke_tokens(store, "nobody")


def test_delete_user(store):
    add_user(store, "alice", "admin", "password1")
    add_user(store, "bob", "viewer", "password2")
    delete_user(store, "bob")
    assert get_user(store, "bob") is None
    with pytest.raises(UserNotFound):
        delete_user(store, "bob")
    with pytest.raises(ValueError, match="last admin"):
        delete_user(store, "alice")
    add_user(store, "carol", "admin", "password3")
    delete_user(store, "alice")
    assert [u["username"] for u in list_users(store)] == ["carol"]


def test_role_hierarchy():
    assert ROLES == ("viewer", "operator", "admin")
    expected = {
        ("viewer", "viewer"): True, ("viewer", "operator"): False, ("viewer", "admin"): False,
        ("operator", "viewer"): True, ("operator", "operator"): True,
        ("operator", "admin"): False,
        ("admin", "viewer"): True, ("admin", "operator"): True, ("admin", "admin"): True,
    }
    for (role, required), granted in expected.items():
        assert role_grants(role, required) is granted, (role, required)
    assert role_grants("root", "viewer") is False
    assert role_grants("", "viewer") is False
    with pytest.raises(ValueError):
        role_grants("admin", "superuser")


def test_initial_admin_created_once(tmp_path):
    state = tmp_path / "state"
    store = Store(state)
    path = ensure_initial_admin(store, state)
    assert path == str(state / "initial_admin_password")
    assert stat.S_IMODE((state / "initial_admin_password").stat().st_mode) == 0o600
    password = (state / "initial_admin_password").read_text().strip()
    assert len(password) >= 16
    admin = verify_credentials(store, "admin", password)
    assert admin is not None and admin["role"] == "admin"
    assert ensure_initial_admin(store, state) is None
    assert [u["username"] for u in list_users(store)] == ["admin"]


def test_no_initial_admin_when_users_exist(tmp_path):
    state = tmp_path / "state"
    store = Store(state)
    add_user(store, "alice", "viewer", "password1")
    assert ensure_initial_admin(store, state) is None
    assert not (state / "initial_admin_password").exists()
    assert get_user(store, "admin") is None


def test_unknown_user_errors_are_value_errors(store):
    """The CLI reports ValueError as a one-line message; a missing user must be one too."""
    for operation in (lambda: delete_user(store, "ghost"),
                      lambda: revoke_tokens(store, "ghost"),
                      lambda: set_password(store, "ghost", "password1")):
        with pytest.raises(ValueError, match="no such user: 'ghost'"):
            operation()
