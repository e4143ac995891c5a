"""The auth tables of the store: the deny-list, API keys, setup codes and the accounts of
external backends, including concurrent use from threads and processes."""

from __future__ import annotations

import json
import multiprocessing
import stat
import threading

import pytest

from printhost.store import accounts, api_keys, revocations, setup_codes
from printhost.store.db import Store
from printhost.store.users import get_user, new_user_record
from printhost.api.auth.passwords import ScryptParams

LIGHT = ScryptParams(2 ** 10, 8, 1)
NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "state")


# --------------------------------------------------------------------------- deny-list


def test_revoke_and_check(store):
    revocations.revoke(store, [("jti", "a", NOW + 10), ("sid", "s1", NOW + 100)], NOW)
    assert revocations.is_revoked(store, "a", "other")
    assert revocations.is_revoked(store, "other", "s1")
    assert not revocations.is_revoked(store, "b", "s2")
    # Entries already expired are not even written; a repeat extends, never duplicates.
    revocations.revoke(store, [("jti", "old", NOW - 1), ("jti", "a", NOW + 50)], NOW)
    assert revocations.count(store) == 2
    assert not revocations.is_revoked(store, "old", "x")
    with pytest.raises(ValueError):
        revocations.revoke(store, [("user", "x", NOW + 1)], NOW)


def test_entries_are_kept_until_expiry_then_pruned(store):
    revocations.revoke(store, [("jti", "a", NOW + 10), ("jti", "b", NOW + 1000)], NOW)
    assert revocations.prune(store, NOW + 5) == 0
    assert revocations.prune(store, NOW + 12) == 1
    assert not revocations.is_revoked(store, "a", "-") and revocations.is_revoked(store, "b", "-")


def test_persisted_in_the_store_file(tmp_path):
    revocations.revoke(Store(tmp_path), [("jti", "persisted", NOW + 10)], NOW)
    assert revocations.is_revoked(Store(tmp_path), "persisted", "-")
    assert "persisted" in (tmp_path / "printhost.json").read_text()


def test_consume_is_single_use_and_reuse_revokes_the_session(store):
    assert revocations.consume(store, "r1", "s1", NOW + 10, NOW + 100, NOW) is True
    assert revocations.is_revoked(store, "r1", "-")
    assert not revocations.is_revoked(store, "-", "s1")
    assert revocations.consume(store, "r1", "s1", NOW + 10, NOW + 100, NOW) is False
    assert revocations.is_revoked(store, "-", "s1")
    # Any other token of the revoked session is refused too.
    assert revocations.consume(store, "r2", "s1", NOW + 10, NOW + 100, NOW) is False


def test_consume_from_many_threads_has_one_winner(store):
    barrier = threading.Barrier(12)
    results = []

    def use():
        barrier.wait()
        results.append(revocations.consume(store, "r", "s", NOW + 10, NOW + 100, NOW))

    threads = [threading.Thread(target=use) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 11 + [True]


def _revoke_many(path: str, prefix: str, count: int) -> None:
    store = Store(path)
    for i in range(count):
        revocations.revoke(store, [("jti", f"{prefix}{i}", NOW + 100)], NOW)


def test_revocations_from_several_processes_are_all_kept(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_revoke_many, args=(str(tmp_path), f"p{n}-", 15))
             for n in range(3)]
    for p in procs:
        p.start()
    _revoke_many(str(tmp_path), "main-", 15)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert revocations.count(Store(tmp_path)) == 60


# --------------------------------------------------------------------------- API keys


def test_api_key_lifecycle(store):
    key, record = api_keys.create_key(store, "octoprint bridge", "operator", "admin", 3600, NOW)
    assert api_keys.parse_key(key) == record["id"]
    found = api_keys.find_key(store, key, NOW)
    assert found["role"] == "operator" and found["name"] == "octoprint bridge"
    raw = (store.path).read_text()
    assert key not in raw and key.split("_", 2)[2] not in raw
    assert "digest" not in json.dumps(api_keys.list_keys(store))
    assert api_keys.list_keys(store) == [record]
    assert record["expires_at"] == "2027-01-15T09:00:00Z"
    assert api_keys.find_key(store, key, NOW + 3600) is None       # expired
    api_keys.revoke_key(store, record["id"])
    assert api_keys.find_key(store, key, NOW) is None
    with pytest.raises(api_keys.ApiKeyNotFound):
        api_keys.revoke_key(store, record["id"])


@pytest.mark.parametrize("key", ["", "phk_", "phk_zzzzzzzzzzzz_" + "a" * 43,
                                 "phk_0123456789ab-" + "a" * 43, "xyz_0123456789ab_" + "a" * 43,
                                 "phk_0123456789ab_" + "a" * 42 + "!", None, 42])
def test_malformed_keys_are_refused(store, key):
    assert api_keys.parse_key(key) is None
    assert api_keys.find_key(store, key, NOW) is None


def test_keys_differing_in_one_character_are_refused(store):
    key, _ = api_keys.create_key(store, "ha", "viewer", "admin", 3600, NOW)
    for i in (len(key) - 1, 20, 30):
        other = key[:i] + ("a" if key[i] != "a" else "b") + key[i + 1:]
        assert api_keys.find_key(store, other, NOW) is None


@pytest.mark.parametrize("name, role", [("", "viewer"), ("x" * 65, "viewer"), ("tab\there", "viewer"),
                                        ("   ", "viewer"), ("ok", "superuser")])
def test_key_name_and_role_are_checked(store, name, role):
    with pytest.raises(ValueError):
        api_keys.create_key(store, name, role, "admin", 3600, NOW)
    assert api_keys.list_keys(store) == []


# --------------------------------------------------------------------------- setup codes


def test_setup_code_lifecycle(store):
    state = store.state_dir
    code, expires = setup_codes.ensure_code(store, state, 600, NOW)
    assert code is not None and expires == NOW + 600
    path = state / "setup_code.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"code": code, "expires_at": "2027-01-15T08:10:00Z",
                                            "endpoint": "/api/v1/auth/setup"}
    assert setup_codes.ensure_code(store, state, 600, NOW + 1) == (None, NOW + 600)
    assert setup_codes.setup_status(store, NOW)["setup_required"] is True
    record = new_user_record("root", "admin", "root-pass-123", LIGHT)
    with pytest.raises(setup_codes.InvalidSetupCode):
        setup_codes.complete_setup(store, state, "NOPE", record, NOW)
    with pytest.raises(setup_codes.InvalidSetupCode):
        setup_codes.complete_setup(store, state, code, record, NOW + 600)
    setup_codes.complete_setup(store, state, code.replace("-", "").lower(), record, NOW + 10)
    assert get_user(store, "root")["role"] == "admin"
    assert not path.exists() and store.table_snapshot("setup_code") == []
    with pytest.raises(setup_codes.SetupDone):
        setup_codes.complete_setup(store, state, code, new_user_record(
            "root2", "admin", "root-pass-123", LIGHT), NOW + 10)
    assert setup_codes.ensure_code(store, state, 600, NOW + 20) == (None, None)
    assert setup_codes.setup_status(store, NOW) == {"setup_required": False, "expires_at": None}


def test_expired_or_lost_code_is_replaced(store):
    state = store.state_dir
    first, _ = setup_codes.ensure_code(store, state, 600, NOW)
    second, _ = setup_codes.ensure_code(store, state, 600, NOW + 600)
    assert second and second != first
    (state / "setup_code.json").unlink()
    third, _ = setup_codes.ensure_code(store, state, 600, NOW + 601)
    assert third and third not in (first, second)
    record = new_user_record("root", "admin", "root-pass-123", LIGHT)
    with pytest.raises(setup_codes.InvalidSetupCode):
        setup_codes.complete_setup(store, state, second, record, NOW + 602)


def test_setup_codes_use_an_unambiguous_alphabet(store):
    codes = {setup_codes._new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 19 and code.count("-") == 3
        assert not set(code.replace("-", "")) & set("01OIL")


# --------------------------------------------------------------------------- external accounts


def test_accounts_of_external_backends(store):
    first = accounts.record_login(store, "http", "alice", "viewer")
    assert first["role"] == "viewer"
    same = accounts.record_login(store, "http", "alice", "viewer")
    assert same["token_version"] == first["token_version"]
    promoted = accounts.record_login(store, "http", "alice", "admin")
    assert promoted["token_version"] == first["token_version"] + 1
    assert accounts.bump_version(store, "http", "alice") == first["token_version"] + 2
    # Backends do not see each other's accounts.
    assert accounts.get_account(store, "file", "alice") is None
    assert [a["username"] for a in accounts.list_accounts(store, "http")] == ["alice"]
