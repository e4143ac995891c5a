"""A wake-up the control loop can sleep on, set from any thread.

Between passes the control loop sleeps until the next one is due (20 ms on a
printer), waiting on the command channel. An input that must act at once, the e-stop
button above all, should not wait out that period: its callback (on gpiozero's
thread) sets a `Wakeup`, which the loop waits on as well, and the loop runs a pass at
once. A pipe rather than a threading primitive, because the loop waits on file
descriptors (`multiprocessing.connection.wait`).
"""

from __future__ import annotations

import contextlib
import os


class Wakeup:
    """One pipe: `set()` from any thread makes `fileno()` readable until `clear()`."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        # A full pipe is already readable; a closed one means the loop has ended.
        with contextlib.suppress(OSError):
            os.write(self._w, b"!")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._r, 256):
                pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
