"""The MCU end of the serial line: Klipper's firmware receive and transmit rules.

A host is only tested against the real thing if the simulated MCU accepts, rejects,
acknowledges and resynchronises exactly as Klipper firmware does, so this module
follows the firmware's rules rather than anything more forgiving:

* it keeps one 4-bit "next expected" sequence number (0 after power-on) and accepts
  only the block carrying it; every accepted block is answered with an empty block
  (an ack) carrying the new expected number;
* a well-formed block with any other sequence number is discarded and answered with
  an empty block carrying the unchanged expected number (a nak), every time;
* after damaged bytes it throws away everything up to and including the next sync
  byte (0x7e) and naks once; further damage before the next well-formed block is not
  naked again, so a burst of noise cannot make the host retransmit over and over;
  a sync byte where a block should start is just skipped, never naked;
* every block it sends carries the current expected number, and each response
  message travels in a block of its own, as the firmware frames them.

`WireFaults` adds the line's misbehaviour on top (corruption, drops, latency, a hung
firmware), decided per block with a seeded random generator so failures repeat.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from printhost.mcu.framing import (MESSAGE_DEST, MESSAGE_HEADER_SIZE, MESSAGE_MAX,
                                   MESSAGE_MIN, MESSAGE_SEQ_MASK, MESSAGE_SYNC,
                                   MESSAGE_TRAILER_SIZE, crc16_ccitt, encode_block)

__all__ = ["McuWire", "WireFaults"]

_READ_CHUNK = 4096


@dataclass
class WireFaults:
    """What goes wrong on the line; read on every block, so a test may change it live.

    Rates apply to each block in either direction independently. Delay holds back
    every block the MCU sends (order is kept). `hung` stops the firmware reading or
    writing anything; bytes wait in the pty and in the output queue until it clears.
    """

    corrupt_rate: float = 0.0
    drop_rate: float = 0.0
    delay_s: float = 0.0
    hung: bool = False
    seed: int | None = None


@dataclass
class _Outgoing:
    due: float
    data: bytes
    ack_index: int      # accepted-block count this block announces to the host
    valid: bool         # False when the fault injector damaged it


class McuWire:
    """Klipper's block-level receive/transmit logic over the master side of a pty.

    Never blocks: reads take what the pty holds, writes what it accepts, and the rest
    waits for the next `flush()`. Besides counting, it checks the host's flow control
    from this side: `max_unacked_bytes` is the largest number of block bytes the host
    had outstanding beyond the last ack that actually reached the line, which a
    well-behaved host keeps within the receive window (`window_overruns` in `stats()`
    counts the blocks that arrived beyond it).
    """

    def __init__(self, fd: int, *, receive_window: int = 192, faults: WireFaults | None = None,
                 time_source: Callable[[], float] = time.monotonic) -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self.receive_window = receive_window
        self.faults = faults if faults is not None else WireFaults()
        self._time = time_source
        self._rng = random.Random(self.faults.seed)
        self._raw = bytearray()      # bytes as read, before fault injection
        self._rx = bytearray()       # bytes the firmware's block finder works on
        self._need_sync = False
        self._need_valid = False
        self._expected = 0           # 4-bit next expected sequence number
        self._accepted = 0           # accepted blocks since construction (never wraps)
        self._acked_on_line = 0      # highest `_accepted` value a written block carried
        self._window: deque[tuple[int, int]] = deque()  # (accept index, block size)
        self._out: deque[_Outgoing] = deque()
        self._out_offset = 0         # bytes of _out[0] already written
        self.max_unacked_bytes = 0
        self._counts = dict.fromkeys(
            ("bytes_received", "bytes_sent", "blocks_received", "blocks_accepted",
             "blocks_sent", "acks_sent", "naks_sent", "bad_bytes", "dropped_in",
             "corrupted_in", "dropped_out", "corrupted_out", "resets", "window_overruns"), 0)

    # ------------------------------------------------------------------ public
    def fileno(self) -> int:
        """The pty master, for select(); -1 once unplugged."""
        return self._fd

    @property
    def expected_seq(self) -> int:
        """The 4-bit sequence number the next accepted block must carry."""
        return self._expected

    def stats(self) -> dict[str, int]:
        return {**self._counts, "expected_seq": self._expected,
                "max_unacked_bytes": self.max_unacked_bytes,
                "queued_bytes": sum(len(o.data) for o in self._out) - self._out_offset}

    def read_available(self) -> list[bytes]:
        """Read what the host sent; return the payloads of newly accepted blocks.

        Empty accepted blocks are acknowledged but not returned: they carry no
        commands. Acks and naks are queued here, in the order the firmware would send
        them; `flush()` puts them on the line.
        """
        if self._fd < 0 or self.faults.hung:
            return []
        while True:
            try:
                chunk = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EIO:   # no host has the slave open: nothing to read
                    break
                raise
            if not chunk:
                break
            self._counts["bytes_received"] += len(chunk)
            self._raw += chunk
        self._inject_input_faults()
        return self._find_blocks()

    def send(self, message: bytes) -> None:
        """Queue one encoded response message in a block of its own."""
        if self._fd >= 0:
            self._queue_block(bytes(message))

    def flush(self) -> None:
        """Write every due block the pty accepts now; keep the rest for later."""
        if self._fd < 0 or self.faults.hung:
            return
        now = self._time()
        while self._out and self._out[0].due <= now:
            head = self._out[0]
            try:
                written = os.write(self._fd, head.data[self._out_offset:])
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # Nobody holds the slave open: like a UART with nothing attached the
                # bytes go nowhere.
                written = len(head.data) - self._out_offset
            self._counts["bytes_sent"] += written
            self._out_offset += written
            if self._out_offset < len(head.data):
                return
            self._out.popleft()
            self._out_offset = 0
            if head.valid:
                self._acked_on_line = max(self._acked_on_line, head.ack_index)

    def next_wakeup(self) -> float | None:
        """When the first delayed block is due (time_source seconds), if one waits."""
        if self._fd < 0 or not self._out:
            return None
        return self._out[0].due

    def reset(self) -> None:
        """The MCU rebooted: expected sequence back to 0, partial input and unsent
        output lost, as on a real board whose RAM was cleared."""
        self._expected = 0
        self._raw.clear()
        self._rx.clear()
        self._need_sync = self._need_valid = False
        self._out.clear()
        self._out_offset = 0
        self._window.clear()
        self._acked_on_line = self._accepted
        self._counts["resets"] += 1

    def unplug(self) -> None:
        """Close the pty master: the host's reads and writes fail as on a pulled cable."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._out.clear()
        self._out_offset = 0

    # ------------------------------------------------------------------ receive
    def _inject_input_faults(self) -> None:
        # Cut the raw bytes into units the way a receiver sees blocks (a plausible
        # header, then its length) and damage or lose whole units; bytes that cannot
        # start a block pass on one at a time, so nothing is held back that the
        # firmware would already judge.
        raw = self._raw
        faults = self.faults
        if not (faults.drop_rate or faults.corrupt_rate):
            self._rx += raw
            raw.clear()
            return
        while raw:
            length = raw[0]
            if MESSAGE_MIN <= length <= MESSAGE_MAX:
                if len(raw) < 2 or (raw[1] & ~MESSAGE_SEQ_MASK == MESSAGE_DEST
                                    and len(raw) < length):
                    break
                if raw[1] & ~MESSAGE_SEQ_MASK == MESSAGE_DEST:
                    unit = bytearray(raw[:length])
                    del raw[:length]
                    if faults.drop_rate and self._rng.random() < faults.drop_rate:
                        self._counts["dropped_in"] += 1
                        continue
                    if faults.corrupt_rate and self._rng.random() < faults.corrupt_rate:
                        self._corrupt(unit)
                        self._counts["corrupted_in"] += 1
                    self._rx += unit
                    continue
            self._rx.append(length)
            del raw[:1]

    def _find_blocks(self) -> list[bytes]:
        buf = self._rx
        payloads: list[bytes] = []
        while buf:
            if self._need_sync:
                self._skip_to_sync()
                continue
            if len(buf) < MESSAGE_MIN:
                break
            length = buf[0]
            if (not MESSAGE_MIN <= length <= MESSAGE_MAX
                    or buf[1] & ~MESSAGE_SEQ_MASK != MESSAGE_DEST):
                self._bad_data()
                continue
            if len(buf) < length:
                break
            crc = crc16_ccitt(memoryview(buf)[:length - MESSAGE_TRAILER_SIZE])
            if (buf[length - 1] != MESSAGE_SYNC
                    or (buf[length - 3] << 8 | buf[length - 2]) != crc):
                self._bad_data()
                continue
            seq = buf[1] & MESSAGE_SEQ_MASK
            payload = bytes(buf[MESSAGE_HEADER_SIZE:length - MESSAGE_TRAILER_SIZE])
            del buf[:length]
            self._need_valid = False
            self._counts["blocks_received"] += 1
            if seq != self._expected:
                self._counts["naks_sent"] += 1
                self._queue_block(b"")
                continue
            self._check_window(length)
            self._expected = (self._expected + 1) & MESSAGE_SEQ_MASK
            self._accepted += 1
            self._counts["blocks_accepted"] += 1
            if payload:
                payloads.append(payload)
            self._counts["acks_sent"] += 1
            self._queue_block(b"")
        return payloads

    def _bad_data(self) -> None:
        if self._rx[0] == MESSAGE_SYNC:
            # A sync byte between blocks is allowed filler, not damage.
            del self._rx[:1]
            return
        self._need_sync = True
        self._skip_to_sync()
        if not self._need_valid:
            # One nak per stretch of damage; the next well-formed block re-arms it.
            self._need_valid = True
            self._counts["naks_sent"] += 1
            self._queue_block(b"")

    def _skip_to_sync(self) -> None:
        buf = self._rx
        at = buf.find(MESSAGE_SYNC)
        cut = len(buf) if at < 0 else at + 1
        if at >= 0:
            self._need_sync = False
        self._counts["bad_bytes"] += cut
        del buf[:cut]

    def _check_window(self, size: int) -> None:
        # Every block from the last ack that reached the line up to this one was still
        # unacknowledged, as far as the host could know, when the host sent this one.
        window = self._window
        window.append((self._accepted, size))
        while window and window[0][0] < self._acked_on_line:
            window.popleft()
        outstanding = sum(s for _, s in window)
        self.max_unacked_bytes = max(self.max_unacked_bytes, outstanding)
        if outstanding > self.receive_window:
            # Real firmware would have lost bytes here; this one counts the violation.
            self._counts["window_overruns"] += 1

    # ------------------------------------------------------------------ transmit
    def _queue_block(self, payload: bytes) -> None:
        faults = self.faults
        self._counts["blocks_sent"] += 1
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            self._counts["dropped_out"] += 1
            return
        data = bytearray(encode_block(self._expected, payload))
        valid = True
        if faults.corrupt_rate and self._rng.random() < faults.corrupt_rate:
            self._corrupt(data)
            self._counts["corrupted_out"] += 1
            valid = False
        due = self._time() + max(0.0, faults.delay_s)
        if self._out and self._out[-1].due > due:
            due = self._out[-1].due     # latency never reorders the line
        self._out.append(_Outgoing(due, bytes(data), self._accepted, valid))

    def _corrupt(self, unit: bytearray) -> None:
        unit[self._rng.randrange(len(unit))] ^= self._rng.randrange(1, 256)
