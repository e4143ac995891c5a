"""The API socket that `serve` binds before anything starts, served by asyncio as uvicorn
does; the state directory made private (or refused with one clear line)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat

import pytest

from printhost.preflight import bind_api_socket


def test_connections_on_the_bound_socket_send_without_delay():
    """TCP_NODELAY on accepted connections, as on a socket uvicorn binds itself: without
    it a request that follows a response waits ~40 ms (Nagle, delayed ACK)."""
    sock = bind_api_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.get_running_loop().create_future()

        async def on_client(reader, writer) -> None:
            accepted.set_result(writer.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_client, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            seen.append(await asyncio.wait_for(accepted, 5))
            writer.close()

    try:
        asyncio.run(main())
    finally:
        sock.close()
    assert seen and seen[0] != 0


def test_an_existing_state_directory_open_to_others_is_made_private(tmp_path):
    from printhost.preflight import prepare_state_dir
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    os.chmod(state, 0o775)
    told: list[str] = []
    assert prepare_state_dir(state, told.append) == state
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert told == [f"state directory {state} was mode 0775; made it 0700"]
    # Already private: nothing to say.
    told.clear()
    prepare_state_dir(state, told.append)
    assert told == []


def test_a_state_directory_that_cannot_be_made_private_is_refused_clearly(tmp_path,
                                                                           monkeypatch):
    from printhost.preflight import StartupError, prepare_state_dir
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)

    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(StartupError) as info:
        prepare_state_dir(state)
    message = str(info.value)
    assert "\n" not in message
    assert f"state directory {state} is open to other users (mode 0755)" in message
    assert f"run `chmod 700 {state}` as its owner" in message
