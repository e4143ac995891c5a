"""A TinyDB storage that survives being killed half-way through a write.

TinyDB's own `JSONStorage` rewrites the database file in place: a power cut or a
SIGKILL between the truncate and the last byte leaves a file that is neither the old
nor the new state, and on the next start the user database is gone. Here every write
goes to a fresh temporary file in the same directory, is flushed and fsynced, and then
renamed over the target with `os.replace`, which POSIX guarantees to be atomic. The
directory is fsynced last so the rename itself is durable. A reader therefore sees
either the complete previous file or the complete new one, never a mixture.

A file that cannot be parsed is reported as `StoreCorrupt` rather than treated as
empty: silently starting over would wipe every account and let the service create a
fresh admin with a new password, which is both data loss and a security surprise.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from tinydb.storages import Storage


class StoreCorrupt(Exception):
    """The store file exists but does not hold a valid database; it is left untouched."""


def temp_prefix(path: str | os.PathLike[str]) -> str:
    """Name prefix of the temporary files written next to `path`.

    Exposed so the owner of the store can remove leftovers of writers that were killed
    between creating the temporary file and renaming it (see `Store`).
    """
    return f".{Path(path).name}."


TEMP_SUFFIX = ".tmp"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a file creation in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int | None) -> None:
    """Replace `path` with `data` in one step: temp file, fsync, rename, directory fsync.

    A reader (or a crash) sees the old content or the new, never a mix. `mode` sets
    the permissions; None keeps those of the file being replaced, or gives a new
    file the usual 0666 filtered by the umask.
    """
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = None
    tmp = path.with_name(f"{temp_prefix(path)}{secrets.token_hex(8)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o666 if mode is None else 0o600)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a small secret atomically, readable by the owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_file(path, data, 0o600)


class AtomicJSONStorage(Storage):
    """TinyDB storage writing the whole database atomically on every `write`.

    `mode_0600=True` (the default) creates the file readable by its owner only, since
    it holds password hashes. With `mode_0600=False` new files get the usual 0666
    filtered by the process umask, and an existing file keeps its permissions.
    """

    def __init__(self, path: str | os.PathLike[str], mode_0600: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.mode_0600 = mode_0600

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not raw.strip():
            # An empty file is what a fresh `touch` or TinyDB's own storage leaves
            # behind; TinyDB treats None as "no tables yet".
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise StoreCorrupt(f"{self.path}: not valid JSON ({exc}); "
                               "restore it from a backup or move it away") from None
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise StoreCorrupt(f"{self.path}: JSON is not a database (expected an object "
                               "of tables); restore it from a backup or move it away")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        directory = self.path.parent
        tmp = directory / f"{temp_prefix(self.path)}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        # `force_mode` is applied with fchmod because the umask would otherwise be
        # able to change it; a brand-new non-private file just takes the umask.
        force_mode: int | None = 0o600 if self.mode_0600 else None
        if force_mode is None:
            try:
                force_mode = self.path.stat().st_mode & 0o7777
            except FileNotFoundError:
                pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600 if self.mode_0600 else 0o666)
        try:
            try:
                handle = os.fdopen(fd, "w", encoding="utf-8")
            except BaseException:
                os.close(fd)
                raise
            with handle:
                if force_mode is not None:
                    os.fchmod(fd, force_mode)
                # Serialise straight into the file: no second in-memory copy of the
                # whole database, and a value JSON cannot encode fails before the
                # target is touched.
                json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
                handle.flush()
                os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_directory(directory)

    def close(self) -> None:
        """Nothing stays open between operations, so there is nothing to release."""
