"""The JSON store: atomic writes, corruption handling, transactions and cross-process locking."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import printhost
from printhost.store.atomic import AtomicJSONStorage, StoreCorrupt
from printhost.store.db import DB_FILENAME, Store

REPO_ROOT = Path(printhost.__file__).resolve().parents[1]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _run_child(tmp_path: Path, name: str, code: str, *args: str, **popen) -> subprocess.Popen:
    script = tmp_path / name
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script), *args], env=_child_env(), **popen)


# --------------------------------------------------------------------------- storage


def test_storage_round_trip_and_mode(tmp_path):
    path = tmp_path / "db.json"
    storage = AtomicJSONStorage(path)
    assert storage.read() is None
    data = {"t": {"1": {"name": "ünïcode", "n": 3, "nested": [1, {"a": None}]}}}
    storage.write(data)
    assert AtomicJSONStorage(path).read() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["db.json"]  # no temp file left


def test_storage_tightens_mode_of_existing_file(tmp_path):
    path = tmp_path / "db.json"
    path.write_text("{}")
    path.chmod(0o644)
    AtomicJSONStorage(path).write({"t": {}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_storage_without_private_mode_keeps_existing_mode(tmp_path):
    path = tmp_path / "db.json"
    path.write_text("{}")
    path.chmod(0o640)
    AtomicJSONStorage(path, mode_0600=False).write({"t": {}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_empty_file_reads_as_none(tmp_path):
    path = tmp_path / "db.json"
    path.write_bytes(b"")
    assert AtomicJSONStorage(path).read() is None
    path.write_bytes(b"  \n")
    assert AtomicJSONStorage(path).read() is None


@pytest.mark.parametrize("content", [b'{"users": {"1": {"username": "al',
                                     b"\xff\xfe garbage", b"[1, 2, 3]", b'{"users": 5}'])
def test_corrupt_file_raises_and_is_left_alone(tmp_path, content):
    path = tmp_path / "db.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt):
        AtomicJSONStorage(path).read()
    with pytest.raises(StoreCorrupt):
        _store_over(tmp_path, content)
    assert path.read_bytes() == content


def _store_over(tmp_path: Path, content: bytes) -> Store:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / DB_FILENAME).write_bytes(content)
    return Store(state)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "db.json"
    storage = AtomicJSONStorage(path)
    storage.write({"t": {"1": {"v": 1}}})
    with pytest.raises(TypeError):
        storage.write({"t": {"1": {"v": object()}}})
    assert storage.read() == {"t": {"1": {"v": 1}}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.json"]


# --------------------------------------------------------------------------- store


def test_store_round_trip_between_instances(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        db.table("things").insert({"name": "a"})
        db.table("things").insert({"name": "b"})
    other = Store(tmp_path)
    assert other.table_snapshot("things") == [{"name": "a"}, {"name": "b"}]
    assert other.table_snapshot("missing") == []
    assert stat.S_IMODE((tmp_path / DB_FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / (DB_FILENAME + ".lock")).stat().st_mode) == 0o600


def test_store_sees_writes_of_another_instance(tmp_path):
    """A long-lived Store must not serve cached data after another process wrote."""
    first, second = Store(tmp_path), Store(tmp_path)
    with first.transaction() as db:
        db.table("t").insert({"n": 1})
    with second.transaction() as db:
        assert db.table("t").all() == [{"n": 1}]
        db.table("t").insert({"n": 2})
    with first.transaction() as db:
        # A fresh TinyDB per transaction: the next id comes from the file, not memory.
        doc_id = db.table("t").insert({"n": 3})
        assert doc_id == 3
    assert [d["n"] for d in second.table_snapshot("t")] == [1, 2, 3]


def test_exception_rolls_back_whole_transaction(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        db.table("t").insert({"n": 1})
    before = (tmp_path / DB_FILENAME).read_bytes()
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.table("t").insert({"n": 2})
            db.table("t").update({"n": 99})
            raise RuntimeError("boom")
    assert store.table_snapshot("t") == [{"n": 1}]
    assert (tmp_path / DB_FILENAME).read_bytes() == before


def test_read_only_transaction_does_not_write(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        db.table("t").insert({"n": 1})
    mtime = (tmp_path / DB_FILENAME).stat().st_mtime_ns
    inode = (tmp_path / DB_FILENAME).stat().st_ino
    with store.transaction() as db:
        assert len(db.table("t")) == 1
    assert (tmp_path / DB_FILENAME).stat().st_ino == inode
    assert (tmp_path / DB_FILENAME).stat().st_mtime_ns == mtime


def test_nested_transaction_joins_outer(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as outer:
        outer.table("t").insert({"n": 1})
        with store.transaction() as inner:
            assert inner is outer
            inner.table("t").insert({"n": 2})
        # Uncommitted changes are visible to the same thread, not on disk yet.
        assert [d["n"] for d in store.table_snapshot("t")] == [1, 2]
        assert not (tmp_path / DB_FILENAME).exists()
    assert [d["n"] for d in Store(tmp_path).table_snapshot("t")] == [1, 2]


def test_db_unusable_after_transaction(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        pass
    with pytest.raises(RuntimeError):
        db.table("t").insert({"n": 1})


def test_mutating_returned_document_does_not_leak_into_store(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        db.table("t").insert({"tags": ["a"]})
    with store.transaction() as db:
        doc = db.table("t").all()[0]
        doc["tags"].append("sneaky")
        db.table("other").insert({"x": 1})  # some unrelated write commits the buffer
    assert store.table_snapshot("t") == [{"tags": ["a"]}]


def test_threads_do_not_lose_updates(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        db.table("c").insert({"n": 0})

    def bump():
        for _ in range(25):
            with store.transaction() as db:
                table = db.table("c")
                table.update({"n": table.all()[0]["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.table_snapshot("c") == [{"n": 100}]


def test_open_removes_stale_temp_files(tmp_path):
    store = Store(tmp_path)
    with store.transaction() as db:
        db.table("t").insert({"n": 1})
    stale = tmp_path / f".{DB_FILENAME}.deadbeefdeadbeef.tmp"
    stale.write_text('{"t": {"1": {"n": 2')
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("keep me")
    Store(tmp_path)
    assert not stale.exists()
    assert unrelated.exists()


# --------------------------------------------------------------------------- crash safety

_WRITER = """
import sys, hashlib
from printhost.store.db import Store

state_dir = sys.argv[1]
store = Store(state_dir)
seq = 0
for doc in store.table_snapshot("meta"):
    seq = doc["seq"]

def blob(seq, i):
    seed = hashlib.sha256(f"{seq}:{i}".encode()).hexdigest()
    return seed * 4000  # 256 kB per record

print("ready", seq, flush=True)
while True:
    seq += 1
    with store.transaction() as db:
        db.drop_tables()
        db.table("records").insert_multiple(
            {"seq": seq, "i": i, "blob": blob(seq, i)} for i in range(4))
        db.table("meta").insert({"seq": seq})
    print(seq, flush=True)
"""


def _check_consistent(state_dir: Path) -> int:
    """Return the stored seq after checking every record belongs to that same seq."""
    store = Store(state_dir)  # raises StoreCorrupt on a torn file
    meta = store.table_snapshot("meta")
    records = store.table_snapshot("records")
    if not meta:
        assert records == []
        return 0
    assert len(meta) == 1
    seq = meta[0]["seq"]
    assert [r["i"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert r["seq"] == seq
        assert r["blob"] == hashlib.sha256(f"{seq}:{r['i']}".encode()).hexdigest() * 4000
    return seq


def test_sigkill_at_random_moments_never_leaves_partial_state(tmp_path):
    rng = random.Random(1234)
    state_dir = tmp_path / "state"
    committed = 0
    torn_writes = 0
    for _ in range(24):
        child = _run_child(tmp_path, "writer.py", _WRITER, str(state_dir),
                           stdout=subprocess.PIPE, text=True)
        ready = child.stdout.readline().split()
        assert ready[0] == "ready" and int(ready[1]) == committed
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        lines = [line for line in out.split("\n") if line.strip()]
        last_reported = int(lines[-1]) if lines else committed
        leftovers = [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
        torn_writes += bool(leftovers)
        seq = _check_consistent(state_dir)
        # Everything the child reported as committed is on disk; at most the one
        # write in flight when it died may have landed as well.
        assert seq in (last_reported, last_reported + 1)
        assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
        committed = seq
    assert committed > 0
    # The kills must actually have hit writes in progress, or the test proved little.
    assert torn_writes > 0


# --------------------------------------------------------------------------- process lock

_INCREMENTER = """
import os, sys, time
from printhost.store.db import Store

state_dir, go = sys.argv[1], sys.argv[2]
store = Store(state_dir)
while not os.path.exists(go):
    time.sleep(0.001)
for _ in range(200):
    with store.transaction() as db:
        table = db.table("counter")
        value = table.all()[0]["n"]
        table.update({"n": value + 1})
"""


def test_lock_serialises_two_processes(tmp_path):
    state_dir = tmp_path / "state"
    store = Store(state_dir)
    with store.transaction() as db:
        db.table("counter").insert({"n": 0})
    go = tmp_path / "go"
    children = [_run_child(tmp_path, "inc.py", _INCREMENTER, str(state_dir), str(go))
                for _ in range(2)]
    time.sleep(0.3)  # let both import and wait on the start flag
    go.touch()
    for child in children:
        assert child.wait(timeout=60) == 0
    assert store.table_snapshot("counter") == [{"n": 400}]


def test_derived_values_follow_every_write_of_any_process(tmp_path):
    """An index built from the file is rebuilt after a write by this store, by another
    store on the same directory (another process: the CLI), and never goes stale; it is
    not rebuilt while nothing changed."""
    from printhost.store import revocations
    ours, theirs = Store(tmp_path), Store(tmp_path)
    builds: list[int] = []

    def count_tables(data: dict) -> int:
        builds.append(1)
        return len(data.get("t") or {})

    assert ours.derived("n", count_tables) == 0
    assert ours.derived("n", count_tables) == 0 and len(builds) == 1   # cached
    with theirs.transaction() as db:
        db.table("t").insert({"a": 1})
    assert ours.derived("n", count_tables) == 1 and len(builds) == 2
    with ours.transaction() as db:
        db.table("t").insert({"a": 2})
        assert ours.derived("n", count_tables) == 2    # the transaction's own view
    assert ours.derived("n", count_tables) == 2
    # The security-relevant case: a logout written by another process counts at once.
    now = 1_000_000.0
    assert not revocations.is_revoked(ours, "jti-1", "sid-1")
    revocations.revoke(theirs, [(revocations.JTI, "jti-1", now + 60)], now)
    assert revocations.is_revoked(ours, "jti-1", "sid-1")
    revocations.revoke(theirs, [(revocations.SID, "sid-2", now + 60)], now)
    assert revocations.is_revoked(ours, "other", "sid-2")


def test_derived_if_current_never_answers_for_a_changed_file(tmp_path):
    from printhost.store.db import NOT_CURRENT
    ours, theirs = Store(tmp_path), Store(tmp_path)
    with theirs.transaction() as db:
        db.table("t").insert({"a": 1})
    assert ours.derived_if_current("n") is NOT_CURRENT        # never built
    ours.derived("n", lambda data: len(data.get("t") or {}))
    assert ours.derived_if_current("n") == 1
    with theirs.transaction() as db:
        db.table("t").insert({"a": 2})
    assert ours.derived_if_current("n") is NOT_CURRENT        # another process wrote
    assert ours.derived("n", lambda data: len(data.get("t") or {})) == 2
    with ours.transaction():
        assert ours.derived_if_current("n") is NOT_CURRENT    # inside a transaction
