"""The live WebSocket on the real service: authentication (header, API key, one-time
ticket; 1008 when bad, revoked or expired), status patches at the configured rate,
job events, the temperature history, the client limit, and 50 clients while a print
runs without the control loop missing a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import NO_RATE_LIMIT, PASSWORDS, Service, running
from printhost.api.live import apply_patch

pytestmark = pytest.mark.e2e

RATE_HZ = 4.0
MAX_WS = 56
# Back and forth across the bed without extruding (nothing to heat first): the position
# changes all the time, so every send has a patch.
SQUARES = ("G28\nG90\n" + "G1 X10 Y10 F6000\nG1 X200 Y10\nG1 X200 Y200\nG1 X10 Y200\n" * 60)


@pytest.fixture(scope="module")
def running_service(tmp_path_factory):
    with running(Service(tmp_path_factory.mktemp("live"), time_factor=1.0,
                         server_extra=(f"ws_status_hz = {RATE_HZ}\nmax_websockets = {MAX_WS}\n"
                                       + NO_RATE_LIMIT))) as both:
        yield both


def ws_url(service: Service, query: str = "") -> str:
    return f"ws://127.0.0.1:{service.port}/api/v1/ws" + (f"?{query}" if query else "")


async def next_message(ws, timeout_s: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def closed_with(ws, timeout_s: float = 15.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout_s)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame"
        return exc.rcvd.code, exc.rcvd.reason


def test_a_client_gets_the_status_then_patches_as_it_changes(service, api):
    async def scenario():
        async with connect(ws_url(service), additional_headers=api.auth("viewer")) as ws:
            hello = await next_message(ws)
            assert hello["type"] == "hello" and hello["rate_hz"] == RATE_HZ
            doc = hello["status"]
            assert doc["printer"]["target_bed_temp"] == 0.0

            async def until(target: float) -> dict:
                nonlocal doc
                deadline = time.monotonic() + 10
                while doc["printer"]["target_bed_temp"] != target:
                    assert time.monotonic() < deadline, doc["printer"]
                    message = await next_message(ws)
                    if message["type"] == "status":
                        doc = apply_patch(doc, message["patch"])
                return doc

            r = api.post("/api/v1/heaters/heater_bed/target", json={"target": 40.0})
            assert r.status_code == 200, r.text
            await until(40.0)
            api.post("/api/v1/heaters/heater_bed/target", json={"target": 0.0})
            await until(0.0)
            # The document built from patches is the service's.
            current = api.status()
            assert doc["state"] == current["state"]
            assert doc["printer"]["homed_axes"] == current["printer"]["homed_axes"]
    asyncio.run(scenario())


def test_an_api_key_and_a_one_time_ticket_authenticate(service, api):
    r = api.post("/api/v1/api_keys", role="admin", json={"name": "screen", "role": "viewer"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]

    async def scenario():
        async with connect(ws_url(service), additional_headers={"X-Api-Key": key}) as ws:
            assert (await next_message(ws))["type"] == "hello"
        r = api.post("/api/v1/ws/ticket", role="viewer")
        assert r.status_code == 201, r.text
        ticket = r.json()["ticket"]
        async with connect(ws_url(service, f"ticket={ticket}")) as ws:
            assert (await next_message(ws))["type"] == "hello"
        # Once only.
        async with connect(ws_url(service, f"ticket={ticket}")) as ws:
            code, reason = await closed_with(ws)
        assert code == 1008 and "ticket" in reason
    asyncio.run(scenario())


@pytest.mark.parametrize("headers, query, words", [
    ({}, "", "token"),
    ({"Authorization": "Bearer not-a-token"}, "", "token"),
    ({"X-Api-Key": "phk_nothing_here"}, "", "API key"),
    ({}, "ticket=made-up", "ticket"),
])
def test_a_bad_credential_is_closed_with_1008(service, headers, query, words):
    async def scenario():
        async with connect(ws_url(service, query), additional_headers=headers) as ws:
            return await closed_with(ws)
    code, reason = asyncio.run(scenario())
    assert code == 1008 and words.lower() in reason.lower(), reason


def test_a_revoked_token_closes_its_connection(service, api):
    r = api.http.post("/api/v1/auth/login",
                      json={"username": "viewer", "password": PASSWORDS["viewer"]})
    token = r.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}

    async def scenario():
        async with connect(ws_url(service), additional_headers=bearer) as ws:
            assert (await next_message(ws))["type"] == "hello"
            assert api.http.post("/api/v1/auth/logout", headers=bearer).status_code == 200
            started = time.monotonic()
            code, reason = await closed_with(ws)
            return code, reason, time.monotonic() - started
    code, reason, after_s = asyncio.run(scenario())
    assert code == 1008 and "revoked" in reason
    assert after_s < 10.0  # checked every 5 s


def test_the_temperature_history_has_a_past(service, api):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        history = api.get("/api/v1/temperatures").json()
        if len(history["times"]) >= 3:
            break
        time.sleep(0.2)
    assert history["period_s"] == 1.0
    n = len(history["times"])
    assert n >= 3 and history["times"] == sorted(history["times"])
    for name in ("extruder", "heater_bed"):
        series = history["heaters"][name]
        assert len(series["temperature"]) == len(series["target"]) == len(series["power"]) == n
        assert isinstance(series["temperature"][-1], float)
    assert api.http.get("/api/v1/temperatures").status_code == 401


def test_fifty_clients_while_printing(service, api, tmp_path):
    """Every client gets status at the configured rate while a print runs, a job event
    reaches all of them, and the control loop keeps every deadline."""
    window_s = 6.0
    job_id = api.print_text(tmp_path, "squares.gcode", SQUARES)
    api.wait_for(lambda s: s["job"]["state"] == "printing" and s["printer"]["homed_axes"],
                 timeout_s=60, what="printing after homing")
    headers = api.auth("viewer")

    latest: dict[int, dict] = {}
    cpu: list[float] = []

    def api_cpu_s() -> float:
        """CPU seconds of the API process (the supervisor), from /proc."""
        fields = open(f"/proc/{service.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def one_client(i: int, results: list, stop: asyncio.Event):
        async with connect(ws_url(service), additional_headers=headers) as ws:
            hello = await next_message(ws)
            assert hello["type"] == "hello"
            arrivals, events, doc = [], [], hello["status"]
            while not stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                if message["type"] == "status":
                    arrivals.append(time.monotonic())
                    doc = apply_patch(doc, message["patch"])
                    latest[i] = doc
                elif message["type"] == "event":
                    events.append(message["data"])
            results.append((arrivals, events, doc))

    async def scenario():
        results: list = []
        stop = asyncio.Event()
        idle_before = api_cpu_s()
        await asyncio.sleep(3.0)            # the API process with no client, for comparison
        cpu.append(api_cpu_s() - idle_before)
        tasks = [asyncio.create_task(one_client(i, results, stop)) for i in range(50)]
        await asyncio.sleep(2.0)            # all connected
        before = api.status()["printer"]["control"]
        cpu_before = api_cpu_s()
        window = (time.monotonic(), time.monotonic() + window_s)
        await asyncio.sleep(window_s)
        cpu.append(api_cpu_s() - cpu_before)
        r = api.post("/api/v1/cancel", json={})
        assert r.status_code == 200, r.text
        # Until every client's document says the job ended (the park move takes a while).
        deadline = time.monotonic() + 30
        while not all((latest.get(i, {}).get("job") or {}).get("state") == "cancelled"
                      for i in range(50)):
            assert time.monotonic() < deadline, "not every client saw the job cancelled"
            await asyncio.sleep(0.1)
        stop.set()
        after = api.status()["printer"]["control"]
        await asyncio.gather(*tasks)
        return results, before, after, window

    results, before, after, (start, end) = asyncio.run(scenario())
    assert len(results) == 50
    expected = RATE_HZ * window_s
    counts = sorted(sum(1 for t in arrivals if start <= t < end) for arrivals, _, _ in results)
    print(f"\n50 clients, {window_s} s: patches per client min {counts[0]}, median "
          f"{counts[25]}, max {counts[-1]} (expected ~{expected:.0f}); API process "
          f"{cpu[1] / window_s * 100:.1f} % of a core (no client: {cpu[0] / 3.0 * 100:.1f} %); "
          f"control loop overruns "
          f"{before['overruns']} -> {after['overruns']}")
    assert counts[0] >= 0.75 * expected
    assert counts[-1] <= expected + 2              # the window's edges
    for _, events, doc in results:
        assert {"id": job_id, "state": "cancelled"}.items() <= (doc.get("job") or {}).items()
        states = [e["state"] for e in events if e["id"] == job_id]
        assert states and states[-1] == "cancelled", states
    assert after["overruns"] == before["overruns"]


def test_more_clients_than_allowed_are_told_to_try_later(service, api):
    headers = api.auth("viewer")

    async def scenario():
        sockets = []
        try:
            for _ in range(MAX_WS):
                ws = await connect(ws_url(service), additional_headers=headers)
                assert (await next_message(ws))["type"] == "hello"
                sockets.append(ws)
            async with connect(ws_url(service), additional_headers=headers) as extra:
                return await closed_with(extra)
        finally:
            for ws in sockets:
                await ws.close()
    code, reason = asyncio.run(scenario())
    assert code == 1013 and "try again later" in reason
    # The connections are gone from the count: a new client is served again.

    async def again():
        async with connect(ws_url(service), additional_headers=headers) as ws:
            try:
                return (await next_message(ws))["type"]
            except ConnectionClosed:
                return "closed"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if asyncio.run(again()) == "hello":
            break
        time.sleep(0.2)
    else:
        raise AssertionError("never served again after the others closed")
