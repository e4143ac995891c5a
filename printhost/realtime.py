"""Real-time scheduling for the processes that keep the printer's deadlines.

The control process must get its next pass in within a few milliseconds whatever else
the Pi is doing (a touchscreen browser, uploads, API clients): motion is committed to
the MCU only about a second ahead and heater updates a fraction of that. Three things
make that hold on a busy machine, each taken only where the operating system allows:

* SCHED_FIFO: an ordinary (SCHED_OTHER) process, however busy, never delays a FIFO
  process that wants to run. Allowed to root (CAP_SYS_NICE) and to any process whose
  RLIMIT_RTPRIO is at least the priority asked for: the shipped systemd unit sets
  `LimitRTPRIO=`, so no capability is needed and `NoNewPrivileges=` stays.
* mlockall(MCL_CURRENT | MCL_ONFAULT): pages already resident, and those touched later
  in those mappings, stay in memory, so a pass never waits for the SD card to page code
  back in. MCL_ONFAULT keeps the large libraries' untouched pages (LLVM's) out of RAM.
  Allowed to root and within RLIMIT_MEMLOCK (`LimitMEMLOCK=` in the unit).
* gc.freeze(): everything allocated during start-up (modules, compiled kernels,
  configuration) moves to a generation the collector never scans, so a full
  collection no longer walks the whole start-up heap in the middle of a pass.

Each step is reported (`RealtimeState`), in the log and in the status document, so a
user can see whether the printer got what it asked for. The supervisor, which serves
the API, gives up its own right to real-time priority once the control process is
running (`drop_realtime_rights`): a request handler can never take a core from it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import resource
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

#: FIFO priorities, both well below the kernel's own threads (50 for IRQ threads on
#: PREEMPT_RT). The simulated board is real-time (no busy process delays it) but below
#: the control process: with two simulated printers on two cores, boards above their
#: hosts could hold both cores through a burst of commands and starve the hosts' link
#: threads, so that commands went out late. A board that reads late is harmless: it
#: judges deadlines as of when it last looked at its input (sim/mcu/process.py).
CONTROL_PRIORITY = 10
SIM_BOARD_PRIORITY = 5
#: The serial link's I/O thread runs this many levels above its process (`boost_thread`):
#: it carries the deadlines the main thread computes. At the same FIFO priority it had
#: to wait for a core until a computing thread blocked, the main thread of its own
#: process or, on a machine running two simulated printers, the other one's: a loaded
#: suite run saw a heater update at 20x (12.5 ms of host time ahead) reach the board
#: late ("Timer too close") while the board itself read it within 0.6 ms.
LINK_PRIORITY_BOOST = 1

_MCL_CURRENT = 1
_MCL_ONFAULT = 4


@dataclass
class RealtimeState:
    """What this process obtained; `notes` says why anything is missing."""

    policy: str = "SCHED_OTHER"
    priority: int = 0
    memory_locked: bool = False
    gc_frozen: bool = False
    notes: str = ""

    @property
    def realtime(self) -> bool:
        return self.policy == "SCHED_FIFO"

    def as_dict(self) -> dict:
        return {**asdict(self), "realtime": self.realtime}

    def describe(self) -> str:
        sched = f"{self.policy} {self.priority}" if self.realtime else self.policy
        return (f"scheduling {sched}, memory {'locked' if self.memory_locked else 'not locked'}, "
                f"start-up heap {'frozen' if self.gc_frozen else 'not frozen'}"
                + (f" ({self.notes})" if self.notes else ""))


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def take_fifo(priority: int) -> tuple[bool, str]:
    """Switch every thread of this process to SCHED_FIFO at `priority`; (done, why not).

    Every thread, not only the caller (Linux schedules threads, and the policy is per
    thread): a helper thread left at normal priority would be preempted by any busy
    process while holding the GIL, and the real-time main thread would then wait for
    it just the same. Threads started later inherit the policy of their creator."""
    try:
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            except ProcessLookupError:
                pass  # a thread that ended meanwhile
        return True, ""
    except AttributeError:
        return False, "no SCHED_FIFO on this system"
    except PermissionError:
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
        return False, (f"SCHED_FIFO {priority} not permitted (RLIMIT_RTPRIO {soft}; "
                       f"the systemd unit's LimitRTPRIO grants it)")
    except OSError as exc:
        return False, f"SCHED_FIFO refused: {exc.strerror}"


def boost_thread(levels: int) -> int | None:
    """Raise the calling thread `levels` FIFO priorities above where it is, if it runs
    SCHED_FIFO at all (it inherits that from its creator); returns the priority it has
    afterwards, or None when it is not real-time or the raise was refused (it then keeps
    its priority: the limit the unit grants, LimitRTPRIO=20, leaves room)."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_FIFO:
            return None
        priority = os.sched_getparam(0).sched_priority
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority + levels))
        return priority + levels
    except AttributeError:
        return None
    except OSError as exc:
        log.warning("could not raise a real-time thread's priority: %s", exc.strerror)
        return None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def lock_memory() -> tuple[bool, str]:
    """mlockall(MCL_CURRENT | MCL_ONFAULT); (done, why not)."""
    libc = _libc()
    if libc is None:
        return False, "no C library to call mlockall"
    if libc.mlockall(_MCL_CURRENT | _MCL_ONFAULT) == 0:
        return True, ""
    err = ctypes.get_errno()
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
    return False, (f"mlockall refused ({os.strerror(err)}; RLIMIT_MEMLOCK {limit}; "
                   f"the systemd unit's LimitMEMLOCK grants it)")


def settle_realtime(priority: int, *, lock: bool = True) -> RealtimeState:
    """After start-up: freeze the start-up heap, lock memory and take SCHED_FIFO.

    Called once the expensive start-up work (compiling kernels) is done, so a
    minute-long compile never runs at real-time priority; threads started later (the
    MCU link's) inherit the policy."""
    state = RealtimeState()
    notes = []
    gc.collect()
    gc.freeze()
    state.gc_frozen = True
    if lock:
        state.memory_locked, why = lock_memory()
        if why:
            notes.append(why)
    ok, why = take_fifo(priority)
    if ok:
        state.policy, state.priority = "SCHED_FIFO", priority
    else:
        notes.append(why)
    state.notes = "; ".join(notes)
    return state


def drop_realtime_rights() -> None:
    """Give up the right to raise this process to real-time priority (the supervisor,
    once its real-time child runs): RLIMIT_RTPRIO can be lowered but never raised again
    without a privilege the unit does not grant."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_RTPRIO)
        if soft or hard:
            resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    except (ValueError, OSError) as exc:
        log.warning("could not drop the real-time priority limit: %s", exc)
