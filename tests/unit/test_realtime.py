"""Real-time scheduling as an unprivileged service user gets it: through resource limits.

The shipped unit runs printhost as a system user with `NoNewPrivileges=`, and grants
real-time priority and locked memory only through `LimitRTPRIO=` and `LimitMEMLOCK=`.
These tests start a child process as such a user (nobody) with such limits and check
what `printhost.realtime` obtains and reports. Switching user needs root; without it
only the refusals can be shown.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching to an unprivileged user needs root")


def _can_grant_rtprio() -> bool:
    """Raising a hard limit, as systemd does for LimitRTPRIO, needs CAP_SYS_RESOURCE
    (some containers' root lacks it)."""
    code = "import resource; resource.setrlimit(resource.RLIMIT_RTPRIO, (20, 20))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


needs_limit_grant = pytest.mark.skipif(not (ROOT and _can_grant_rtprio()),
                                       reason="granting RLIMIT_RTPRIO needs CAP_SYS_RESOURCE")

PROBE = r"""
import json, os, pwd, resource, sys, threading
from printhost import realtime
realtime._libc()                 # everything this probe needs is loaded before it
if os.environ.get("AS_NOBODY"):  # switches user (the interpreter lives under /root)
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
stop = threading.Event()
helper = threading.Thread(target=stop.wait, daemon=True)
helper.start()                                  # a thread that exists before the switch
state = realtime.settle_realtime(realtime.CONTROL_PRIORITY)
policies = {t: os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}
out = {"state": state.as_dict(), "describe": state.describe(),
       "all_fifo": all(p == os.SCHED_FIFO for p in policies.values()),
       "threads": len(policies)}
if os.environ.get("DROP"):
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    realtime.drop_realtime_rights()
    out["after_drop"] = realtime.take_fifo(realtime.CONTROL_PRIORITY)
stop.set()
print(json.dumps(out))
"""


def probe(rtprio: int | None, memlock: int | None, as_nobody: bool, drop: bool = False) -> dict:
    def prepare() -> None:
        if rtprio is not None:
            resource.setrlimit(resource.RLIMIT_RTPRIO, (rtprio, rtprio))
        if memlock is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))

    env = {**os.environ, "PYTHONPATH": str(REPO), **({"DROP": "1"} if drop else {}),
           **({"AS_NOBODY": "1"} if as_nobody else {})}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          preexec_fn=prepare, env=env, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_root
def test_a_privileged_process_gets_fifo_for_every_thread_and_locked_memory():
    out = probe(rtprio=None, memlock=None, as_nobody=False)
    state = out["state"]
    assert state["realtime"] and state["policy"] == "SCHED_FIFO" and state["priority"] == 10
    assert state["memory_locked"] and state["gc_frozen"] and state["notes"] == ""
    # Every thread switched, also the one started before.
    assert out["threads"] >= 2 and out["all_fifo"]


@needs_limit_grant
def test_the_unit_limits_grant_fifo_and_locked_memory_without_privileges():
    out = probe(rtprio=20, memlock=resource.RLIM_INFINITY, as_nobody=True)
    state = out["state"]
    assert state["realtime"] and state["memory_locked"] and state["notes"] == ""
    assert out["all_fifo"]


@needs_root
def test_without_the_limits_the_process_runs_on_and_says_why():
    out = probe(rtprio=0, memlock=64 * 1024, as_nobody=True)
    state = out["state"]
    assert not state["realtime"] and state["policy"] == "SCHED_OTHER"
    assert not state["memory_locked"] and state["gc_frozen"]
    assert "RLIMIT_RTPRIO 0" in state["notes"] and "LimitRTPRIO" in state["notes"]
    assert "RLIMIT_MEMLOCK 64 KiB" in state["notes"] and "LimitMEMLOCK" in state["notes"]
    assert "SCHED_OTHER" in out["describe"] and "not locked" in out["describe"]


@needs_limit_grant
def test_a_process_that_dropped_its_rights_cannot_take_them_back():
    """The supervisor serving the API drops RLIMIT_RTPRIO once the control process runs."""
    out = probe(rtprio=20, memlock=None, as_nobody=True, drop=True)
    assert out["state"]["realtime"]
    ok, why = out["after_drop"]
    assert not ok and "RLIMIT_RTPRIO 0" in why


def test_a_limit_of_zero_refuses_fifo_for_anyone_unprivileged():
    if ROOT:
        out = probe(rtprio=0, memlock=None, as_nobody=True)
    else:
        out = probe(rtprio=0, memlock=None, as_nobody=False)
    assert not out["state"]["realtime"]


LINK_PROBE = r"""
import json, os, time, tty
from printhost import realtime
from printhost.mcu.link import SerialLink
state = realtime.settle_realtime(realtime.CONTROL_PRIORITY, lock=False)
master, slave = os.openpty()
tty.setraw(slave)
link = SerialLink(os.ttyname(slave))
link.open()                       # nothing answers: the thread only has to start
deadline = time.monotonic() + 5.0
while link.thread_priority is None and time.monotonic() < deadline:
    time.sleep(0.01)
tid = next(t.native_id for t in __import__("threading").enumerate() if t.name.startswith("link "))
print(json.dumps({"main": os.sched_getparam(0).sched_priority, "realtime": state.realtime,
                  "link": os.sched_getparam(tid).sched_priority,
                  "link_fifo": os.sched_getscheduler(tid) == os.SCHED_FIFO,
                  "reported": link.stats()["thread_priority"]}))
link.close()
"""


@needs_root
def test_the_link_thread_runs_above_its_real_time_process():
    """An urgent message the main thread queues must not wait for a core behind a
    computing thread of the same priority: the link's thread runs one level above."""
    from printhost.realtime import CONTROL_PRIORITY, LINK_PRIORITY_BOOST
    proc = subprocess.run([sys.executable, "-c", LINK_PROBE], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["realtime"] and out["main"] == CONTROL_PRIORITY
    assert out["link_fifo"] and out["link"] == CONTROL_PRIORITY + LINK_PRIORITY_BOOST
    assert out["reported"] == out["link"]


def test_a_link_in_an_ordinary_process_stays_ordinary():
    import tty

    from printhost.mcu.link import SerialLink
    master, slave = os.openpty()
    tty.setraw(slave)
    link = SerialLink(os.ttyname(slave))
    link.open()
    try:
        # The thread sends its first probe after it has settled its priority.
        deadline = time.monotonic() + 5.0
        while not link.stats()["probes"] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert link.stats()["probes"] and link.stats()["thread_priority"] is None
        assert os.sched_getscheduler(link._thread.native_id) == os.SCHED_OTHER
    finally:
        link.close()
        os.close(master)
        os.close(slave)
