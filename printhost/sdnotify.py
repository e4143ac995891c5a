"""Tell systemd about the service's state (sd_notify protocol) without libsystemd.

The unit is `Type=notify`, so systemd considers the print host started only once it
says `READY=1`: units ordered after it (and `systemctl start` itself) then wait until
the API really listens instead of racing a half-initialised process. The protocol is
one datagram of newline-separated `KEY=VALUE` lines to the AF_UNIX socket named in
$NOTIFY_SOCKET; implementing it here keeps a C library and its Python binding out of
the dependency list.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "socket_address"]


def socket_address(env: dict[str, str] | None = None) -> str | bytes | None:
    """The address to send notifications to, or None when not started by systemd.

    A leading '@' means a Linux abstract-namespace socket, whose real name starts with
    a NUL byte; returning bytes for that case keeps the NUL out of str handling.
    """
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd only ever hands out absolute paths or abstract names; anything else
    # (e.g. a vsock address from a newer systemd) is not something we can reach.
    return None


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STOPPING=1", "STATUS=printing") to systemd.

    Returns True when the datagram was handed to the socket, False when there is no
    systemd to tell or the send failed. It never raises: a print host that runs by
    hand, in a container or under another supervisor must behave exactly the same
    apart from this call being a no-op.
    """
    address = socket_address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            payload = state.encode()
            return sock.send(payload) == len(payload)
    except OSError:
        return False
