"""User records: validation, password changes, revocation, roles, deactivation, rehashing."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from printhost.api.auth import passwords
from printhost.store import users
from printhost.store.db import Store
from printhost.store.users import (
    ROLES,
    LastAdmin,
    UserExists,
    UserNotFound,
    add_user,
    delete_user,
    get_user,
    highest_role,
    list_users,
    public_record,
    rehash_if_needed,
    revoke_tokens,
    role_grants,
    set_password,
    update_user,
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


LIGHT = passwords.ScryptParams(2 ** 10, 8, 1)


def test_new_users_are_active_and_listed_without_secrets(store):
    add_user(store, "alice", "admin", "password1")
    record = get_user(store, "alice")
    assert record["active"] is True
    assert record["password_changed_at"] == record["created_at"]
    shown = public_record(record)
    assert shown == {"username": "alice", "role": "admin", "active": True,
                     "created_at": shown["created_at"]}
    assert shown["created_at"].endswith("Z") and "+" not in shown["created_at"]


def test_duplicate_is_a_user_exists_error(store):
    add_user(store, "alice", "admin", "password1")
    with pytest.raises(UserExists):
        add_user(store, "Alice", "viewer", "password1")


def test_records_without_active_count_as_active(store):
    """Records written before deactivation existed have no `active` member."""
    add_user(store, "alice", "operator", "password1")
    with store.transaction() as db:
        db.table("users").update(lambda doc: doc.pop("active"))
    assert "active" not in get_user(store, "alice")
    assert verify_credentials(store, "alice", "password1") is not None
    assert list_users(store)[0]["username"] == "alice"


def test_update_user_changes_role_and_revokes(store):
    add_user(store, "root", "admin", "password1")
    v0 = add_user(store, "alice", "viewer", "password1")["token_version"]
    shown = update_user(store, "alice", role="operator")
    assert shown["role"] == "operator" and shown["active"] is True
    assert get_user(store, "alice")["token_version"] == v0 + 1
    # No change, no bump.
    update_user(store, "alice", role="operator")
    assert get_user(store, "alice")["token_version"] == v0 + 1
    with pytest.raises(ValueError, match="role"):
        update_user(store, "alice", role="root")
    with pytest.raises(UserNotFound):
        update_user(store, "ghost", role="viewer")


def test_deactivated_user_cannot_log_in_but_costs_the_same(store, monkeypatch):
    add_user(store, "root", "admin", "password1")
    add_user(store, "alice", "operator", "password1")
    v0 = get_user(store, "alice")["token_version"]
    assert update_user(store, "alice", active=False)["active"] is False
    assert get_user(store, "alice")["token_version"] == v0 + 1
    seen = []
    real = passwords.verify_password
    monkeypatch.setattr(users, "verify_password",
                        lambda pw, enc: seen.append(enc) or real(pw, enc))
    assert verify_credentials(store, "alice", "password1") is None
    assert seen == [get_user(store, "alice")["password_hash"]]   # the full check ran
    update_user(store, "alice", active=True)
    assert verify_credentials(store, "alice", "password1") is not None


def test_the_last_active_admin_is_protected(store):
    add_user(store, "root", "admin", "password1")
    add_user(store, "second", "admin", "password1")
    update_user(store, "second", active=False)
    # `second` is inactive, so root is the last active admin.
    for change in ({"role": "operator"}, {"active": False}):
        with pytest.raises(LastAdmin):
            update_user(store, "root", **change)
    with pytest.raises(LastAdmin):
        delete_user(store, "root")
    assert get_user(store, "root")["role"] == "admin"
    update_user(store, "second", active=True)
    update_user(store, "root", role="viewer")
    assert get_user(store, "root")["role"] == "viewer"


def test_rehash_on_login_when_parameters_change(store):
    add_user(store, "alice", "operator", "password1", params=LIGHT)
    old_hash = get_user(store, "alice")["password_hash"]
    version = get_user(store, "alice")["token_version"]
    assert old_hash.startswith("scrypt$1024$")
    user = verify_credentials(store, "alice", "password1", params=LIGHT)
    assert rehash_if_needed(store, "alice", "password1", user["password_hash"], LIGHT) is False
    assert rehash_if_needed(store, "alice", "password1", old_hash) is True
    renewed = get_user(store, "alice")
    assert renewed["password_hash"].startswith("scrypt$16384$8$1$")
    assert renewed["token_version"] == version                 # tokens stay valid
    assert verify_credentials(store, "alice", "password1") is not None
    # Compare-and-set: a password changed meanwhile is never overwritten.
    set_password(store, "alice", "password2", params=LIGHT)
    assert rehash_if_needed(store, "alice", "password1", old_hash) is False
    assert verify_credentials(store, "alice", "password2") is not None


def test_adding_a_user_ends_a_pending_setup(store):
    with store.transaction() as db:
        db.table("setup_code").insert({"digest": "x", "expires_at": 2e9})
    add_user(store, "alice", "admin", "password1")
    assert store.table_snapshot("setup_code") == []


def test_highest_role():
    assert highest_role(["viewer", "admin", "operator"]) == "admin"
    assert highest_role("operator") == "operator"
    assert highest_role(["root", 3]) is None
    assert highest_role(None) is None


def test_unknown_user_errors_are_value_errors(store):
    """The CLI reports ValueError as a one-line message; a missing user must be one too."""
    for operation in (lambda: delete_user(store, "ghost"),
                      lambda: revoke_tokens(store, "ghost"),
                      lambda: set_password(store, "ghost", "password1")):
        with pytest.raises(ValueError, match="no such user: 'ghost'"):
            operation()
