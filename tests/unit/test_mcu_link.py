"""SerialLink against McuWire over a real pseudo-terminal.

The host opens the pty's slave side through pyserial exactly as it opens a board's
/dev/ttyACM0; the MCU end is the firmware-faithful McuWire on the master side, served
by a small loop on a thread of the test. Commands are real queue_step messages from
the simulated MCU's data dictionary, and every check compares what the MCU executed
with what the host sent, message by message. Timeouts are generous upper bounds only.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
import tty

import pytest

from printhost.mcu.codec import MessageCodec
from printhost.mcu.errors import LinkError, ProtocolError
from printhost.mcu.framing import BlockParser, encode_block
from printhost.mcu.link import MIN_RTO_S, SerialLink
from printhost.mcu.sim_dictionary import sim_dictionary
from printhost.sim.mcu.wire import McuWire, WireFaults

HOST = MessageCodec(sim_dictionary())
MCU = MessageCodec(sim_dictionary(), mcu_form=True)


def commands(n: int, start: int = 0) -> list[bytes]:
    """Distinct queue_step commands (the interval numbers them)."""
    return [HOST.encode("queue_step", oid=i % 7, interval=1000 + i, count=1 + i % 300,
                        add=(i % 61) - 30) for i in range(start, start + n)]


def decode_all(payloads: list[bytes], codec: MessageCodec = HOST) -> list[tuple]:
    out = []
    for payload in payloads:
        out.extend((name, tuple(sorted(params.items()))) for name, params in codec.decode(payload))
    return out


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.002) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class McuEnd:
    """A McuWire on a pty master, serviced by a thread as the simulated MCU would be.

    With `respond`, every accepted block is answered with one stepper_position
    response numbered in order, so the other direction carries data too.
    """

    def __init__(self, faults: WireFaults | None = None, *, respond: bool = False,
                 receive_window: int = 192) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.faults = faults if faults is not None else WireFaults(seed=1)
        self.wire = McuWire(self.master, receive_window=receive_window, faults=self.faults)
        self.respond = respond
        self.responses_sent = 0
        self.payloads: list[bytes] = []
        self._actions: queue.Queue = queue.Queue()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            while not self._actions.empty():
                fn, done = self._actions.get()
                fn()
                done.set()
            fd = self.wire.fileno()
            if fd < 0:
                time.sleep(0.005)
                continue
            select.select([fd], [], [], 0.002)
            for payload in self.wire.read_available():
                self.payloads.append(payload)
                if self.respond:
                    self.wire.send(MCU.encode("stepper_position", oid=1,
                                              pos=self.responses_sent))
                    self.responses_sent += 1
            self.wire.flush()

    def call(self, fn) -> None:
        """Run fn on the service thread (McuWire is not thread-safe) and wait for it."""
        done = threading.Event()
        self._actions.put((fn, done))
        assert done.wait(10.0)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5.0)
        if self.wire.fileno() >= 0:
            self.wire.unplug()
        os.close(self.slave)


@pytest.fixture
def mcu_end():
    ends: list[McuEnd] = []

    def make(*args, **kwargs) -> McuEnd:
        end = McuEnd(*args, **kwargs)
        ends.append(end)
        return end

    yield make
    for end in ends:
        end.close()


@pytest.fixture
def link_for():
    links: list[SerialLink] = []

    def make(path: str, **kwargs) -> SerialLink:
        link = SerialLink(path, **kwargs)
        link.open()
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()


def stream(link: SerialLink, messages: list[bytes], chunk: int = 50) -> None:
    for i in range(0, len(messages), chunk):
        link.send(messages[i:i + chunk])
    assert wait_for(link.idle, 60.0), link.stats()


# ---------------------------------------------------------------------- the MCU end

def test_wire_follows_the_firmware_receive_rules():
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    wire = McuWire(master)
    replies = BlockParser()

    def exchange(data: bytes) -> tuple[list[bytes], list[tuple[int, bytes]]]:
        os.write(slave, data)
        time.sleep(0.01)
        payloads = wire.read_available()
        wire.flush()
        time.sleep(0.01)
        try:
            out = os.read(slave, 4096)
        except BlockingIOError:
            out = b""
        return payloads, replies.feed(out)

    try:
        # In sequence: executed, acked with the next number.
        assert exchange(encode_block(0, b"\x0a")) == ([b"\x0a"], [(1, b"")])
        # Out of sequence: dropped and naked with the expected number, every time.
        assert exchange(encode_block(5, b"\x0b")) == ([], [(1, b"")])
        assert exchange(encode_block(5, b"\x0b")) == ([], [(1, b"")])
        # Sync bytes between blocks are filler: no nak.
        assert exchange(b"\x7e\x7e" + encode_block(1, b"\x0c")) == ([b"\x0c"], [(2, b"")])
        # Damage: skipped to the next sync byte and naked once ...
        assert exchange(b"\x30\x31\x32\x33\x7e") == ([], [(2, b"")])
        # ... but not again while the damage goes on.
        damaged = bytearray(encode_block(2, b"\x0d"))
        damaged[3] ^= 0xFF
        assert exchange(bytes(damaged)) == ([], [])
        # A well-formed block re-arms it.
        assert exchange(encode_block(2, b"\x0d") + b"\x40\x41\x42\x43\x7e") == (
            [b"\x0d"], [(3, b""), (3, b"")])
        # Responses carry the expected number too, one message per block.
        wire.send(b"\x55")
        wire.send(b"\x56")
        assert exchange(b"") == ([], [(3, b"\x55"), (3, b"\x56")])
        # A hung firmware neither reads nor writes; afterwards it catches up.
        wire.faults.hung = True
        assert exchange(encode_block(3, b"\x0e")) == ([], [])
        wire.faults.hung = False
        assert exchange(b"") == ([b"\x0e"], [(4, b"")])
        # After a reset it expects 0 again.
        wire.reset()
        assert exchange(encode_block(4, b"\x0f")) == ([], [(0, b"")])
        assert exchange(encode_block(0, b"\x0f")) == ([b"\x0f"], [(1, b"")])
        assert wire.stats()["resets"] == 1 and replies.errors == 0
    finally:
        wire.unplug()
        os.close(slave)


# ---------------------------------------------------------------------- delivery

def test_many_commands_arrive_in_order_and_responses_come_back(mcu_end, link_for):
    end = mcu_end(respond=True)
    link = link_for(end.path)
    sent = commands(3000)
    stream(link, sent)
    assert decode_all(end.payloads) == decode_all(sent)
    stats = link.stats()
    assert stats["messages_sent"] == stats["messages_acked"] == 3000
    assert stats["bad_bytes"] == 0 and stats["stray_replies"] == 0
    assert stats["inflight_bytes"] == 0 and stats["queued_messages"] == 0
    assert link.error is None and link.synced
    # Every block was answered; all answers arrived, in order, with sane times.
    received: list[tuple[float, bytes]] = []

    def all_received() -> bool:
        received.extend(link.poll())
        return len(received) >= end.responses_sent

    assert wait_for(all_received, 10.0)
    positions = [p["pos"] for t, payload in received for _, p in MCU.decode(payload)]
    assert positions == list(range(end.responses_sent))
    times = [t for t, _ in received]
    assert times == sorted(times)


@pytest.mark.parametrize("kind", ["corrupt", "drop"])
@pytest.mark.parametrize("rate", [0.01, 0.03, 0.05])
def test_exactly_once_in_order_on_a_bad_line(mcu_end, link_for, kind, rate):
    faults = WireFaults(seed=int(rate * 1000) + len(kind))
    setattr(faults, f"{kind}_rate", rate)
    end = mcu_end(faults, respond=True)
    link = link_for(end.path)
    sent = commands(3000)
    stream(link, sent, chunk=30)
    assert decode_all(end.payloads) == decode_all(sent)
    stats = link.stats()
    wire = end.wire.stats()
    # The faults really happened in both directions and were really recovered from.
    assert wire[f"{'corrupted' if kind == 'corrupt' else 'dropped'}_in"] > 0
    assert wire[f"{'corrupted' if kind == 'corrupt' else 'dropped'}_out"] > 0
    assert stats["retransmits"] > 0
    assert stats["messages_acked"] == 3000
    assert wire["max_unacked_bytes"] <= 192 and wire["window_overruns"] == 0
    # Responses are not retransmitted (as in Klipper): some are lost, none repeated
    # or reordered.
    time.sleep(0.1)                   # the last answers are still on their way
    positions = [p["pos"] for _, payload in link.poll() for _, p in MCU.decode(payload)]
    assert positions == sorted(set(positions))
    assert len(positions) > end.responses_sent * (1 - 4 * rate)


def test_both_faults_at_once(mcu_end, link_for):
    end = mcu_end(WireFaults(corrupt_rate=0.03, drop_rate=0.03, seed=7))
    link = link_for(end.path)
    sent = commands(2000)
    stream(link, sent, chunk=7)
    assert decode_all(end.payloads) == decode_all(sent)


# ---------------------------------------------------------------------- flow control

@pytest.mark.parametrize("window", [192, 96])
def test_receive_window_is_respected(mcu_end, link_for, window):
    # Slow acks (the MCU's output is delayed) keep the host at its window limit all
    # the time; the wire measures what was outstanding beyond the last ack it sent.
    end = mcu_end(WireFaults(delay_s=0.01, seed=3), receive_window=window)
    link = link_for(end.path)
    link.set_receive_window(window)
    sent = commands(600)
    stream(link, sent)
    assert decode_all(end.payloads) == decode_all(sent)
    measured = end.wire.max_unacked_bytes
    assert measured <= window
    # The window was used up, but for the room ordinary blocks leave for urgent ones.
    from printhost.mcu.link import URGENT_WINDOW_BYTES
    assert measured > window - min(URGENT_WINDOW_BYTES, window // 4) - 64


def test_small_blocks_are_limited_in_number(mcu_end, link_for):
    end = mcu_end()
    link = link_for(end.path)
    assert wait_for(lambda: link.synced)
    end.call(lambda: setattr(end.faults, "hung", True))
    peak = 0
    for message in commands(40):
        link.send(message)
        time.sleep(0.001)
        peak = max(peak, link.stats()["inflight_blocks"])
    assert peak <= 12
    end.call(lambda: setattr(end.faults, "hung", False))
    assert wait_for(link.idle)
    assert decode_all(end.payloads) == decode_all(commands(40))


# ---------------------------------------------------------------------- failures

def test_hung_mcu_stops_progress_and_retransmits_back_off(mcu_end, link_for):
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(100))
    end.call(lambda: setattr(end.faults, "hung", True))
    link.send(commands(100, start=100))
    time.sleep(0.1)
    progress = link.last_progress_s
    rtos = []
    for _ in range(12):
        time.sleep(0.1)
        rtos.append(link.stats()["rto_s"])
    stats = link.stats()
    assert link.last_progress_s == progress
    assert link.error is None and not link.idle()
    assert stats["retransmits"] >= 2
    assert rtos == sorted(rtos) and rtos[-1] >= 4 * MIN_RTO_S
    # Without backing off, 1.3 s at the minimum timeout would be ~50 retransmissions.
    assert stats["retransmits"] <= 10
    end.call(lambda: setattr(end.faults, "hung", False))
    assert wait_for(link.idle)
    assert link.last_progress_s > progress
    assert decode_all(end.payloads) == decode_all(commands(200))


def test_unplugged_mcu_sets_error_and_ends_the_thread(mcu_end, link_for):
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(50))
    link.send(commands(500, start=50))
    end.call(end.wire.unplug)
    assert wait_for(lambda: link.error is not None, 5.0)
    assert wait_for(lambda: not link.running, 5.0)
    assert end.path in link.error
    link.send(commands(5))          # none of these raise once the device is gone
    link.poll()
    link.stats()
    link.close()
    link.close()


def test_damaged_length_byte_does_not_stall_the_host(mcu_end, link_for):
    # A header promising 60 bytes, then silence: the acks that follow would be taken
    # as the rest of that block, and an MCU answers one small block per retransmission,
    # so a host that simply waits for the bytes waits for ever longer timeouts.
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))
    end.call(lambda: os.write(end.master, b"\x3c\x13\x01"))
    link.send(commands(1, start=10))
    assert wait_for(link.idle, 3.0), link.stats()
    assert link.stats()["bad_bytes"] > 0
    assert decode_all(end.payloads) == decode_all(commands(11))


def test_open_failure_is_a_link_error(tmp_path):
    with pytest.raises(LinkError, match="cannot open"):
        SerialLink(str(tmp_path / "no-such-tty")).open()


def test_oversized_or_empty_messages_are_refused(mcu_end, link_for):
    link = link_for(mcu_end().path)
    with pytest.raises(ProtocolError):
        link.send(b"x" * 60)
    with pytest.raises(ProtocolError):
        link.send([b""])


# ---------------------------------------------------------------------- timing

def test_rto_follows_the_round_trip_time(mcu_end, link_for):
    end = mcu_end(WireFaults(delay_s=0.15, seed=4))   # longer than the initial timeout
    link = link_for(end.path)
    stream(link, commands(200), chunk=10)
    stats = link.stats()
    assert stats["rtt_samples"] >= 3
    assert 0.15 <= stats["srtt_s"] < 2.0
    assert stats["rto_s"] >= stats["srtt_s"]
    assert decode_all(end.payloads) == decode_all(commands(200))


def test_fast_line_keeps_the_minimum_timeout_floor(mcu_end, link_for):
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(500))
    stats = link.stats()
    assert stats["rtt_samples"] > 10
    assert MIN_RTO_S <= stats["rto_s"] <= 5.0
    assert 0 < stats["srtt_s"] < stats["rto_s"]


# ---------------------------------------------------------------------- sequence sync

def test_second_link_joins_a_running_mcu(mcu_end, link_for):
    end = mcu_end()
    first = link_for(end.path)
    stream(first, commands(37))
    first.close()
    second = link_for(end.path)
    stream(second, commands(100, start=37))
    assert decode_all(end.payloads) == decode_all(commands(137))
    assert second.stats()["probes"] >= 2    # it had to learn the MCU's sequence number


def test_mcu_reset_never_counts_unaccepted_blocks_as_acknowledged(mcu_end, link_for):
    """At every sequence position: fill the window with one-command blocks while the
    MCU reads nothing, reset it, let it read again. Its naks now carry 0, which a naive
    host reads as an ack of every block numbered below the next multiple of 16."""
    end = mcu_end()
    sent_total = 0
    refused = 0
    for offset in range(16):
        link = link_for(end.path)
        accepted_before = len(decode_all(end.payloads))
        for message in commands(offset, start=sent_total):
            link.send(message)
            assert wait_for(link.idle)
        sent_total += offset
        end.call(lambda: setattr(end.faults, "hung", True))
        batch = commands(12, start=sent_total)
        for message in batch:
            link.send(message)
            time.sleep(0.002)
        sent_total += len(batch)
        end.call(end.wire.reset)
        end.call(lambda: setattr(end.faults, "hung", False))
        time.sleep(0.2)
        accepted = decode_all(end.payloads)
        # What the MCU executed is exactly the host's stream so far, in order ...
        assert accepted == decode_all(commands(len(accepted)))
        # ... and the host counts nothing as delivered that the MCU did not execute.
        assert link.stats()["messages_acked"] <= len(accepted) - accepted_before
        refused += link.stats()["stray_replies"] > 0
        link.close()
        # Start the next round from a clean slate: whatever was lost is sent again.
        sent_total = len(accepted)
    assert refused >= 8      # most rounds saw a nak that an ack check had to refuse


def test_an_urgent_command_goes_out_while_ordinary_ones_fill_the_window(mcu_end, link_for):
    """With the firmware not answering, ordinary blocks stop short of the receive
    window; an urgent one still goes out at once, into the room they leave."""
    from printhost.mcu.link import URGENT_WINDOW_BYTES
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))
    end.call(lambda: setattr(end.faults, "hung", True))
    link.send(commands(300, start=10))
    assert wait_for(lambda: link.stats()["inflight_blocks"] > 0)
    time.sleep(0.1)                           # as far as the window lets them go
    before = link.stats()
    assert before["queued_messages"] > 0
    assert before["inflight_bytes"] <= 192 - URGENT_WINDOW_BYTES
    urgent = HOST.encode("queue_digital_out", oid=3, clock=123456, on_ticks=42)
    link.send(urgent, urgent=True)
    assert wait_for(lambda: link.stats()["queued_messages"] == before["queued_messages"], 1.0)
    after = link.stats()
    assert after["inflight_blocks"] == before["inflight_blocks"] + 1
    end.call(lambda: setattr(end.faults, "hung", False))
    assert wait_for(link.idle, 30.0), link.stats()
    assert decode_all([urgent])[0] in decode_all(end.payloads)


def test_an_urgent_command_overtakes_queued_ordinary_ones(mcu_end, link_for):
    """A heater update due soon must not wait behind a second of queued steps: with the
    line held up, 300 ordinary commands queue, then one urgent; it arrives right after
    what was already in flight, and both classes keep their own order."""
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))
    end.call(lambda: setattr(end.faults, "hung", True))
    ordinary = commands(300, start=10)
    link.send(ordinary)
    assert wait_for(lambda: link.stats()["inflight_blocks"] > 0)
    urgent = HOST.encode("queue_digital_out", oid=3, clock=123456, on_ticks=42)
    link.send(urgent, urgent=True)
    end.call(lambda: setattr(end.faults, "hung", False))
    assert wait_for(link.idle, 30.0), link.stats()
    got = decode_all(end.payloads)
    want_ordinary = decode_all(commands(10) + ordinary)
    at = got.index(decode_all([urgent])[0])
    assert [m for m in got if m[0] == "queue_step"] == want_ordinary
    # Only blocks already packed before it (at most the receive window's worth) come
    # first: 192 bytes hold a few dozen of these small commands, not hundreds.
    assert at < 10 + 60, at


def test_a_command_goes_out_from_the_sending_thread_without_the_link_thread(mcu_end, link_for):
    """The sender writes what the window allows itself: with the link thread asleep and
    never woken, an urgent command is on the line when `send` returns (a busy machine
    delayed the thread 17 ms, past a heater update's whole margin at 20x). The thread
    is woken only for what it must do: here, time the block now in flight."""
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))                # synced, nothing in flight
    end.call(lambda: setattr(end.faults, "hung", True))
    woken = []
    link._wake = lambda: woken.append(1)      # the thread sleeps on, unwoken
    try:
        before = link.stats()
        urgent = HOST.encode("queue_digital_out", oid=3, clock=123456, on_ticks=42)
        link.send(urgent, urgent=True)
        after = link.stats()
        assert after["inflight_blocks"] == before["inflight_blocks"] + 1
        assert after["bytes_sent"] > before["bytes_sent"] and after["queued_messages"] == 0
        assert len(woken) == 1                # for the retransmission deadline
        fan = HOST.encode("queue_digital_out", oid=4, clock=123999, on_ticks=7)
        link.send(fan, urgent=True)           # in flight too; no sooner deadline
        assert link.stats()["inflight_blocks"] == after["inflight_blocks"] + 1
        assert len(woken) == 1
        # Ordinary messages wait for the thread, which packs them into full blocks.
        link.send(commands(3, start=10))
        assert len(woken) == 2 and link.stats()["queued_messages"] == 3
    finally:
        del link._wake                        # close() wakes the thread to end it
    end.call(lambda: setattr(end.faults, "hung", False))
    assert wait_for(link.idle, 30.0), link.stats()
    got = decode_all(end.payloads)
    assert got[-5:] == decode_all([urgent, fan] + commands(3, start=10))


def test_an_urgent_command_held_back_reads_the_acks_the_link_thread_has_not(mcu_end, link_for):
    """With the link thread reading nothing (not scheduled), blocks stay unacknowledged
    for it: after 12 in flight, or at the empty block 15 that waits for every ack, an
    urgent command would wait for the thread. The sender reads the acknowledgements
    waiting on the port itself, and the command goes out when `send` returns."""
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))
    link._read = lambda: time.sleep(0.001)     # the thread sees input but never reads it
    fd = link._fd
    sent = []
    try:
        for i in range(40):
            message = HOST.encode("queue_digital_out", oid=3, clock=1000 + i, on_ticks=i)
            link.send(message, urgent=True)
            sent.append(message)
            assert link.stats()["queued_messages"] == 0, i
            # The MCU took it and its acknowledgement waits on the port, unread.
            assert wait_for(lambda: decode_all([message])[0]
                            in decode_all(end.payloads[-3:]), 5.0), i
            assert wait_for(lambda: bool(select.select([fd], [], [], 0)[0]), 5.0), i
    finally:
        del link._read
    assert wait_for(link.idle, 10.0), link.stats()
    got = [m for m in decode_all(end.payloads) if m[0] == "queue_digital_out"]
    assert got == decode_all(sent)


def test_a_read_that_finds_nothing_is_not_a_closed_device(mcu_end, link_for):
    """The link thread and a sender whose urgent message was held back both read the
    port: both can be told it is readable and one takes the bytes. The other's read
    then finds nothing, which a tty in non-blocking mode reports as an empty read, the
    same answer a hung-up device gives. Only a hang-up ends the link (a loaded suite
    run lost the board mid-print this way, "device closed by the other end")."""
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))
    assert wait_for(link.idle, 10.0)
    for _ in range(20):
        link._read()                        # nothing waiting: must change nothing
    assert link.error is None and link.running
    stream(link, commands(20, start=10))
    assert wait_for(link.idle, 10.0), link.stats()
    assert decode_all(end.payloads) == decode_all(commands(30))
    end.call(end.wire.unplug)               # a real hang-up still ends it
    assert wait_for(lambda: link.error is not None, 5.0)
    assert "closed by the other end" in link.error


def test_the_longest_urgent_wait_says_what_held_it(mcu_end, link_for):
    """A board that acknowledges nothing for a while (its process not scheduled) holds
    urgent messages at the window or at block 15; the link says which, so the report of
    a "Timer too close" tells a late acknowledgement from a late host."""
    end = mcu_end()
    link = link_for(end.path)
    stream(link, commands(10))
    assert wait_for(link.idle, 10.0)
    assert link.stats()["urgent_wait_cause"] is None
    end.call(lambda: setattr(end.faults, "hung", True))
    for i in range(16):           # one block each: the window or block 15 holds one back
        link.send(HOST.encode("queue_digital_out", oid=3, clock=1000 + i, on_ticks=i),
                  urgent=True)
    assert wait_for(lambda: link.stats()["queued_messages"] > 0, 5.0)
    time.sleep(0.05)
    end.call(lambda: setattr(end.faults, "hung", False))
    assert wait_for(link.idle, 10.0), link.stats()
    stats = link.stats()
    assert stats["urgent_wait_max_s"] >= 0.05
    assert ("unacknowledged" in stats["urgent_wait_cause"]
            or "block 15" in stats["urgent_wait_cause"]), stats["urgent_wait_cause"]
