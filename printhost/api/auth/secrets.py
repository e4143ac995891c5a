"""Where the token signing secret comes from.

Three sources, first match wins:

1. the environment variable PRINTHOST_JWT_SECRET, for deployments whose secrets come
   from a secret manager or a systemd credential;
2. the file named by `auth.jwt_secret_file`, when the operator wants to control it;
3. `<state_dir>/jwt_secret`, generated on first start so a default installation is
   secure without any setup, and reused afterwards so tokens survive restarts.

A short secret is refused outright instead of being used: HS256 with a guessable key
lets anyone mint admin tokens offline.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from printhost.store.atomic import fsync_directory
from printhost.config import Settings

__all__ = ["load_jwt_secret", "ENV_VAR", "MIN_SECRET_LEN", "DEFAULT_FILENAME"]

log = logging.getLogger(__name__)

ENV_VAR = "PRINTHOST_JWT_SECRET"
MIN_SECRET_LEN = 32
DEFAULT_FILENAME = "jwt_secret"
_GENERATED_BYTES = 64


def load_jwt_secret(settings: Settings, state_dir: Path) -> bytes:
    """Return the signing secret, creating `<state_dir>/jwt_secret` if nothing else is set.

    Raises ValueError with a message fit for the operator when a configured secret is
    too short, unreadable or empty.
    """
    env_value = os.environ.get(ENV_VAR)
    if env_value is not None:
        # An empty value counts as set: falling back silently would give this
        # process a different secret from the one the operator meant to share.
        if len(env_value) < MIN_SECRET_LEN:
            raise ValueError(f"{ENV_VAR} is set but shorter than {MIN_SECRET_LEN} characters; "
                             "use e.g. the output of `openssl rand -hex 32`")
        return env_value.encode("utf-8")

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


def _read_secret_file(path: Path) -> bytes:
    with open(path, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        content = handle.read().strip()
    if stat.S_IMODE(mode) & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("JWT secret file %s is readable by group or others (mode %o); "
                    "anyone who can read it can forge tokens: chmod 600 it",
                    path, stat.S_IMODE(mode))
    if len(content) < MIN_SECRET_LEN:
        raise ValueError(f"JWT secret file {path} holds fewer than {MIN_SECRET_LEN} bytes "
                         "(after stripping whitespace)")
    return content


def _load_or_create_default(state_dir: Path) -> bytes:
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
