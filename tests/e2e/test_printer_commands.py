"""Printer commands on the running service: typed commands and raw G-code go through
the API's command log to the control process and back, each recorded with who sent it
and how it ended; refusals are 409/400 with the command's id and a reason; the
WebSocket tells of every change (`command`) and of what the printer answered
(`gcode_response`)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from conftest import NO_RATE_LIMIT, Api, Service, running

pytestmark = pytest.mark.e2e

DEVICES = """
[devices.psu]
pin = "GPIO17"

[devices.light]
pin = "GPIO12"
"""
# A print long enough to find it printing, and to pause it (cancelled by the tests).
LONG = "G28\nG1 Z5 F600\n" + "G1 X20 Y20 F1200\nG1 X200 Y200\n" * 200


@pytest.fixture(scope="module")
def running_service(tmp_path_factory):
    with running(Service(tmp_path_factory.mktemp("commands"), server_extra=NO_RATE_LIMIT,
                         extra_config=DEVICES)) as both:
        yield both


def send(api: Api, what: str, body: dict | None = None, role: str = "operator"):
    return api.post(f"/api/v1/printer/{what}", role=role, json=body if body is not None else {})


def record(api: Api, command_id: str) -> dict:
    r = api.get(f"/api/v1/commands/{command_id}")
    assert r.status_code == 200, r.text
    return r.json()


def ended(api: Api, command_id: str, timeout_s: float = 60.0) -> dict:
    """The command's record once it has completed or failed (the supervisor copies the
    printer's results ten times a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rec = record(api, command_id)
        if rec["state"] in ("completed", "failed"):
            return rec
        assert time.monotonic() < deadline, f"still {rec['state']}: {rec}"
        time.sleep(0.05)


def accepted(api: Api, what: str, body: dict | None = None) -> dict:
    r = send(api, what, body)
    assert r.status_code == 202, r.text
    rec = r.json()
    assert rec["state"] in ("acknowledged", "running", "completed"), rec
    return ended(api, rec["id"])


def idle(api: Api) -> None:
    api.wait_for(lambda s: s["state"] == "idle" and not s["printer"]["console"]["busy"],
                 what="an idle printer")


def test_home_jog_and_ask_where_the_toolhead_is(api):
    idle(api)
    r = send(api, "move", {"x": 5})
    if r.status_code == 409:       # a fresh printer: nothing homed yet
        assert r.json()["error"].startswith("must home axis first")
        assert record(api, r.json()["command_id"])["state"] == "failed"
    done = accepted(api, "home")
    assert done["state"] == "completed" and done["kind"] == "home"
    assert done["user"] == "operator" and done["args"] == {"axes": "xyz"}
    assert api.status()["printer"]["homed_axes"] == "xyz"
    assert accepted(api, "move", {"x": 30, "y": 40, "speed": 100})["state"] == "completed"
    assert accepted(api, "move", {"z": 2})["state"] == "completed"
    where = accepted(api, "gcode", {"script": "M114"})
    assert where["responses"] == [where["message"]]
    x, y, z = (float(part.split(":")[1]) for part in where["message"].split()[:3])
    assert (x, y, z) == (30.0, 40.0, 2.0)
    assert api.status()["printer"]["position"] == [30.0, 40.0, 2.0]
    r = send(api, "move", {"x": -100})
    assert r.status_code == 400
    assert r.json()["error"] == "move out of range: X=-70.000 is outside 0.000..235.000"
    listed = api.get("/api/v1/commands", params={"kind": "move", "limit": 2}).json()["commands"]
    assert len(listed) == 2 and listed[0]["created_at"] >= listed[1]["created_at"]
    assert listed[0]["state"] == "failed"            # the last: out of range


def test_fan_factors_and_light_show_in_the_status_at_once(api):
    idle(api)
    for what, body in (("fan", {"speed": 0.5}), ("factors", {"speed": 120, "flow": 95}),
                       ("outputs/light", {"value": 0.25})):
        r = send(api, what, body)
        assert r.status_code == 202 and r.json()["state"] == "completed", r.text
    printer = api.status()["printer"]
    assert printer["fan_speed"] == pytest.approx(0.5, abs=0.003)
    assert printer["speed_factor"] == 1.2 and printer["extrude_factor"] == 0.95
    assert printer["devices"]["light"] == 0.25
    for what, body in (("fan", {"speed": 0}), ("factors", {"speed": 100, "flow": 100}),
                       ("outputs/light", {"value": 0})):
        assert send(api, what, body).status_code == 202


def test_extruding_cold_is_refused_and_works_once_hot(api):
    idle(api)
    if (api.status()["printer"]["hotend_temp"] or 0) < 170:
        for what, body in (("extrude", {"length": 5}), ("filament/load", None)):
            r = send(api, what, body)
            assert r.status_code == 409, r.text
            assert "min_extrude_temp" in r.json()["error"] and r.json()["command_id"]
    heat = send(api, "heat", {"extruder": 200})
    assert heat.status_code == 202 and heat.json()["state"] == "completed"
    api.wait_for(lambda s: (s["printer"]["hotend_temp"] or 0) >= 175, 120, "a hot hotend")
    e0 = api.status()["printer"]["extruder_position"]
    assert accepted(api, "extrude", {"length": 4, "speed": 10})["state"] == "completed"
    assert accepted(api, "filament/unload")["state"] == "completed"
    assert api.status()["printer"]["extruder_position"] == pytest.approx(e0 + 4 + 5 - 50)
    cool = send(api, "cool")
    assert cool.status_code == 202 and cool.json()["state"] == "completed"
    assert api.status()["printer"]["target_hotend_temp"] == 0.0


def test_bad_bodies_and_unknown_g_code_are_400_and_nothing_runs(api):
    idle(api)
    cases = [
        ("heat", {"extruder": 900}, "extruder"),
        ("heat", {"nozzle": 100}, "nozzle"),
        ("heat", {}, "extruder"),
        ("fan", {"speed": 1.5}, "speed"),
        ("move", {}, "x"),
        ("move", {"x": "far"}, "x"),
        ("home", {"axes": "xq"}, "axes"),
        ("factors", {"speed": 0}, "speed"),
        ("extrude", {"length": 1, "extra": 1}, "extra"),
    ]
    for what, body, field in cases:
        r = send(api, what, body)
        assert r.status_code == 400 and field in r.json().get("fields", {}), (what, r.text)
    r = send(api, "gcode", {"script": "G28 X\nG29"})
    assert r.status_code == 400 and r.json()["error"] == "line 2: unknown command G29"
    assert record(api, r.json()["command_id"])["state"] == "failed"
    r = send(api, "outputs/heater", {"value": 1})
    assert r.status_code == 400          # not an output name (path parameter)
    r = send(api, "fan", {"speed": 0.5}, role="viewer")
    assert r.status_code == 403


def test_while_printing_only_what_does_not_move_and_while_paused_more(api, tmp_path):
    idle(api)
    job = api.print_text(tmp_path, "cmd-long.gcode", LONG)
    api.wait_for(lambda s: s["state"] == "printing" and (s["job"] or {}).get("line", 0) > 3,
                 what="printing")
    for what, body in (("move", {"x": 1}), ("home", None), ("gcode", {"script": "G1 X5"}),
                       ("outputs/psu", {"value": 0})):
        r = send(api, what, body)
        assert r.status_code == 409, (what, r.text)
    r = send(api, "gcode", {"script": "M106 S255\nM220 S110"})
    assert r.status_code == 202 and r.json()["state"] == "completed"
    assert api.status()["printer"]["speed_factor"] == 1.1
    assert api.post("/api/v1/pause").status_code == 200
    api.wait_for(lambda s: s["state"] == "paused", what="paused")
    assert send(api, "home").status_code == 409
    assert accepted(api, "move", {"x": 10, "y": -10})["state"] == "completed"
    assert api.post("/api/v1/resume").status_code == 200
    api.wait_for(lambda s: s["state"] == "printing", what="printing again")
    assert api.post("/api/v1/cancel").status_code == 200
    api.wait_for(lambda s: (s["job"] or {}).get("id") == job
                 and s["job"]["state"] == "cancelled", what="cancelled")


def test_cancel_stops_a_running_command_and_records_why(api):
    idle(api)
    accepted(api, "home")
    r = send(api, "gcode", {"script": "G4 P600000\nM400"})
    assert r.status_code == 202 and r.json()["state"] in ("acknowledged", "running")
    api.wait_for(lambda s: s["printer"]["console"]["current"] == r.json()["id"],
                 what="the command running")
    assert api.post("/api/v1/print", json={"file": "cmd-long.gcode"}).status_code == 409
    assert api.post("/api/v1/cancel").status_code == 200
    rec = ended(api, r.json()["id"])
    assert rec["state"] == "failed" and rec["message"] == "cancelled"


def test_the_websocket_tells_of_commands_and_g_code_responses(service: Service, api):
    idle(api)
    accepted(api, "home")

    async def watch() -> list[dict]:
        headers = {"Authorization": f"Bearer {api.token('viewer')}"}
        events: list[dict] = []
        async with connect(f"ws://127.0.0.1:{service.port}/api/v1/ws",
                           additional_headers=headers) as ws:
            await asyncio.wait_for(ws.recv(), 10)          # the first snapshot
            r = await asyncio.to_thread(send, api, "gcode", {"script": "G1 X3 Y3 F3000\nM114"})
            assert r.status_code == 202, r.text
            command_id = r.json()["id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("type") != "event":
                    continue
                events.append(msg)
                if (msg["event"] == "command" and msg["data"]["id"] == command_id
                        and msg["data"]["state"] == "completed"):
                    return events
        raise AssertionError(f"no completion event: {events}")

    events = asyncio.run(watch())
    states = [e["data"]["state"] for e in events if e["event"] == "command"]
    # Acknowledged or already running when the reply came, then completed.
    assert states[-1] == "completed" and states[0] in ("acknowledged", "running")
    responses = [e["data"]["response"] for e in events if e["event"] == "gcode_response"]
    assert len(responses) == 1 and responses[0].startswith("X:3.000 Y:3.000 Z:0.000 E:")
