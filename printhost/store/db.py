"""The one database file shared by the service and the command line.

`printhost user add` may run while the service is answering logins, so two processes
(and, inside the service, several worker threads) write the same file. Three things
keep that safe:

* an `fcntl.flock` on a separate lock file serialises processes, and a
  `threading.Lock` serialises threads of one process (flock alone would not: two
  threads opening their own descriptors are two independent lock owners, but they
  would still both be this process, and TinyDB objects are not thread-safe);
* nothing is cached between operations: each transaction reads the file afresh
  under the lock and builds a new TinyDB instance. A long-lived TinyDB keeps a query
  cache and the next document id in memory, which would hand out stale answers and
  duplicate ids once another process has written;
* a transaction buffers its changes and writes them with a single atomic replace
  when the block ends without an exception. A crash or an exception in the middle
  therefore leaves the previous state on disk, never half of a multi-step change.
"""

from __future__ import annotations

import copy
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

from tinydb import TinyDB
from tinydb.storages import Storage

from printhost.store.atomic import TEMP_SUFFIX, AtomicJSONStorage, StoreCorrupt, temp_prefix

__all__ = ["Store", "StoreCorrupt", "DB_FILENAME"]

DB_FILENAME = "printhost.json"
T = TypeVar("T")
#: What `Store.derived_if_current` returns when the file changed since the last build.
NOT_CURRENT = object()


class _TransactionStorage(Storage):
    """In-memory copy of the database for the duration of one transaction.

    `read` hands out deep copies so that a caller who mutates a nested value of a
    returned document does not change the database behind TinyDB's back.
    """

    def __init__(self, data: dict[str, Any] | None) -> None:
        super().__init__()
        self.data = data
        self.dirty = False
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this TinyDB instance belonged to a transaction that has "
                               "ended; open a new `store.transaction()`")

    def read(self) -> dict[str, Any] | None:
        self._check_open()
        return copy.deepcopy(self.data)

    def write(self, data: dict[str, Any]) -> None:
        self._check_open()
        self.data = data
        self.dirty = True

    def close(self) -> None:
        self.closed = True


class Store:
    """`<state_dir>/printhost.json`, accessed only under an inter-process lock.

    Opening the store takes the lock once to remove temporary files left by writers
    that were killed mid-write and to read the file, so a corrupt database is
    reported (as `StoreCorrupt`) when the service starts rather than at the first
    login.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.state_dir / DB_FILENAME
        self.lock_path = self.state_dir / (DB_FILENAME + ".lock")
        self._file = AtomicJSONStorage(self.path)
        self._thread_lock = threading.Lock()
        self._local = threading.local()
        # The parsed file and indexes built from it, each with the file's signature
        # when read (`derived`).
        self._cache_lock = threading.Lock()
        self._cache: tuple[tuple[int, ...] | None, dict[str, Any]] | None = None
        self._derived: dict[str, tuple[tuple[int, ...] | None, Any]] = {}
        with self._locked(exclusive=True):
            self._remove_stale_temp_files()
            self._file.read()

    # ------------------------------------------------------------------ locking

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                yield
            finally:
                # Closing the descriptor releases the flock. The lock file itself is
                # never deleted: a process blocked on the old inode would otherwise
                # hold a "lock" nobody else sees.
                os.close(fd)

    def _remove_stale_temp_files(self) -> None:
        """Delete temporaries of killed writers; safe because we hold the exclusive lock."""
        prefix = temp_prefix(self.path)
        for entry in os.scandir(self.state_dir):
            if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    # ------------------------------------------------------------------ access

    @contextmanager
    def transaction(self) -> Iterator[TinyDB]:
        """A TinyDB over the current file, held under the exclusive lock.

        Changes are written once, atomically, when the block exits normally; an
        exception discards all of them. A transaction opened while the same thread is
        already inside one joins the outer transaction (the lock is not re-taken,
        which would deadlock), so its changes commit or roll back with the outer one.
        The yielded instance must not be used after the block.
        """
        active = getattr(self._local, "db", None)
        if active is not None:
            yield active
            return
        with self._locked(exclusive=True):
            buffer = _TransactionStorage(self._file.read())
            db = TinyDB(storage=lambda: buffer)
            self._local.db = db
            self._local.buffer = buffer
            try:
                yield db
                if buffer.dirty and buffer.data is not None:
                    self._file.write(buffer.data)
            finally:
                self._local.db = None
                self._local.buffer = None
                buffer.close()

    def _signature(self) -> tuple[int, ...] | None:
        """What changes with every write: each write replaces the file with a new one
        (a new inode, created while the old one still existed) and sets its times."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def derived(self, key: str, build: Callable[[dict[str, Any]], T]) -> T:
        """`build(data)` of the whole file's content, computed again only when the file
        changed, in this process or another (a `stat` tells): what a lookup on every
        request needs (the revoked tokens, the accounts) without reading and parsing the
        file every time. `build` must return something callers do not change (a
        frozenset, a mapping they only read). Inside a transaction of this thread it is
        built from the transaction's own view, uncached."""
        buffer = getattr(self._local, "buffer", None)
        if getattr(self._local, "db", None) is not None and buffer is not None:
            return build(buffer.data or {})
        # No file yet (None) is a signature too: the first write creates one.
        signature = self._signature()
        with self._cache_lock:
            entry = self._derived.get(key)
            if entry is not None and entry[0] == signature:
                return entry[1]
            cached = self._cache
        if cached is not None and cached[0] == signature:
            data = cached[1]
        else:
            with self._locked(exclusive=False):
                signature = self._signature()
                data = self._file.read() or {}
            with self._cache_lock:
                self._cache = (signature, data)
        value = build(data)
        with self._cache_lock:
            self._derived[key] = (signature, value)
        return value

    def derived_if_current(self, key: str) -> Any:
        """The value `derived(key, ...)` last built, if the file has not changed since
        (one `stat`, no read: cheap enough for the event loop); else `NOT_CURRENT`."""
        if getattr(self._local, "db", None) is not None:
            return NOT_CURRENT
        signature = self._signature()
        with self._cache_lock:
            entry = self._derived.get(key)
        if entry is not None and entry[0] == signature:
            return entry[1]
        return NOT_CURRENT

    def table_snapshot(self, name: str) -> list[dict[str, Any]]:
        """Every document of table `name` as plain dicts, in insertion (document id) order.

        Reads take a shared lock: they may run alongside other readers, and a writer
        waits until they finish. Inside a transaction of the same thread the
        transaction's own, possibly uncommitted, view is returned.
        """
        active = getattr(self._local, "db", None)
        if active is not None:
            return [dict(doc) for doc in active.table(name).all()]
        with self._locked(exclusive=False):
            data = self._file.read() or {}
        table = data.get(name, {})
        try:
            ordered = sorted(table.items(), key=lambda item: int(item[0]))
        except ValueError:
            raise StoreCorrupt(f"{self.path}: table {name!r} has a non-numeric "
                               "document id") from None
        if not all(isinstance(doc, dict) for _, doc in ordered):
            raise StoreCorrupt(f"{self.path}: table {name!r} holds a document that is "
                               "not a JSON object")
        return [dict(doc) for _, doc in ordered]
