"""The status block: one writer (the control process), many lock-free readers (the API).

Layout of the shared-memory segment (little endian)::

    0   u64  sequence   odd while a write is in progress, even when stable
    8   u32  length     bytes of payload
    12  u32  reserved
    16  ...  payload    UTF-8 JSON of the status snapshot

This is a seqlock: the writer bumps the sequence to odd, writes, and bumps it to even;
a reader copies the payload between two reads of the sequence and retries if they
differ or are odd. The writer never waits for a reader, which is the point: the
control loop must not be slowed by however many HTTP clients poll status.

JSON rather than a fixed struct keeps the block extensible (the status document grows
with every subsystem). It is written and read with orjson: the standard library's
encoder took about 130 microseconds per snapshot on a busy x86 machine, a tenth of
what the control process spent per print-second while printing; orjson takes about 5
and parses it about 3x faster for the readers too. JSON has no NaN or infinity, and
orjson writes them as null, which status already uses for "no value": a non-finite
number that reached a snapshot reads as missing, never as a number, and never stops
the control loop.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import struct
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)

HEADER = struct.Struct("<QII")
DEFAULT_SIZE = 256 * 1024
_READ_ATTEMPTS = 1000


def _plain(value: Any) -> Any:
    """What orjson cannot write itself: numpy scalars and arrays (a rounded numpy float
    is still one) become plain numbers and lists."""
    tolist = getattr(value, "tolist", None)
    if tolist is None:
        raise TypeError(f"{type(value).__name__} is not JSON-ready")
    return tolist()


def _str_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_str_keys(v) for v in value]
    return value


class StatusBlockError(Exception):
    """The block could not be read consistently or the payload does not fit."""


# Names of the blocks made by this package: the prefix makes them recognisable in
# /dev/shm; the random part keeps two instances apart.
NAME_PREFIX = "printhost_"
_RECORD_SUFFIX = ".lock"


def _unlink(name: str) -> bool:
    """Remove the segment `name`; False if it was already gone."""
    try:
        shm = shared_memory.SharedMemory(name=name, create=False)
    except FileNotFoundError:
        return False
    shm.close()
    try:
        shm.unlink()
    except FileNotFoundError:
        return False
    return True


def reclaim_stale(registry: Path) -> list[str]:
    """Unlink the blocks recorded in `registry` whose owners are gone; returns their names.

    Every owner holds an exclusive `flock` on its record for as long as it runs, and the
    kernel drops that lock when the process dies however it dies (kill -9 included), so
    a record that can be locked belongs to no living process. A record still locked is
    another running instance's and is left alone.
    """
    reclaimed: list[str] = []
    try:
        records = sorted(registry.glob(NAME_PREFIX + "*" + _RECORD_SUFFIX))
    except OSError:
        return reclaimed
    for record in records:
        name = record.name[:-len(_RECORD_SUFFIX)]
        try:
            fh = open(record, "a")
        except OSError:
            continue
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if _unlink(name):
                reclaimed.append(name)
            record.unlink(missing_ok=True)
    return reclaimed


class StatusBlock:
    """A named shared-memory segment holding the latest status snapshot."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool,
                 record: IO[str] | None = None, record_path: Path | None = None) -> None:
        self._shm = shm
        self._owner = owner
        self._buf = shm.buf
        self._capacity = shm.size - HEADER.size
        self._seq = 0
        self._record = record
        self._record_path = record_path

    @classmethod
    def create(cls, size: int = DEFAULT_SIZE, registry: Path | None = None) -> "StatusBlock":
        """Create a new block. With `registry` (a directory of the state directory), first
        reclaim the blocks that earlier owners killed before they could remove them, then
        record this one there under a lock held until `close()` or death."""
        name = NAME_PREFIX + secrets.token_hex(6)
        record = record_path = None
        if registry is not None:
            registry.mkdir(mode=0o700, parents=True, exist_ok=True)
            for stale in reclaim_stale(registry):
                log.warning("removed status block %s left by an earlier run", stale)
            # The record exists and is locked before the segment does, so a kill at
            # any point leaves nothing that the next start cannot find.
            record_path = registry / (name + _RECORD_SUFFIX)
            record = open(record_path, "a")
            fcntl.flock(record, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except BaseException:
            if record is not None:
                record.close()
                os.unlink(record_path)  # type: ignore[arg-type]
            raise
        shm.buf[:HEADER.size] = HEADER.pack(0, 0, 0)
        return cls(shm, owner=True, record=record, record_path=record_path)

    @classmethod
    def attach(cls, name: str) -> "StatusBlock":
        # The control process is spawned by the supervisor and shares its resource
        # tracker, so attaching registers nothing new and exiting unlinks nothing.
        shm = shared_memory.SharedMemory(name=name, create=False)
        block = cls(shm, owner=False)
        block._seq = HEADER.unpack_from(shm.buf, 0)[0] & ~1
        return block

    @property
    def name(self) -> str:
        return self._shm.name

    # ------------------------------------------------------------------ writer
    def write(self, snapshot: dict[str, Any]) -> None:
        try:
            payload = orjson.dumps(snapshot, default=_plain)
        except TypeError:
            # A key that is not a string (json.dumps would have written str(key)).
            payload = orjson.dumps(_str_keys(snapshot), default=_plain)
        if len(payload) > self._capacity:
            raise StatusBlockError(f"status snapshot of {len(payload)} bytes exceeds the block")
        buf = self._buf
        self._seq += 1
        struct.pack_into("<Q", buf, 0, self._seq)          # odd: write in progress
        buf[HEADER.size:HEADER.size + len(payload)] = payload
        struct.pack_into("<I", buf, 8, len(payload))
        self._seq += 1
        struct.pack_into("<Q", buf, 0, self._seq)          # even: stable

    # ------------------------------------------------------------------ reader
    def read_raw(self) -> tuple[int, bytes]:
        """Return (sequence, payload bytes) of a consistent snapshot; sequence 0 means never written."""
        buf = self._buf
        for _ in range(_READ_ATTEMPTS):
            seq1, length, _ = HEADER.unpack_from(buf, 0)
            if seq1 & 1:
                time.sleep(0)
                continue
            if length > self._capacity:
                continue
            payload = bytes(buf[HEADER.size:HEADER.size + length])
            seq2 = struct.unpack_from("<Q", buf, 0)[0]
            if seq1 == seq2:
                return seq1, payload
        raise StatusBlockError("status block is being rewritten too fast to read")

    def read(self) -> tuple[int, dict[str, Any] | None]:
        seq, payload = self.read_raw()
        if seq == 0:
            return 0, None
        return seq, orjson.loads(payload)

    def close(self) -> None:
        self._buf = None  # type: ignore[assignment]
        try:
            self._shm.close()
        except BufferError:
            pass
        if self._owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
        if self._record is not None:
            if self._record_path is not None:
                self._record_path.unlink(missing_ok=True)
            self._record.close()   # releases the lock
            self._record = None
