"""Checks made before the service starts anything: the state directory and the API port.

Every problem found here is a `StartupError` whose message is one line naming the
problem and how to fix it; the command line prints it and exits 2. Nothing has been
started at that point, so nothing has to be torn down.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

STATE_DIR_HINT = "choose another with --state-dir (or server.state_dir)"


class StartupError(ValueError):
    """A problem found before anything started; the message is one line with a hint."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare_state_dir(path: Path, report: Callable[[str], None] | None = None) -> Path:
    """The state directory, created if missing (0700), made private if it is not
    (`report` is told so; the service logs it).

    Refused with a StartupError when it is not a directory, cannot be created or
    written, or is open to other users and cannot be made private."""
    path = Path(path).expanduser()
    try:
        path = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise StartupError(f"state directory {path} cannot be resolved ({exc}); "
                           f"{STATE_DIR_HINT}") from None
    if path.exists() and not path.is_dir():
        raise StartupError(f"state directory {path} is a file, not a directory; "
                           f"{STATE_DIR_HINT}")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise StartupError(f"cannot create the state directory {path}: {_reason(exc)}; "
                           f"{STATE_DIR_HINT}") from None
    if mode & 0o077:
        # It holds password hashes and the token signing secret: private to its owner.
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise StartupError(f"state directory {path} is open to other users (mode "
                               f"{mode:04o}) and cannot be made private: {_reason(exc)}; "
                               f"run `chmod 700 {path}` as its owner") from None
        if report is not None:
            report(f"state directory {path} was mode {mode:04o}; made it 0700")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"state directory {path} is not writable by this user; run as "
                           f"its owner or {STATE_DIR_HINT}")
    return path


def bind_api_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now so that a port in use is found before
    any process starts (uvicorn then serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only
    # for sockets that say so (with proto 0, Nagle's algorithm and delayed ACKs add
    # ~40 ms to a request that follows a response on the same connection).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # As asyncio's own listening sockets: an IPv6 address means IPv6 only.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(_bind_problem(host, port, exc)) from None
    return sock


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return (f"cannot listen on {host!r}: not a known host name or address; choose "
                "another with --host (or server.host)")
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use (another printhost running?); "
                "choose another with --port")
    if exc.errno == errno.EACCES:
        return (f"no permission to listen on port {port} on {host} (ports below 1024 "
                "need privileges); choose another with --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {host}: not an address of this machine; choose another "
                "with --host (or server.host)")
    return (f"cannot listen on port {port} on {host}: {_reason(exc)}; choose another with "
            "--port or --host")
