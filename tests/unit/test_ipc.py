"""The status block (seqlock over shared memory) and the command channel (pipe + asyncio)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import struct
import sys
import threading
import time
from multiprocessing import shared_memory

import pytest

from printhost.ipc.channel import (
    ChannelClosed,
    Command,
    CommandClient,
    CommandServer,
    CommandTimeout,
    ErrorKind,
    Reply,
    Request,
)
from printhost.ipc.status import HEADER, StatusBlock, StatusBlockError

# --------------------------------------------------------------------------- status block


@pytest.fixture
def block():
    b = StatusBlock.create(size=64 * 1024)
    yield b
    b.close()


def _sequence(b: StatusBlock) -> int:
    return struct.unpack_from("<Q", b._shm.buf, 0)[0]


def test_fresh_block_reads_as_never_written(block):
    assert block.read() == (0, None)
    assert block.read_raw() == (0, b"")


def test_write_read_round_trip_in_the_same_process(block):
    reader = StatusBlock.attach(block.name)
    try:
        snapshot = {"state": "printing", "temps": [210.5, 60.0], "job": {"id": "j1"},
                    "text": "ünïcødé", "none": None}
        block.write(snapshot)
        seq, got = reader.read()
        assert got == snapshot
        assert seq == 2
        assert block.read() == (seq, snapshot)
    finally:
        reader.close()


def test_sequence_is_even_after_every_write_and_increases(block):
    reader = StatusBlock.attach(block.name)
    try:
        seen = []
        for i in range(50):
            block.write({"i": i, "pad": "x" * (i * 37 % 300)})
            seq, snap = reader.read()
            assert snap["i"] == i
            seen.append(seq)
        assert all(s % 2 == 0 for s in seen)
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert seen[-1] == 100
    finally:
        reader.close()


def test_shorter_snapshot_after_a_longer_one_is_not_padded(block):
    block.write({"pad": "y" * 5000})
    block.write({"a": 1})
    seq, raw = block.read_raw()
    assert raw == b'{"a":1}'
    assert seq == 4


def test_snapshot_too_big_raises_and_keeps_the_previous_one():
    b = StatusBlock.create(size=4096)
    try:
        capacity = b._shm.size - HEADER.size
        b.write({"ok": True})
        before = b.read()
        # {"p":"..."} is 8 bytes of framing around the string
        b.write({"p": "x" * (capacity - 8)})  # exactly fills the block
        assert len(b.read_raw()[1]) == capacity
        with pytest.raises(StatusBlockError, match="exceeds the block"):
            b.write({"p": "x" * (capacity - 7)})
        seq, snap = b.read()
        assert snap == {"p": "x" * (capacity - 8)}
        assert seq == before[0] + 2  # the refused write left no trace, not even an odd sequence
    finally:
        b.close()


def test_a_non_finite_number_reads_as_no_value(block):
    """JSON has no NaN: a non-finite number that reaches a snapshot is written as null,
    what status uses for "no value", so it can never be read as a number (and a write
    never raises in the control loop over it)."""
    block.write({"t": float("nan"), "u": float("inf"), "v": -float("inf"), "w": 1.5})
    assert block.read()[1] == {"t": None, "u": None, "v": None, "w": 1.5}
    assert _sequence(block) % 2 == 0


def test_numpy_values_and_non_string_keys_are_written_as_json_would(block):
    import numpy as np
    block.write({"p": [round(np.float64(1.23456), 2), np.int64(3)], "a": np.arange(3),
                 "b": np.bool_(True), "k": {1: "one", 2.5: np.float32(0.5)}})
    assert block.read()[1] == {"p": [1.23, 3], "a": [0, 1, 2], "b": True,
                               "k": {"1": "one", "2.5": 0.5}}


def test_reader_never_sees_a_torn_snapshot(block):
    # A tiny switch interval lets the writer thread be preempted between the steps of
    # a write; a reader that ignored the sequence then sees torn payloads within
    # milliseconds (checked while writing this test), so this run is a real probe.
    reader = StatusBlock.attach(block.name)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            block.write({"n": i, "pad": "x" * (i % 1000), "check": i * 7})
            written[0] = i

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    reads = 0
    distinct: set[int] = set()
    last_n = last_seq = 0
    deadline = time.monotonic() + 2.0
    try:
        # Stop once enough different writes were seen; the deadline only bounds a
        # heavily loaded machine.
        while (len(distinct) < 300 or reads < 3000) and time.monotonic() < deadline:
            try:
                seq, raw = reader.read_raw()
            except StatusBlockError:
                continue  # the writer outran the reader 1000 times in a row: not torn
            if seq == 0:
                continue
            snap = json.loads(raw)  # a torn payload would usually not even decode
            assert seq % 2 == 0
            assert snap["check"] == snap["n"] * 7
            assert snap["pad"] == "x" * (snap["n"] % 1000)
            assert snap["n"] >= last_n and seq >= last_seq
            assert seq == 2 * snap["n"]  # one write, one step of two
            last_n, last_seq = snap["n"], seq
            distinct.add(snap["n"])
            reads += 1
    finally:
        stop.set()
        sys.setswitchinterval(old_interval)
        t.join(5)
        reader.close()
    assert not t.is_alive()
    assert reads >= 300
    assert len(distinct) >= 30  # reads really interleaved with many different writes
    assert written[0] > 30


def _child_attach(name: str, results) -> None:
    block = StatusBlock.attach(name)
    try:
        seq, snap = block.read()
        results.put((seq, snap))
        block.write({"from": "child", "seen": snap["n"]})
    finally:
        block.close()


def test_spawned_process_attaches_reads_and_leaves_the_segment_alive(block):
    block.write({"n": 41})
    block.write({"n": 42})
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child_attach, args=(block.name, results))
    proc.start()
    try:
        seq, snap = results.get(timeout=20)
    finally:
        proc.join(20)
    assert proc.exitcode == 0
    assert (seq, snap) == (4, {"n": 42})
    # The child's attach continued the sequence, and its exit did not unlink anything.
    assert block.read() == (6, {"from": "child", "seen": 42})
    again = shared_memory.SharedMemory(name=block.name)
    try:
        assert again.size >= HEADER.size
    finally:
        again.close()


def test_owner_close_unlinks_but_attacher_close_does_not():
    owner = StatusBlock.create(size=4096)
    name = owner.name
    attached = StatusBlock.attach(name)
    attached.close()
    StatusBlock.attach(name).close()  # still there
    owner.close()
    with pytest.raises(FileNotFoundError):
        StatusBlock.attach(name)


def test_read_gives_up_while_a_write_never_finishes(block):
    block.write({"a": 1})
    struct.pack_into("<Q", block._shm.buf, 0, 3)  # a writer stuck half-way
    with pytest.raises(StatusBlockError, match="too fast"):
        block.read()


# --------------------------------------------------------------------------- wire format


def test_request_wire_round_trip():
    req = Request(7, Command.PRINT, {"job_id": "j", "file": "a b.gcode", "path": "/x/a b.gcode"})
    wire = req.to_wire()
    assert wire == {"id": 7, "command": "print",
                    "args": {"job_id": "j", "file": "a b.gcode", "path": "/x/a b.gcode"}}
    assert type(wire["command"]) is str  # plain data, no pickled enum
    assert json.loads(json.dumps(wire)) == wire
    assert Request.from_wire(wire) == req
    assert Request.from_wire({"id": 1, "command": "ping"}) == Request(1, Command.PING, {})


def test_reply_wire_round_trip():
    ok = Reply(3, True, {"job_id": "j"})
    assert Reply.from_wire(ok.to_wire()) == ok
    assert ok.to_wire()["error"] is None
    bad = Reply(4, False, {}, ErrorKind.CONFLICT, "printer is busy")
    wire = bad.to_wire()
    assert wire == {"id": 4, "ok": False, "result": {}, "error": "conflict",
                    "message": "printer is busy"}
    assert type(wire["error"]) is str
    assert json.loads(json.dumps(wire)) == wire
    assert Reply.from_wire(wire) == bad


# --------------------------------------------------------------------------- channel


def _pipe():
    return multiprocessing.Pipe(duplex=True)


async def _poll_until(server: CommandServer, count: int, timeout: float = 5.0) -> list[Request]:
    got: list[Request] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += server.poll()
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(got)} of {count} requests arrived")
        await asyncio.sleep(0.001)
    return got


def test_replies_out_of_order_reach_the_right_request():
    async def scenario():
        a, b = _pipe()
        client, server = CommandClient(a), CommandServer(b)
        client.start(asyncio.get_running_loop())
        try:
            tasks = [asyncio.create_task(client.request(Command.PING, {"k": k}, timeout_s=5))
                     for k in range(5)]
            reqs = await _poll_until(server, 5)
            assert [r.args["k"] for r in reqs] == list(range(5))
            assert len({r.id for r in reqs}) == 5
            for r in reversed(reqs):
                server.ok(r, echo=r.args["k"], id=r.id)
            replies = await asyncio.gather(*tasks)
            for k, reply in enumerate(replies):
                assert reply.ok and reply.result["echo"] == k
                assert reply.id == reply.result["id"]
            assert client._pending == {}
        finally:
            client.close()
            b.close()

    asyncio.run(scenario())


def test_error_reply_is_returned_not_raised():
    async def scenario():
        a, b = _pipe()
        client, server = CommandClient(a), CommandServer(b)
        client.start(asyncio.get_running_loop())
        try:
            task = asyncio.create_task(client.request(Command.PAUSE))
            (req,) = await _poll_until(server, 1)
            assert req.command is Command.PAUSE and req.args == {}
            server.fail(req, ErrorKind.CONFLICT, "not printing")
            reply = await task
            assert (reply.ok, reply.error, reply.message) == (False, ErrorKind.CONFLICT,
                                                              "not printing")
        finally:
            client.close()
            b.close()

    asyncio.run(scenario())


def test_timeout_then_late_reply_is_ignored():
    async def scenario():
        a, b = _pipe()
        client, server = CommandClient(a), CommandServer(b)
        client.start(asyncio.get_running_loop())
        try:
            with pytest.raises(CommandTimeout, match="no reply to cancel"):
                await client.request(Command.CANCEL, timeout_s=0.05)
            (late,) = await _poll_until(server, 1)
            assert client._pending == {}
            server.ok(late, which="late")
            # The next request must get its own reply, not the late one ahead of it.
            task = asyncio.create_task(client.request(Command.PING, timeout_s=5))
            (req,) = await _poll_until(server, 1)
            assert req.id != late.id
            server.ok(req, which="current")
            reply = await task
            assert reply.id == req.id and reply.result == {"which": "current"}
            assert not client.closed
        finally:
            client.close()
            b.close()

    asyncio.run(scenario())


def test_closing_the_server_end_fails_pending_requests():
    async def scenario():
        a, b = _pipe()
        client, server = CommandClient(a), CommandServer(b)
        client.start(asyncio.get_running_loop())
        try:
            tasks = [asyncio.create_task(client.request(Command.PING, timeout_s=10))
                     for _ in range(3)]
            await _poll_until(server, 3)
            started = time.monotonic()
            b.close()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert time.monotonic() - started < 5  # not the 10 s timeout
            assert all(isinstance(r, ChannelClosed) for r in results), results
            assert client.closed
            with pytest.raises(ChannelClosed):
                await client.request(Command.PING)
            assert client.send_nowait(Command.SHUTDOWN) is False
        finally:
            client.close()

    asyncio.run(scenario())


def test_malformed_reply_does_not_break_the_client():
    async def scenario():
        a, b = _pipe()
        client, server = CommandClient(a), CommandServer(b)
        client.start(asyncio.get_running_loop())
        try:
            task = asyncio.create_task(client.request(Command.PING, timeout_s=5))
            (req,) = await _poll_until(server, 1)
            b.send({"nonsense": True})
            b.send("not even a dict")
            server.ok(req, fine=True)
            reply = await task
            assert reply.result == {"fine": True}
            assert not client.closed
        finally:
            client.close()
            b.close()

    asyncio.run(scenario())


def test_request_before_start_or_after_close_raises_channel_closed():
    async def scenario():
        a, b = _pipe()
        client = CommandClient(a)
        with pytest.raises(ChannelClosed):
            await client.request(Command.PING)
        client.start(asyncio.get_running_loop())
        client.close()
        with pytest.raises(ChannelClosed):
            await client.request(Command.PING)
        b.close()

    asyncio.run(scenario())


def test_send_nowait_delivers_without_waiting():
    a, b = _pipe()
    client, server = CommandClient(a), CommandServer(b)
    try:
        assert client.send_nowait(Command.SHUTDOWN, {"why": "signal"}) is True
        assert b.poll(5)
        (req,) = server.poll()
        assert req.command is Command.SHUTDOWN and req.args == {"why": "signal"}
    finally:
        a.close()
        b.close()


def test_server_poll_on_an_empty_pipe_returns_at_once():
    a, b = _pipe()
    server = CommandServer(b)
    result: list = []
    t = threading.Thread(target=lambda: result.append(server.poll()), daemon=True)
    t.start()
    t.join(2)
    try:
        assert not t.is_alive(), "poll blocked on an empty pipe"
        assert result == [[]]
        assert not server.closed
    finally:
        a.close()
        b.close()


def test_server_poll_drops_malformed_messages_and_keeps_good_ones():
    a, b = _pipe()
    server = CommandServer(b)
    try:
        for msg in ({"id": 1, "command": "ping"},
                    {"command": "ping"},                       # no id
                    {"id": "x", "command": "ping"},            # id not a number
                    {"id": 2, "command": "explode"},           # unknown command
                    {"id": 3, "command": "pause", "args": "ab"},  # args not a mapping
                    42, None, "ping", [1, 2],                   # not a dict at all
                    {"id": 4, "command": "resume", "args": {"x": 1}}):
            a.send(msg)
        assert b.poll(5)
        got: list[Request] = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += server.poll()
        assert got == [Request(1, Command.PING, {}), Request(4, Command.RESUME, {"x": 1})]
        assert not server.closed
        assert server.poll() == []
    finally:
        a.close()
        b.close()


def test_server_poll_respects_its_limit():
    a, b = _pipe()
    server = CommandServer(b)
    try:
        for i in range(40):
            a.send(Request(i + 1, Command.PING).to_wire())
        first = server.poll(limit=32)
        rest = server.poll(limit=32)
        assert [r.id for r in first + rest] == list(range(1, 41))
        assert len(first) == 32
    finally:
        a.close()
        b.close()


def test_server_notices_the_client_going_away():
    a, b = _pipe()
    server = CommandServer(b)
    a.close()
    assert server.poll() == []
    assert server.closed
    server.reply(Reply(1, True))  # silently dropped, no exception
    b.close()
