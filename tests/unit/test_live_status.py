"""Live status: merge patches, job events, the temperature history, and a slow client
dropped without holding up the others."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from printhost.api.live import (CLIENT_QUEUE, CLOSE_TOO_SLOW, HISTORY_S, Client, LiveStatus,
                                apply_patch, merge_patch)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-2, 2, allow_nan=False)
    | st.text("ab", max_size=2),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from("xyz"), children, max_size=3), max_leaves=12)
json_docs = st.dictionaries(st.sampled_from("abcd"), json_values, max_size=4)


def _without_nulls(doc):
    """What a client holds after applying patches: RFC 7386 has no null members."""
    if isinstance(doc, dict):
        return {k: _without_nulls(v) for k, v in doc.items() if v is not None}
    return doc


@settings(max_examples=400, deadline=None, database=None)
@given(json_docs, json_docs)
def test_a_patch_turns_the_old_document_into_the_new(old, new):
    patch = merge_patch(old, new)
    if patch is merge_patch({}, {}):  # unchanged
        assert _without_nulls(old) == _without_nulls(new) or old == new
        return
    assert _without_nulls(apply_patch(_without_nulls(old), patch)) == _without_nulls(new)


def test_a_patch_carries_only_what_changed():
    old = {"state": "printing", "job": {"id": "a", "progress": 0.1, "line": 3},
           "printer": {"position": [1.0, 2.0, 3.0], "hotend_temp": 200.0}, "error": None}
    new = {"state": "printing", "job": {"id": "a", "progress": 0.2, "line": 3},
           "printer": {"position": [1.0, 2.5, 3.0], "hotend_temp": 200.0}, "error": None}
    assert merge_patch(old, new) == {"job": {"progress": 0.2},
                                     "printer": {"position": [1.0, 2.5, 3.0]}}
    assert merge_patch(new, dict(new, job=None)) == {"job": None}


class FakeStatus:
    def __init__(self) -> None:
        self.doc = {"state": "idle", "job": None,
                    "printer": {"heaters": {"extruder": {"temperature": 21.0, "target": 0.0,
                                                        "power": 0.0}}}}

    def __call__(self):
        return orjson.loads(orjson.dumps(self.doc))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_patches_at_the_rate_events_at_once_and_history_at_1_hz():
    async def scenario():
        status, clock = FakeStatus(), Clock()
        live = LiveStatus(status, rate_hz=4.0, clock=clock, wall=lambda: 1.7e9 + clock.t)
        received: list[dict] = []

        async def send(data: bytes) -> None:
            received.append(orjson.loads(data))

        async def close(code: int, reason: str) -> None:
            pass

        client = Client("test", send, close)
        base = live.join(client)
        assert base["state"] == "idle"
        sender = asyncio.create_task(client.run_sender())
        for step in range(40):              # 4 s at 10 samples a second
            status.doc["printer"]["heaters"]["extruder"]["temperature"] = 21.0 + step
            if step == 5:
                status.doc["job"] = {"id": "j1", "file": "a.gcode", "state": "printing",
                                     "error": None}
                status.doc["state"] = "printing"
            if step == 6:
                status.doc["job"]["state"] = "paused"
            live.sample()
            clock.t = 100.0 + (step + 1) * 0.1
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        sender.cancel()
        return live, received, base

    live, received, base = asyncio.run(scenario())
    patches = [m for m in received if m["type"] == "status"]
    events = [m for m in received if m["type"] == "event"]
    # 4 s at 4 Hz: 16 sends, every one with a change.
    assert 15 <= len(patches) <= 17
    doc = base
    for m in patches:
        doc = apply_patch(doc, m["patch"])
    # The document a client holds is the one of the last send (within 250 ms of the end).
    assert doc["printer"]["heaters"]["extruder"]["temperature"] >= 21.0 + 36
    # Both job changes, each the moment it was seen (samples 100 ms apart, sends 250 ms).
    assert [(e["data"]["state"], e["data"]["previous_state"]) for e in events] == [
        ("printing", None), ("paused", "printing")]
    history = live.history()
    assert history["period_s"] == 1.0 and len(history["times"]) == 4
    temps = history["heaters"]["extruder"]["temperature"]
    assert temps == [21.0, 31.0, 41.0, 51.0]


def test_a_client_that_does_not_read_is_dropped_and_the_others_keep_receiving():
    async def scenario():
        live = LiveStatus(FakeStatus(), rate_hz=4.0)
        stuck = asyncio.Event()
        closed: list[tuple[int, str]] = []
        fast_received: list[bytes] = []

        async def never_returns(data: bytes) -> None:
            await stuck.wait()              # a peer whose socket never drains

        async def quick(data: bytes) -> None:
            fast_received.append(data)

        async def close(code: int, reason: str) -> None:
            closed.append((code, reason))

        slow, fast = Client("slow", never_returns, close), Client("fast", quick, close)
        live.join(slow)
        live.join(fast)
        tasks = [asyncio.create_task(c.run_sender()) for c in (slow, fast)]
        for i in range(CLIENT_QUEUE + 5):
            live.broadcast({"type": "status", "patch": {"n": i}})
            await asyncio.sleep(0)
        stuck.set()                         # let the slow sender reach its close
        await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        return live, slow, fast, closed, fast_received

    live, slow, fast, closed, fast_received = asyncio.run(scenario())
    assert slow.dropped == "client reads too slowly" and slow not in live.clients
    assert closed == [(CLOSE_TOO_SLOW, "client reads too slowly")]
    assert fast.dropped is None and fast in live.clients
    assert len(fast_received) == CLIENT_QUEUE + 5


def test_history_is_bounded_and_a_new_heater_has_an_unknown_past():
    status, clock = FakeStatus(), Clock()
    live = LiveStatus(status, rate_hz=4.0, clock=clock)
    for _ in range(HISTORY_S + 30):
        live.sample()
        clock.t += 1.0
    status.doc["printer"]["heaters"]["chamber"] = {"temperature": 30.0, "target": None,
                                                   "power": None}
    live.sample()
    history = live.history()
    assert len(history["times"]) == HISTORY_S
    chamber = history["heaters"]["chamber"]["temperature"]
    assert len(chamber) == HISTORY_S and chamber[-1] == 30.0 and chamber[0] is None
    assert history["heaters"]["chamber"]["target"][-1] is None


@pytest.mark.parametrize("rate", [0.5, 20.0])
def test_the_send_rate_follows_the_setting(rate):
    status, clock = FakeStatus(), Clock()
    live = LiveStatus(status, rate_hz=rate, clock=clock)
    sent: list[bytes] = []
    client = Client("c", None, None)  # type: ignore[arg-type]
    client.offer = lambda data: sent.append(data) or True  # type: ignore[method-assign]
    live.join(client)
    for step in range(100):               # 10 s at 10 samples a second
        status.doc["printer"]["heaters"]["extruder"]["temperature"] = float(step)
        live.sample()
        clock.t += 0.1
    expected = 10 * min(rate, 10.0)       # never more often than the status is sampled
    assert abs(len(sent) - expected) <= 1


def test_a_client_joining_between_sends_ends_with_the_same_document():
    async def scenario():
        status, clock = FakeStatus(), Clock()
        live = LiveStatus(status, rate_hz=4.0, clock=clock)
        inboxes: dict[str, list] = {"early": [], "late": []}
        bases = {}

        def sender(name):
            async def send(data: bytes) -> None:
                inboxes[name].append(orjson.loads(data))
            return send

        async def close(code, reason):
            pass

        clients = {}
        tasks = []
        for step in range(30):
            if step in (0, 13):             # 13: between two sends, after a change
                name = "early" if step == 0 else "late"
                clients[name] = Client(name, sender(name), close)
                bases[name] = live.join(clients[name])
                tasks.append(asyncio.create_task(clients[name].run_sender()))
            status.doc["printer"]["heaters"]["extruder"]["target"] = float(step // 3)
            live.sample()
            clock.t = 100.0 + (step + 1) * 0.1
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        return inboxes, bases, status()

    inboxes, bases, final = asyncio.run(scenario())
    docs = {}
    for name in ("early", "late"):
        doc = bases[name]
        for message in inboxes[name]:
            doc = apply_patch(doc, message["patch"])
        docs[name] = doc
    # Both hold the document of the last send (the last change, at step 29, is 9.0).
    assert docs["early"] == docs["late"]
    assert docs["late"]["printer"]["heaters"]["extruder"]["target"] >= 8.0
