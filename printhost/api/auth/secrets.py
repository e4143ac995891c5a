"""Where the token signing keys come from, and how the signing key is rotated.

The current signing secret comes from the first of three sources:

1. the environment variable PRINTHOST_JWT_SECRET, for deployments whose secrets come
   from a secret manager or a systemd credential;
2. the file named by `auth.jwt_secret_file`, when the operator wants to control it;
3. `<state_dir>/jwt_secret`, generated on first start so a default installation is
   secure without any setup, and reused afterwards so tokens survive restarts.

In a file, the first non-empty line is the signing secret; further lines are earlier
secrets whose tokens are still accepted (an operator rotating a managed file puts the
new secret first and removes the old line once its tokens have expired). Keys retired
by `printhost auth rotate-key` are kept in `<state_dir>/jwt_retired_keys.json` with
the time until which their tokens are accepted (the longest token lifetime after the
rotation), and dropped after that.

A short secret is refused outright instead of being used: HS256 with a guessable key
lets anyone mint admin tokens offline.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from printhost.api.auth.tokens import KeyRing, SigningKey, TokenService, key_id
from printhost.config import Settings
from printhost.store.atomic import fsync_directory, replace_file

__all__ = ["load_jwt_secret", "load_keyring", "KeyRingSource", "rotate_signing_key",
           "token_service_for", "ENV_VAR", "MIN_SECRET_LEN", "DEFAULT_FILENAME",
           "RETIRED_FILENAME"]

log = logging.getLogger(__name__)

ENV_VAR = "PRINTHOST_JWT_SECRET"
MIN_SECRET_LEN = 32
DEFAULT_FILENAME = "jwt_secret"
RETIRED_FILENAME = "jwt_retired_keys.json"
LOCK_FILENAME = "jwt_secret.lock"
_GENERATED_BYTES = 64


def load_jwt_secret(settings: Settings, state_dir: Path) -> bytes:
    """Return the signing secret, creating `<state_dir>/jwt_secret` if nothing else is set.

    Raises ValueError with a message fit for the operator when a configured secret is
    too short, unreadable or empty.
    """
    return _load_secrets(settings, Path(state_dir))[0]


def _load_secrets(settings: Settings, state_dir: Path) -> list[bytes]:
    """The signing secret first, then earlier secrets listed in the same file."""
    env_value = os.environ.get(ENV_VAR)
    if env_value is not None:
        # An empty value counts as set: falling back silently would give this
        # process a different secret from the one the operator meant to share.
        if len(env_value) < MIN_SECRET_LEN:
            raise ValueError(f"{ENV_VAR} is set but shorter than {MIN_SECRET_LEN} characters; "
                             "use e.g. the output of `openssl rand -hex 32`")
        return [env_value.encode("utf-8")]

    configured = settings.auth.jwt_secret_file
    if configured:
        path = Path(os.path.expanduser(configured))
        try:
            return _read_secret_file(path)
        except FileNotFoundError:
            raise ValueError(f"auth.jwt_secret_file: {path} does not exist") from None
        except OSError as exc:
            raise ValueError(f"auth.jwt_secret_file: cannot read {path} "
                             f"({exc.strerror or exc})") from None

    return _load_or_create_default(Path(state_dir))


def _read_secret_file(path: Path) -> list[bytes]:
    """Non-empty lines, stripped: the signing secret, then earlier accepted secrets."""
    with open(path, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        content = handle.read()
    if stat.S_IMODE(mode) & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("JWT secret file %s is readable by group or others (mode %o); "
                    "anyone who can read it can forge tokens: chmod 600 it",
                    path, stat.S_IMODE(mode))
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    if not lines or len(lines[0]) < MIN_SECRET_LEN:
        raise ValueError(f"JWT secret file {path} holds fewer than {MIN_SECRET_LEN} bytes "
                         "(after stripping whitespace)")
    short = [i + 1 for i, line in enumerate(lines) if len(line) < MIN_SECRET_LEN]
    if short:
        raise ValueError(f"JWT secret file {path}: line {short[0]} of the secrets is shorter "
                         f"than {MIN_SECRET_LEN} bytes")
    return lines


def _load_or_create_default(state_dir: Path) -> list[bytes]:
    """Reuse `<state_dir>/jwt_secret` or create it exactly once, even under a race.

    The secret is written to a private temporary file first and then hard-linked to
    its final name. `link` fails if the name already exists, so when two processes
    start together exactly one secret wins, and no process can ever read a file that
    exists but is still empty or half-written.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / DEFAULT_FILENAME
    try:
        return _read_secret_file(path)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ValueError(f"{exc}; delete it to have a new one generated "
                         "(this invalidates every issued token)") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path} ({exc.strerror or exc})") from None

    content = secrets.token_bytes(_GENERATED_BYTES).hex().encode("ascii") + b"\n"
    tmp = state_dir / f".{DEFAULT_FILENAME}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Another process created it between our read and our link: use theirs.
            pass
        except OSError:
            # Filesystems without hard links (FAT on a USB stick): fall back to an
            # exclusive create of the final name, which still picks a single winner.
            _create_exclusive(path, content)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    fsync_directory(state_dir)
    return _read_secret_file(path)


def _create_exclusive(path: Path, content: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- keyring

def _retired_path(state_dir: Path) -> Path:
    return Path(state_dir) / RETIRED_FILENAME


def _read_retired(state_dir: Path) -> list[dict]:
    """Entries of the retired-keys file; a missing file is an empty list."""
    path = _retired_path(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        data = json.loads(raw.decode("utf-8"))
        entries = data["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
        for entry in entries:
            bytes.fromhex(entry["secret"])
            float(entry["accept_until"])
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({type(exc).__name__}); restore it or delete it "
                         "(tokens signed with retired keys then stop working)") from None
    return entries


def load_keyring(settings: Settings, state_dir: Path, now: float | None = None) -> KeyRing:
    """The current signing key and every earlier key whose tokens are still accepted."""
    state_dir = Path(state_dir)
    now = time.time() if now is None else now
    current, *older = _load_secrets(settings, state_dir)
    previous = [SigningKey(secret) for secret in older]
    for entry in _read_retired(state_dir):
        if float(entry["accept_until"]) > now:
            previous.append(SigningKey(bytes.fromhex(entry["secret"]),
                                       float(entry["accept_until"])))
    return KeyRing(current, previous)


class KeyRingSource:
    """Hands the token service the keyring, re-read when a key file changes.

    `printhost auth rotate-key` may run while the service runs; the files are looked
    at (stat only) at most once per `recheck_s`, and read again only when one of them
    changed. If a changed file cannot be read, the last good keyring stays in use and
    the problem is logged, so a half-edited file cannot lock every user out.
    """

    def __init__(self, settings: Settings, state_dir: Path, recheck_s: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.recheck_s = recheck_s
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._ring = load_keyring(settings, self.state_dir, clock())
        self._checked = monotonic()

    def _paths(self) -> list[Path]:
        configured = self.settings.auth.jwt_secret_file
        secret = (Path(os.path.expanduser(configured)) if configured
                  else self.state_dir / DEFAULT_FILENAME)
        return [secret, _retired_path(self.state_dir)]

    def _stat(self) -> tuple:
        signature = []
        for path in self._paths():
            try:
                st = path.stat()
                signature.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                signature.append(None)
        return tuple(signature)

    def __call__(self) -> KeyRing:
        if self._monotonic() - self._checked < self.recheck_s:
            return self._ring
        with self._lock:
            if self._monotonic() - self._checked >= self.recheck_s:
                self._checked = self._monotonic()
                signature = self._stat()
                if signature != self._signature:
                    try:
                        self._ring = load_keyring(self.settings, self.state_dir, self._clock())
                        self._signature = signature
                        log.info("token signing keys reloaded; signing with %s",
                                 self._ring.current.kid)
                    except (ValueError, OSError) as exc:
                        log.error("token signing keys not reloaded, keeping the previous ones: %s",
                                  exc)
        return self._ring


def rotate_signing_key(settings: Settings, state_dir: Path, accept_for_s: float,
                       now: float | None = None) -> tuple[str, str, float]:
    """Replace `<state_dir>/jwt_secret` with a new random secret, keeping the old one
    as a verification key for `accept_for_s` seconds. Returns (old kid, new kid,
    accept_until).

    The old key is written to the retired-keys file before the new secret replaces
    the old one, so a crash between the two steps leaves a working (if unrotated)
    service. Refused when the secret comes from the environment or a configured file,
    which printhost does not own.
    """
    if os.environ.get(ENV_VAR) is not None:
        raise ValueError(f"the signing secret comes from {ENV_VAR}; rotate it in your secret "
                         "store (docs/security.md, 'Rotating the signing key')")
    if settings.auth.jwt_secret_file:
        raise ValueError(f"the signing secret comes from auth.jwt_secret_file "
                         f"({settings.auth.jwt_secret_file}); put the new secret on its first "
                         "line and keep the old one on the next (docs/security.md)")
    state_dir = Path(state_dir)
    now = time.time() if now is None else now
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current, *older = _load_or_create_default(state_dir)
        accept_until = now + accept_for_s
        retiring = [current, *older]
        entries = [e for e in _read_retired(state_dir) if float(e["accept_until"]) > now
                   and bytes.fromhex(e["secret"]) not in retiring]
        for secret in retiring:
            entries.append({"kid": key_id(secret), "secret": secret.hex(),
                            "retired_at": int(now), "accept_until": accept_until})
        replace_file(_retired_path(state_dir),
                     (json.dumps({"keys": entries}, indent=1) + "\n").encode("utf-8"), 0o600)
        new = secrets.token_bytes(_GENERATED_BYTES).hex().encode("ascii")
        replace_file(state_dir / DEFAULT_FILENAME, new + b"\n", 0o600)
    finally:
        os.close(fd)
    return key_id(current), key_id(new), accept_until


def token_service_for(settings: Settings, state_dir: Path) -> TokenService:
    """The service's token service: keys from disk (reloaded on rotation), lifetimes
    and issuer from the settings."""
    auth = settings.auth
    return TokenService(KeyRingSource(settings, Path(state_dir)), auth.issuer, auth.token_ttl_s,
                        refresh_ttl_s=auth.refresh_ttl_s)
