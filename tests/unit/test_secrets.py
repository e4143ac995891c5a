"""Loading and generating the JWT signing secret."""

from __future__ import annotations

import logging
import stat
import threading

import pytest

from printhost.api.auth.secrets import ENV_VAR, load_jwt_secret
from printhost.config import parse_settings

DEFAULTS = parse_settings({})


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _with_file(path) -> object:
    return parse_settings({"auth": {"jwt_secret_file": str(path)}})


def test_generated_once_with_mode_0600_and_reused(tmp_path):
    state = tmp_path / "state"
    secret = load_jwt_secret(DEFAULTS, state)
    path = state / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) == 128
    bytes.fromhex(secret.decode("ascii"))
    assert load_jwt_secret(DEFAULTS, state) == secret
    assert sorted(p.name for p in state.iterdir()) == ["jwt_secret"]


def test_different_state_dirs_get_different_secrets(tmp_path):
    assert load_jwt_secret(DEFAULTS, tmp_path / "a") != load_jwt_secret(DEFAULTS, tmp_path / "b")


def test_concurrent_first_start_agrees_on_one_secret(tmp_path):
    results = []
    barrier = threading.Barrier(8)

    def load():
        barrier.wait()
        results.append(load_jwt_secret(DEFAULTS, tmp_path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt_secret"]


def test_env_overrides_files(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "e" * 40)
    configured = tmp_path / "configured"
    configured.write_text("f" * 40)
    assert load_jwt_secret(_with_file(configured), tmp_path / "state") == b"e" * 40
    assert not (tmp_path / "state" / "jwt_secret").exists()


@pytest.mark.parametrize("value", ["", "x", "y" * 31])
def test_short_env_secret_rejected(tmp_path, monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError, match=ENV_VAR):
        load_jwt_secret(DEFAULTS, tmp_path)


def test_env_secret_of_exactly_32_chars_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "q" * 32)
    assert load_jwt_secret(DEFAULTS, tmp_path) == b"q" * 32


def test_configured_file_is_stripped(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"  " + b"s" * 40 + b"\n\n")
    path.chmod(0o600)
    assert load_jwt_secret(_with_file(path), tmp_path / "state") == b"s" * 40
    assert not (tmp_path / "state" / "jwt_secret").exists()


def test_configured_file_short_after_strip_rejected(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"s" * 31 + b"\n" + b" " * 10)
    with pytest.raises(ValueError, match="32"):
        load_jwt_secret(_with_file(path), tmp_path / "state")


def test_configured_file_missing(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_jwt_secret(_with_file(tmp_path / "nope"), tmp_path / "state")


def test_configured_file_unreadable(tmp_path):
    # A directory cannot be read as a file even by root, unlike a chmod 000 file.
    path = tmp_path / "secret"
    path.mkdir()
    with pytest.raises(ValueError, match="cannot read"):
        load_jwt_secret(_with_file(path), tmp_path / "state")


def test_warns_about_group_readable_secret(tmp_path, caplog):
    load_jwt_secret(DEFAULTS, tmp_path)
    with caplog.at_level(logging.WARNING, logger="printhost.api.auth.secrets"):
        load_jwt_secret(DEFAULTS, tmp_path)
    assert not caplog.records
    (tmp_path / "jwt_secret").chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="printhost.api.auth.secrets"):
        load_jwt_secret(DEFAULTS, tmp_path)
    assert any("readable by group or others" in r.getMessage() for r in caplog.records)


def test_damaged_default_file_is_reported_not_replaced(tmp_path):
    path = tmp_path / "jwt_secret"
    path.write_text("")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="delete it"):
        load_jwt_secret(DEFAULTS, tmp_path)
    assert path.read_text() == ""


# --------------------------------------------------------------------------- keyring and rotation

from printhost.api.auth.secrets import (RETIRED_FILENAME, KeyRingSource,  # noqa: E402
                                        load_keyring, rotate_signing_key, token_service_for)
from printhost.api.auth.tokens import InvalidToken, TokenService, key_id  # noqa: E402


def test_configured_file_lists_earlier_secrets_after_the_first_line(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"n" * 40 + b"\n\n  " + b"o" * 40 + b"  \n")
    path.chmod(0o600)
    settings = _with_file(path)
    assert load_jwt_secret(settings, tmp_path / "state") == b"n" * 40
    ring = load_keyring(settings, tmp_path / "state", now=0)
    assert ring.current.secret == b"n" * 40
    assert set(ring.kids()) == {key_id(b"n" * 40), key_id(b"o" * 40)}
    # Tokens of the earlier secret verify, new ones are signed with the first line.
    old = TokenService(b"o" * 40, "printhost", 60).issue("alice", ["admin"], 0)[0]
    service = TokenService(ring, "printhost", 60)
    assert service.decode(old)["sub"] == "alice"


def test_a_short_earlier_secret_is_refused(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"n" * 40 + b"\nshort\n")
    with pytest.raises(ValueError, match="line 2"):
        load_jwt_secret(_with_file(path), tmp_path / "state")


def test_rotation_keeps_the_old_key_until_its_tokens_expire(tmp_path):
    state = tmp_path / "state"
    first = load_jwt_secret(DEFAULTS, state)
    old_kid, new_kid, until = rotate_signing_key(DEFAULTS, state, accept_for_s=600, now=1000)
    assert old_kid == key_id(first) and until == 1600
    second = load_jwt_secret(DEFAULTS, state)
    assert second != first and new_kid == key_id(second) and len(second) == 128
    retired = state / RETIRED_FILENAME
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "jwt_secret").stat().st_mode) == 0o600
    assert set(load_keyring(DEFAULTS, state, now=1599).kids()) == {old_kid, new_kid}
    assert load_keyring(DEFAULTS, state, now=1600).kids() == [new_kid]
    # A second rotation drops keys whose time is up and retires the current one.
    rotate_signing_key(DEFAULTS, state, accept_for_s=600, now=1700)
    kids = load_keyring(DEFAULTS, state, now=1700).kids()
    assert new_kid in kids and old_kid not in kids and len(kids) == 2


def test_rotation_refuses_secrets_it_does_not_own(tmp_path, monkeypatch):
    path = tmp_path / "secret"
    path.write_text("f" * 40)
    with pytest.raises(ValueError, match="jwt_secret_file"):
        rotate_signing_key(_with_file(path), tmp_path / "state", 600)
    monkeypatch.setenv(ENV_VAR, "e" * 40)
    with pytest.raises(ValueError, match=ENV_VAR):
        rotate_signing_key(DEFAULTS, tmp_path / "state", 600)
    assert path.read_text() == "f" * 40


def test_damaged_retired_file_is_reported(tmp_path):
    load_jwt_secret(DEFAULTS, tmp_path)
    (tmp_path / RETIRED_FILENAME).write_text('{"keys": [{"secret": "zz"}]}')
    with pytest.raises(ValueError, match="damaged"):
        load_keyring(DEFAULTS, tmp_path)


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keyring_source_notices_a_rotation_and_survives_a_bad_edit(tmp_path, caplog):
    ticks = Ticks()
    source = KeyRingSource(DEFAULTS, tmp_path, recheck_s=1.0, monotonic=ticks)
    service = TokenService(source, "printhost", 60)
    before, _ = service.issue("alice", ["admin"], 0)
    old_kid = source().current.kid
    _, new_kid, _ = rotate_signing_key(DEFAULTS, tmp_path, accept_for_s=3600)
    assert source().current.kid == old_kid          # not looked at again yet
    ticks.now = 1.0
    assert source().current.kid == new_kid
    after, _ = service.issue("alice", ["admin"], 0)
    assert service.decode(before)["sub"] == service.decode(after)["sub"] == "alice"
    # A half-written file is not taken: the last good keys stay in use.
    (tmp_path / "jwt_secret").write_text("short\n")
    ticks.now = 2.0
    with caplog.at_level(logging.ERROR, logger="printhost.api.auth.secrets"):
        assert source().current.kid == new_kid
    assert any("not reloaded" in r.getMessage() for r in caplog.records)


def test_token_service_for_uses_the_configured_lifetimes(tmp_path):
    settings = parse_settings({"auth": {"token_ttl_s": 120, "refresh_ttl_s": 900,
                                        "issuer": "shop"}})
    service = token_service_for(settings, tmp_path)
    pair = service.issue_pair("alice", ["viewer"], 1)
    access = service.decode(pair.access_token)
    assert access["exp"] - access["iat"] == 120 and access["iss"] == "shop"
    refresh = service.decode(pair.refresh_token, "refresh")
    assert refresh["exp"] - refresh["iat"] == 900
    with pytest.raises(InvalidToken):
        service.decode(pair.refresh_token)
