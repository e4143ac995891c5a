"""The host end of the serial line to a Klipper MCU: reliable, ordered command delivery.

Klipper's firmware executes a command block only if it carries the sequence number
the firmware expects next, and says which one that is in every block it sends back.
Everything else (retransmitting what was lost or damaged, not overrunning the
firmware's receive buffer, learning how long a round trip takes) is the host's job,
and this module does it on one background thread so that neither a slow line nor a
dead one ever blocks the caller. What the window allows at once is packed and written
by the sending thread itself (a non-blocking write) when the message is urgent: a heater
update due a quarter second of print time from now must not wait for another thread to
be scheduled first
(a loaded suite run logged one that waited 17.3 ms in the link, 12.5 ms of host time
being its whole margin at 20x); the thread handles the rest, replies and timers.

* Commands are packed in order into blocks of at most 59 bytes of messages; at most
  `receive_window` bytes and 12 blocks (so 4-bit numbers stay unambiguous) are
  unacknowledged at a time. Urgent messages go ahead of ordinary ones not yet packed,
  and ordinary blocks leave a quarter of the window (up to 48 bytes) and one block for
  them, so an urgent message never waits for steps already in flight to be acknowledged.
* A reply's sequence number acknowledges every block before it, but only within
  [oldest unacknowledged, next to send]; a reply outside that range is not an ack.
* An empty reply repeating the last acknowledged number is a nak: the unacknowledged
  window goes again at once, after a sync byte that realigns the firmware's receiver.
  One fast retransmission per loss, as Klipper's host does: naks numbered up to the
  next block's number at that moment echo the same loss and are left to the timer.
* The retransmission timeout follows RFC 6298 (smoothed RTT and variance, Karn's rule:
  no samples from retransmitted blocks; doubling on every timeout; 25 ms to 5 s).

Two rules exist because 4-bit sequence numbers alias and a rebooted MCU expects 0:
the link learns the firmware's expected number at start-up with empty probe blocks
before sending any command, and the block numbered 15 (mod 16) is always an empty
one, sent only when everything before it is acknowledged. A rebooted firmware's nak
(carrying 0) can then only ever be mistaken for the ack of that empty block, so the
link never believes a command arrived that the firmware did not accept.

Timers use the monotonic wall clock, because the line runs in real time whatever a
simulation's time factor; `time_source` only stamps what the caller sees.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import serial

from printhost.mcu.errors import LinkError, ProtocolError
from printhost.realtime import LINK_PRIORITY_BOOST, boost_thread
from printhost.mcu.framing import (MESSAGE_MAX, MESSAGE_MIN, MESSAGE_PAYLOAD_MAX,
                                   MESSAGE_SEQ_MASK, MESSAGE_SYNC, BlockParser, encode_block)

__all__ = ["SerialLink"]

MIN_RTO_S = 0.025
MAX_RTO_S = 5.0
INITIAL_RTO_S = 0.1          # before the first round trip has been measured
RTO_GRANULARITY_S = 0.001    # RFC 6298's G: floor of the variance term
MAX_PENDING_BLOCKS = 12      # well below 16 so a 4-bit reply maps to one block
# Ordinary blocks leave this much of the receive window (at most a quarter of it) and one
# of the pending blocks free, so an urgent message goes out when it is queued instead of
# waiting for acknowledgements of steps already in flight: a loaded suite run saw a heater
# update at 20x wait 18.9 ms in the link, past its 12.5 ms of host time ("Timer too close"),
# while the host's clock estimate was right to 0.2 ppm.
URGENT_WINDOW_BYTES = 48
URGENT_BLOCKS = 1
STALL_S = 0.05               # a block's bytes arrive together; a longer gap is damage
_READ_CHUNK = 4096


@dataclass
class _Block:
    seq: int          # unwrapped sequence number
    data: bytes       # the framed block
    messages: int     # commands packed in it


def _open_problem(exc: Exception) -> str:
    """Why a port could not be opened, once (pyserial's text repeats the port and the
    errno), with what usually fixes it."""
    code = getattr(exc, "errno", None)
    if not isinstance(code, int):
        return str(exc)
    hints = {errno.ENOENT: " (is the board connected? see ls /dev/serial/by-id/)",
             errno.EACCES: " (is this user in the dialout group?)",
             errno.EAGAIN: " (another program, e.g. Klipper, has it open)",
             errno.EBUSY: " (another program, e.g. Klipper, has it open)"}
    return os.strerror(code) + hints.get(code, "")


class SerialLink:
    """One serial connection to a Klipper MCU; see the module docstring."""

    def __init__(self, port: str, baud: int = 250000, *, receive_window: int = 192,
                 time_source: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.baud = baud
        self._time = time_source
        self._lock = threading.Lock()
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        # The I/O thread's FIFO priority, None when it does not run real-time.
        self.thread_priority: int | None = None
        self._stop = False
        self.error: str | None = None
        self.last_progress_s = time_source()
        # Sending side (all guarded by _lock).
        self._window = receive_window
        self._queue: deque[bytes] = deque()
        self._urgent: deque[bytes] = deque()
        # When the oldest urgent message still waiting was queued, and the longest any
        # urgent message waited before it went out in a block (host seconds): the part
        # of a deadline the link itself spends.
        self._urgent_since: float | None = None
        self.urgent_wait_max_s = 0.0
        # Why the urgent message that waited longest was held, for the report of a
        # "Timer too close": the window, block 15, or nobody packing it.
        self._urgent_hold: str | None = None
        self.urgent_wait_cause: str | None = None
        self._sent: deque[_Block] = deque()
        self._inflight = 0
        self._tx = bytearray()             # bytes the OS has not taken yet
        self._next_seq = 0
        self._synced = False
        self._probe_seq = 0
        self._last_empty = 0               # highest number seen in an empty reply
        self._ignore_nak = 0               # naks at or below this are echoes
        self._unconfirmed = 0              # size of a block acked only by a data reply
        self._deadline: float | None = None
        self._sample: tuple[int, float] | None = None
        self.srtt_s = self.rttvar_s = 0.0
        self.rto_s = INITIAL_RTO_S
        # Host time of the latest retransmission: how the MCU layer tells a noisy line.
        self.last_retransmit_s = -math.inf
        # Receiving side.
        self._parser = BlockParser()
        self._rx_tail = bytearray()        # the latest bytes read (what the parser holds)
        self._rx_at = 0.0                  # when bytes last arrived
        self._stall_bytes = 0
        self._received: list[tuple[float, bytes]] = []
        self._counts = dict.fromkeys(
            ("bytes_sent", "bytes_received", "blocks_sent", "blocks_received",
             "messages_sent", "messages_acked", "retransmits", "retransmitted_bytes", "naks",
             "timeouts", "stray_replies", "probes", "rtt_samples"), 0)

    # ------------------------------------------------------------------ caller API
    def open(self) -> None:
        """Open the port and start the I/O thread; LinkError if the port is unusable."""
        if self._serial is not None or self._stop:
            raise LinkError(f"{self.port}: this link was opened before; make a new SerialLink")
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open {self.port}: {_open_problem(exc)}") from None
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.last_progress_s = self._time()
        self._thread = threading.Thread(target=self._run, name=f"link {self.port}", daemon=True)
        self._thread.start()

    def send(self, messages: bytes | Iterable[bytes], urgent: bool = False) -> None:
        """Queue encoded commands (each at most 59 bytes) for delivery in this order.

        `urgent` ones (a heater update due a quarter second from now, a clock query, an
        emergency stop) go ahead of every ordinary message not yet packed into a block:
        a burst of step commands, queued up to a second ahead of their time, must not
        hold back a command whose deadline is sooner (Klipper's host orders its queue by
        each command's deadline for the same reason). Urgent messages keep their order
        among themselves, and so do ordinary ones."""
        items = [messages] if isinstance(messages, (bytes, bytearray, memoryview)) else messages
        batch = [bytes(message) for message in items]
        for message in batch:
            if not 0 < len(message) <= MESSAGE_PAYLOAD_MAX:
                raise ProtocolError(f"a message must be 1..{MESSAGE_PAYLOAD_MAX} bytes, "
                                    f"got {len(message)}")
        with self._lock:
            if self.error is not None or self._stop:
                return
            if urgent:
                if not self._urgent:
                    self._urgent_since = time.monotonic()
                    self._urgent_hold = None
                self._urgent.extend(batch)
            else:
                self._queue.extend(batch)
            if self._fd < 0 or not urgent:
                # Ordinary messages (steps, a second or more ahead) wait for the thread,
                # which packs everything queued meanwhile into full blocks.
                self._wake()
                return
            # Urgent: out now if the window allows. The thread is woken only when it has
            # something to do: bytes the line did not take, messages the window holds
            # back, or a retransmission deadline sooner than the one it sleeps on.
            deadline = self._deadline
            self._fill(time.monotonic())
            self._write()
            if self._urgent:
                # Held back (the window, or the empty block 15 that waits for every ack):
                # acknowledgements may be waiting unread while the link thread is not
                # scheduled (a loaded run: 16.3 ms, "Timer too close" at 20x). Read them;
                # a tty read returns nothing rather than waiting, so ask first.
                if select.select([self._fd], [], [], 0)[0]:
                    self._read_locked()
            if (self._tx or self._urgent or self._queue
                    or (self._deadline is not None
                        and (deadline is None or self._deadline < deadline))):
                self._wake()

    def poll(self) -> list[tuple[float, bytes]]:
        """Payloads of the blocks received since the last call, with arrival times."""
        with self._lock:
            out, self._received = self._received, []
        return out

    def set_receive_window(self, nbytes: int) -> None:
        with self._lock:
            self._window = int(nbytes)
            self._wake()

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and not self._urgent and not self._sent

    @property
    def running(self) -> bool:
        """Whether the I/O thread is alive (it ends on close() or when the port fails)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def synced(self) -> bool:
        """Whether the firmware's expected sequence number has been learnt."""
        return self._synced

    def stats(self) -> dict[str, float | int]:
        with self._lock:
            return {**self._counts, "bad_bytes": self._parser.discarded + self._stall_bytes,
                    "srtt_s": self.srtt_s, "rttvar_s": self.rttvar_s, "rto_s": self.rto_s,
                    "inflight_bytes": self._inflight, "inflight_blocks": len(self._sent),
                    "queued_messages": len(self._queue) + len(self._urgent),
                    "urgent_wait_max_s": self.urgent_wait_max_s,
                    "urgent_wait_cause": self.urgent_wait_cause,
                    "thread_priority": self.thread_priority}

    def close(self) -> None:
        """Stop the thread and release the port; safe to call more than once."""
        with self._lock:
            self._stop = True
            self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
        if self._serial is not None:
            # The device may already be gone; closing is all that is wanted here.
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.close()
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            self._fd = -1

    # ------------------------------------------------------------------ I/O thread
    def _wake(self) -> None:
        # Called with the lock held, so close() cannot free the pipe's fds meanwhile. A
        # full pipe wakes the thread anyway; a closed one means it has stopped.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b".")

    def _run(self) -> None:
        # Above the computing threads of a real-time process: an urgent message (a heater
        # update due a quarter second of print time from now) goes out when it is queued.
        self.thread_priority = boost_thread(LINK_PRIORITY_BOOST)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        with self._lock:
            self._send_probe(time.monotonic())
        while True:
            with self._lock:
                if self._stop or self.error is not None:
                    return
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    self._on_timeout(now)
                if self._parser.pending and now >= self._rx_at + STALL_S:
                    self._unstick(now)
                self._fill(now)
                self._write()
                wake_at = self._deadline
                if self._parser.pending:
                    wake_at = min(wake_at or math.inf, self._rx_at + STALL_S)
                timeout = None if wake_at is None else max(0, int((wake_at - now) * 1e3) + 1)
                mask = select.POLLIN | (select.POLLOUT if self._tx else 0)
            poller.register(self._fd, mask)
            for fd, event in poller.poll(timeout):
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                elif event & (select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    self._read()

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = f"{self.port}: {reason}"

    def _read(self) -> None:
        with self._lock:
            self._read_locked()

    def _read_locked(self) -> None:
        """Take what the port holds (never waiting for more). Read under the lock only,
        by the link thread or by a sender that found its urgent message held back: bytes
        are parsed in the order they came, whoever reads them."""
        if self._fd < 0 or self.error is not None:
            return
        try:
            data = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"device lost ({exc.strerror or exc})")
            return
        src_now = self._time()
        now = time.monotonic()
        if not data:
            # A tty with nothing to read answers an empty read (pyserial's non-blocking
            # mode sets VMIN = VTIME = 0), as a hung-up one does. Two readers told the
            # port was readable (the thread, and a sender whose urgent message was held
            # back) race for the bytes, and the loser reads nothing: only a hang-up is
            # the end of the line.
            if self._hung_up():
                self._fail("device closed by the other end")
            return
        self._counts["bytes_received"] += len(data)
        self._rx_at = now
        self._rx_tail += data
        del self._rx_tail[:-2 * MESSAGE_MAX]
        self._parse(data, now, src_now)
        self._fill(now)
        self._write()

    def _hung_up(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return any(event & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for _, event in poller.poll(0))

    def _parse(self, data: bytes, now: float, src_now: float) -> None:
        for seq, payload in self._parser.feed(data):
            self._counts["blocks_received"] += 1
            if payload:
                self._received.append((src_now, payload))
                self.last_progress_s = src_now
            self._on_reply(seq, not payload, now, src_now)

    def _unstick(self, now: float) -> None:
        """Give up on a partial block that stopped arriving.

        A damaged length byte can promise more bytes than the block has; the parser
        then waits for them, and a firmware that only answers what it receives may
        not send them until the host's backed-off timer fires, again and again. So
        the first held byte is dropped and the rest parsed again, which resynchronises
        on the next sync byte as any other damage does.
        """
        held = bytes(self._rx_tail[-self._parser.pending:])
        self._parser.reset()
        self._stall_bytes += 1
        self._parse(held[1:], now, self._time())

    def _write(self) -> None:
        if not self._tx or self.error is not None:
            return
        try:
            written = os.write(self._fd, self._tx)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"write failed ({exc.strerror or exc})")
            return
        self._counts["bytes_sent"] += written
        del self._tx[:written]

    # ------------------------------------------------------------------ protocol
    def _send_probe(self, now: float, *, timed: bool = True) -> None:
        # An empty block is harmless whether or not the firmware accepts it, so it can
        # be sent before the firmware's expected number is known.
        self._counts["probes"] += 1
        if not timed:
            self._tx.append(MESSAGE_SYNC)   # realign a receiver left mid-block
        self._tx += encode_block(self._probe_seq, b"")
        self._deadline = now + self.rto_s
        self._sample = (self._probe_seq, now) if timed else None

    def _fill(self, now: float) -> None:
        """Pack queued messages into new blocks while the receive window allows."""
        if not self._synced:
            return
        while self._urgent or self._queue:
            queue = self._urgent or self._queue
            urgent = queue is self._urgent
            reserve = 0 if urgent else min(URGENT_WINDOW_BYTES, self._window // 4)
            if len(self._sent) >= MAX_PENDING_BLOCKS - (0 if urgent else URGENT_BLOCKS):
                self._note_hold("{} blocks unacknowledged", len(self._sent))
                return
            marker = (self._next_seq & MESSAGE_SEQ_MASK) == MESSAGE_SEQ_MASK
            if marker and self._sent:
                # Block 15 waits until everything before it is acknowledged.
                self._note_hold("the empty block 15 waiting for {} acknowledgement(s)",
                                len(self._sent))
                return
            count = size = 0
            if not marker:
                for message in queue:
                    if size + len(message) > MESSAGE_PAYLOAD_MAX:
                        break
                    count += 1
                    size += len(message)
            if self._sent and (self._inflight + self._unconfirmed + size + MESSAGE_MIN + reserve
                               > self._window):
                self._note_hold("the receive window ({} bytes in flight)", self._inflight)
                return
            payload = b"".join(queue.popleft() for _ in range(count))
            if queue is self._urgent and self._urgent_since is not None:
                waited = now - self._urgent_since
                if waited > self.urgent_wait_max_s:
                    self.urgent_wait_max_s = waited
                    self.urgent_wait_cause = self._urgent_hold or "not packed until then"
                self._urgent_since = now if queue else None
                self._urgent_hold = None
            self._counts["messages_sent"] += count
            self._push_block(payload, count, now)

    def _note_hold(self, reason: str, count: int) -> None:
        # Formatted only while an urgent message waits: ordinary step traffic meets the
        # window on every fill.
        if self._urgent:
            self._urgent_hold = reason.format(count)

    def _push_block(self, payload: bytes, messages: int, now: float) -> None:
        block = _Block(self._next_seq, encode_block(self._next_seq, payload), messages)
        if not self._sent:
            self._deadline = now + self.rto_s
        if self._sample is None:
            self._sample = (block.seq, now)
        self._sent.append(block)
        self._inflight += len(block.data)
        self._next_seq += 1
        self._counts["blocks_sent"] += 1
        self._tx += block.data

    def _on_reply(self, seq4: int, empty: bool, now: float, src_now: float) -> None:
        if not self._synced:
            self._on_sync_reply(seq4, now, src_now)
            return
        oldest = self._sent[0].seq if self._sent else self._next_seq
        rseq = oldest + ((seq4 - oldest) & MESSAGE_SEQ_MASK)
        if rseq > self._next_seq:
            self._counts["stray_replies"] += 1   # not a number this link could be owed
            return
        if rseq > oldest:
            last = None
            while self._sent and self._sent[0].seq < rseq:
                last = self._sent.popleft()
                self._inflight -= len(last.data)
                self._counts["messages_acked"] += last.messages
            self._unconfirmed = 0 if empty or last is None else len(last.data)
            self.last_progress_s = src_now
            if self._sample is not None and rseq > self._sample[0]:
                self._rtt_sample(now - self._sample[1])
                self._sample = None
            self._deadline = now + self.rto_s if self._sent else None
        if not empty:
            return
        if rseq > self._last_empty:
            self._last_empty = rseq
            self._unconfirmed = 0
        elif self._sent:
            self._counts["naks"] += 1
            if rseq > self._ignore_nak:
                self._retransmit(now, nak=True)

    def _on_sync_reply(self, seq4: int, now: float, src_now: float) -> None:
        if seq4 != (self._probe_seq + 1) & MESSAGE_SEQ_MASK:
            # The firmware expects seq4: offer it an empty block with that number; its
            # answer (seq4 + 1 whether it takes it or had moved on) settles the matter.
            # A repeat of the number already offered means that offer is on its way.
            if seq4 != self._probe_seq:
                self._probe_seq = seq4
                self._send_probe(now)
            return
        self._synced = True
        self._next_seq = self._last_empty = seq4
        self._ignore_nak = self._next_seq - 1
        self.last_progress_s = src_now
        if self._sample is not None and self._sample[0] == self._probe_seq:
            self._rtt_sample(now - self._sample[1])
        self._sample = None
        self._deadline = None

    def _on_timeout(self, now: float) -> None:
        if not self._synced:
            self.rto_s = min(self.rto_s * 2.0, MAX_RTO_S)
            self._send_probe(now, timed=False)    # Karn: a repeated probe is no sample
        elif self._sent:
            self._retransmit(now, nak=False)
        else:
            self._deadline = None

    def _retransmit(self, now: float, *, nak: bool) -> None:
        # Drop what the OS still holds for the line: all of it is in the window anyway.
        # Not every device can flush; then some bytes go twice, which is harmless.
        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(self._fd, termios.TCOFLUSH)
        self._tx.clear()
        data = bytes([MESSAGE_SYNC]) + b"".join(b.data for b in self._sent)
        self._tx += data
        self._counts["retransmits"] += 1
        self._counts["retransmitted_bytes"] += len(data)
        self.last_retransmit_s = now
        # Copies of blocks the firmware already holds draw naks carrying at most the
        # number the next new block will get; answering those echoes would retransmit
        # again and again. Naks up to that number wait for the timer; a higher one
        # reports a new loss.
        self._ignore_nak = self._next_seq
        if not nak:
            self._counts["timeouts"] += 1
            self.rto_s = min(self.rto_s * 2.0, MAX_RTO_S)
        self._sample = None                 # Karn: these round trips are ambiguous
        self._deadline = now + self.rto_s

    def _rtt_sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        self._counts["rtt_samples"] += 1
        if self._counts["rtt_samples"] == 1:
            self.srtt_s = rtt
            self.rttvar_s = rtt / 2.0
        else:
            self.rttvar_s = 0.75 * self.rttvar_s + 0.25 * abs(self.srtt_s - rtt)
            self.srtt_s = 0.875 * self.srtt_s + 0.125 * rtt
        rto = self.srtt_s + max(RTO_GRANULARITY_S, 4.0 * self.rttvar_s)
        self.rto_s = min(max(rto, MIN_RTO_S), MAX_RTO_S)

