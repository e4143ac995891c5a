"""The API socket that `serve` binds before anything starts, served by asyncio as uvicorn does."""

from __future__ import annotations

import asyncio
import socket

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
