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
