"""The auth commands of `printhost`, run as `python -m printhost` in a subprocess: roles,
deactivation, password hashes for the users file, key rotation, and the end of setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from printhost.api.auth.passwords import ScryptParams, params_of, verify_password
from printhost.api.auth.secrets import RETIRED_FILENAME, load_jwt_secret
from printhost.api.auth.tokens import key_id
from printhost.config import parse_settings
from printhost.store import accounts, setup_codes
from printhost.store.db import Store
from printhost.store.users import add_user, get_user

REPO = Path(__file__).resolve().parents[2]
LIGHT = ScryptParams(2 ** 10, 8, 1)


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRINTHOST_CONFIG", "PRINTHOST_JWT_SECRET")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "printhost", *args], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def state(tmp_path) -> Path:
    state = tmp_path / "state"
    store = Store(state)
    add_user(store, "root", "admin", "root-pass-123", params=LIGHT)
    add_user(store, "bob", "viewer", "bob-pass-123", params=LIGHT)
    return state


def test_role_deactivate_activate(state):
    version = get_user(Store(state), "bob")["token_version"]
    r = run("user", "role", "bob", "operator", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "bob now has role operator; existing tokens are revoked"
    bob = get_user(Store(state), "bob")
    assert bob["role"] == "operator" and bob["token_version"] == version + 1

    r = run("user", "deactivate", "bob", "--state-dir", str(state))
    assert r.returncode == 0 and "deactivated" in r.stdout
    assert get_user(Store(state), "bob")["active"] is False
    listed = run("user", "list", "--state-dir", str(state)).stdout.splitlines()
    assert listed[0].split("\t")[:2] == ["root", "admin"] and len(listed[0].split("\t")) == 3
    assert listed[1].split("\t")[-1] == "deactivated"

    r = run("user", "activate", "bob", "--state-dir", str(state))
    assert r.returncode == 0 and r.stdout.strip() == "user bob activated"
    assert get_user(Store(state), "bob")["active"] is True


def test_the_last_admin_cannot_be_demoted_or_deactivated(state):
    for args in (("role", "root", "viewer"), ("deactivate", "root")):
        r = run("user", *args, "--state-dir", str(state))
        assert r.returncode == 2 and r.stderr.startswith("printhost: ")
        assert "last active admin" in r.stderr and "Traceback" not in r.stderr
    assert get_user(Store(state), "root")["role"] == "admin"
    r = run("user", "role", "ghost", "viewer", "--state-dir", str(state))
    assert r.returncode == 2 and "no such user: 'ghost'" in r.stderr


def test_hash_for_the_users_file_uses_the_configured_parameters(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[auth]\npassword_scrypt_log2_n = 11\n")
    r = run("user", "hash", "--config", str(config), stdin="kiosk-pass-1\n")
    assert r.returncode == 0, r.stderr
    encoded = r.stdout.strip()
    assert params_of(encoded) == ScryptParams(2 ** 11, 8, 1)
    assert verify_password("kiosk-pass-1", encoded)
    assert "kiosk-pass-1" not in r.stdout
    r = run("user", "hash", "--config", str(config), stdin="short\n")
    assert r.returncode == 2 and "at least 8 characters" in r.stderr


def test_rotate_key(state):
    settings = parse_settings({})
    old = load_jwt_secret(settings, state)
    r = run("auth", "rotate-key", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    new = load_jwt_secret(settings, state)
    assert new != old
    assert r.stdout.startswith(f"new signing key {key_id(new)}; tokens signed with "
                               f"{key_id(old)} are accepted until ")
    retired = json.loads((state / RETIRED_FILENAME).read_text())["keys"]
    assert [e["kid"] for e in retired] == [key_id(old)]
    assert old.hex() == retired[0]["secret"] and old.hex() not in r.stdout


def test_rotate_key_refuses_an_external_secret(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\njwt_secret_file = "{secret}"\n')
    r = run("auth", "rotate-key", "--config", str(config), "--state-dir", str(tmp_path / "st"))
    assert r.returncode == 2 and "jwt_secret_file" in r.stderr
    assert secret.read_text() == "s" * 40


def test_user_add_ends_first_boot_setup(tmp_path):
    state = tmp_path / "state"
    store = Store(state)
    code, _ = setup_codes.ensure_code(store, state, 600, time.time())
    assert code
    assert (state / "setup_code.json").exists()
    r = run("user", "add", "alice", "--role", "admin", "--state-dir", str(state),
            stdin="alice-pass-123\n")
    assert r.returncode == 0, r.stderr
    assert not (state / "setup_code.json").exists()
    assert store.table_snapshot("setup_code") == []


def test_users_of_other_backends_are_not_managed_here(tmp_path):
    users = tmp_path / "users.toml"
    users.write_text("")
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\nbackend = "file"\nusers_file = "{users}"\n')
    state = tmp_path / "state"
    r = run("user", "add", "carol", "--role", "viewer", "--config", str(config),
            "--state-dir", str(state), stdin="carol-pass-12\n")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"printhost: auth.backend is 'file': users are managed in "
                                f"{users}, not by printhost")
    # Revoking works for every backend: the token version lives in the store.
    r = run("user", "revoke", "carol", "--config", str(config), "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    first = accounts.get_account(Store(state), "file", "carol")["token_version"]
    run("user", "revoke", "carol", "--config", str(config), "--state-dir", str(state))
    assert accounts.get_account(Store(state), "file", "carol")["token_version"] == first + 1
