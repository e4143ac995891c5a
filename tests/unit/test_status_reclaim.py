"""Reclaiming status blocks left behind by killed owners (printhost/ipc/status.py)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

from printhost.ipc.status import StatusBlock, reclaim_stale


def _own_block_and_wait(registry: str, conn) -> None:
    block = StatusBlock.create(size=4096, registry=Path(registry))
    conn.send(block.name)
    conn.recv()  # held until killed


def test_a_dead_owners_block_is_reclaimed_and_a_live_owners_is_kept(tmp_path):
    registry = tmp_path / "run"
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_own_block_and_wait, args=(str(registry), child))
    proc.start()
    try:
        dead_name = parent.recv()
        live = StatusBlock.create(size=4096, registry=registry)
        # Both owners alive: nothing is stale.
        assert reclaim_stale(registry) == []
        assert Path("/dev/shm", dead_name).exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert Path("/dev/shm", dead_name).exists()
        assert reclaim_stale(registry) == [dead_name]
        assert not Path("/dev/shm", dead_name).exists()
        assert Path("/dev/shm", live.name).exists()
        live.close()
        assert not Path("/dev/shm", live.name).exists()
        assert list(registry.iterdir()) == []
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def test_a_new_block_reclaims_on_creation(tmp_path):
    registry = tmp_path / "run"
    old = StatusBlock.create(size=4096, registry=registry)
    # An owner that died without closing: its lock is gone, the segment and record stay.
    old._record.close()
    old._record = None
    new = StatusBlock.create(size=4096, registry=registry)
    try:
        assert not Path("/dev/shm", old.name).exists()
        assert [p.name for p in registry.iterdir()] == [new.name + ".lock"]
    finally:
        new.close()
        old._owner = False
        old.close()
