"""Live status: the WebSocket at /api/v1/ws, its tickets for browsers, and the
temperature history.

A program authenticates the WebSocket's upgrade request as any other request
(`Authorization: Bearer <token>` or `X-Api-Key`). A browser cannot set headers on a
WebSocket, and a long-lived token must never be put in a URL, so it first asks for a
one-time ticket (`POST /api/v1/ws/ticket`, valid 30 s) and connects to
`/api/v1/ws?ticket=...`; the connection then carries the credential that asked for
the ticket.

The connection is accepted first and then, when the credential is bad, closed with
1008 (policy violation) and a reason, so that browsers can tell it apart from a
network failure. While it is open the credential is checked again every
`AUTH_RECHECK_S` and at its expiry: a revoked token (logout, password change,
deactivated user) or an expired one closes the connection with 1008 too.

Messages are JSON text frames, server to client only (anything the client sends is
ignored):

* `{"type": "hello", "status": {...}, "rate_hz": 4.0}` first: the whole status document;
* `{"type": "status", "patch": {...}}`: what changed, as a JSON merge patch
  (RFC 7386) against the document so far, at most `server.ws_status_hz` times a second
  and only when something changed;
* `{"type": "event", "event": "job", "data": {"id", "file", "state",
  "previous_state", "error"}}` when a job starts or changes state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from printhost.api.auth.guard import API_KEY_HEADER, Principal, authenticate
from printhost.api.endpoint import EndpointSet
from printhost.api.errors import ApiError
from printhost.api.live import CLOSE_TOO_SLOW, Client
from printhost.api.schemas_jobs import TEMPERATURE_HISTORY, WS_TICKET
from printhost.store.users import role_grants

log = logging.getLogger("printhost.api.ws")

endpoints = EndpointSet()

#: A ticket must be used within this long.
TICKET_TTL_S = 30.0
#: The connection's credential is checked again this often.
AUTH_RECHECK_S = 5.0
CLOSE_POLICY = 1008


@endpoints.route("POST", "/api/v1/ws/ticket", summary="A one-time WebSocket ticket",
                 role="viewer", response=WS_TICKET, status=201, rate_limited=True)
async def ticket(request: Request, principal: Principal | None) -> dict:
    """A ticket for one connection to `/api/v1/ws?ticket=...`, for browsers, which cannot
    send headers on a WebSocket. Use it within 30 s; it works once. The connection then
    lasts as long as the credential that asked for it stays valid."""
    assert principal is not None
    credential = _credential_of(request)
    token, expires_at = request.app.state.ws_tickets.issue(credential)
    expires = datetime.fromtimestamp(expires_at, tz=timezone.utc)
    return {"ticket": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}


@endpoints.route("GET", "/api/v1/temperatures", summary="Temperature history",
                 role="viewer", response=TEMPERATURE_HISTORY)
async def temperatures(request: Request, _: Principal | None) -> dict:
    """Every heater's temperature, target and power over the last 20 minutes, one
    sample a second (oldest first, null where unknown), so a chart has a past the moment
    it opens; the WebSocket's patches carry it on from there."""
    return request.app.state.live.history()


def _credential_of(conn: Any) -> tuple[str, str]:
    api_key = conn.headers.get(API_KEY_HEADER)
    if api_key is not None:
        return ("api_key", api_key)
    header = conn.headers.get("authorization", "")
    return ("bearer", header.partition(" ")[2].strip())


async def _principal(ws: WebSocket, credential: tuple[str, str]) -> Principal:
    """The principal of a stored credential, checked afresh (ApiError if it no longer
    holds)."""
    auth = ws.app.state.auth
    kind, value = credential
    if kind == "api_key":
        principal = await auth.principal_from_api_key(value)
    else:
        principal = await auth.principal_from_token(value)
    if not role_grants(principal.role, "viewer"):
        raise ApiError(403, "Insufficient permissions")
    return principal


async def _authenticate(ws: WebSocket) -> tuple[Principal, tuple[str, str]]:
    tickets = ws.query_params.getlist("ticket")
    if tickets:
        if len(tickets) > 1 or ws.headers.get("authorization") or ws.headers.get(API_KEY_HEADER):
            raise ApiError(401, "Send one ticket, or a token or API key header, not both")
        credential = ws.app.state.ws_tickets.redeem(tickets[0])
        if credential is None:
            raise ApiError(401, "WebSocket ticket unknown, used or expired; ask for a new one")
        return await _principal(ws, credential), credential
    principal = await authenticate(ws, "viewer")  # type: ignore[arg-type]
    return principal, _credential_of(ws)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, reason[:120])


async def websocket(ws: WebSocket) -> None:
    live = ws.app.state.live
    await ws.accept()
    try:
        principal, credential = await _authenticate(ws)
    except ApiError as exc:
        await _close(ws, CLOSE_POLICY, exc.message or "Invalid token")
        return
    limit = ws.app.state.settings.server.max_websockets
    if len(live.clients) >= limit:
        await _close(ws, CLOSE_TOO_SLOW, f"Too many live clients ({limit}); try again later")
        return

    async def send(data: bytes) -> None:
        await ws.send_text(data.decode())

    async def close(code: int, reason: str) -> None:
        await _close(ws, code, reason)

    client = Client(f"{principal.username}@{ws.client.host if ws.client else '?'}", send, close)
    snapshot = live.join(client)
    client.offer(live.encode({"type": "hello", "status": snapshot, "rate_hz": live.rate_hz}))
    sender = asyncio.create_task(client.run_sender())
    watcher = asyncio.create_task(_watch_credential(ws, client, principal, credential))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    except WebSocketDisconnect:
        pass
    finally:
        live.leave(client)
        watcher.cancel()
        if client.dropped is None:
            client.dropped = "disconnected"
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _watch_credential(ws: WebSocket, client: Client, principal: Principal,
                            credential: tuple[str, str]) -> None:
    """Close with 1008 once the credential is revoked or expires."""
    while client.dropped is None:
        until_expiry = principal.expires_at.timestamp() - time.time()
        await asyncio.sleep(max(0.0, min(AUTH_RECHECK_S, until_expiry)))
        try:
            principal = await _principal(ws, credential)
        except ApiError:
            client.drop(CLOSE_POLICY, "Credential revoked or expired")
            return
        except Exception:
            log.exception("websocket credential check failed")


websocket_routes = [WebSocketRoute("/api/v1/ws", websocket)]
