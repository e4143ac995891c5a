"""Uploaded G-code files in `<state_dir>/gcodes`.

File names come from clients, so they are checked against a strict pattern instead of
being "cleaned": a name is either acceptable as given or refused with a reason. That
rules out path tricks (`../`, absolute paths, NUL, backslashes, leading dots) and makes
the name the user sees the name on disk.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

ALLOWED_SUFFIXES = (".gcode", ".gco", ".g")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. ()+,-]{0,254}$")


class FileNameError(ValueError):
    """The file name is not acceptable; the message says why."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise FileNameError("file name must not be empty")
    if len(name) > 255:
        raise FileNameError("file name must be at most 255 characters")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise FileNameError("file name must not contain a path")
    if not _NAME_RE.match(name) or ".." in name:
        raise FileNameError("file name may only contain letters, digits, spaces and . _ - ( ) + , "
                            "and must not start with a dot")
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise FileNameError("must end in .gcode, .gco or .g")
    return name


class GCodeFiles:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "gcodes"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)

    def path_for(self, name: str) -> Path:
        path = self.root / check_name(name)
        # Belt and braces: the checked name can never leave the directory.
        if path.resolve().parent != self.root.resolve():
            raise FileNameError("file name must not contain a path")
        return path

    def exists(self, name: str) -> bool:
        return self.path_for(name).is_file()

    def info(self, path: Path) -> dict:
        st = path.stat()
        modified = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
        return {"name": path.name, "size": st.st_size,
                "modified": modified.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def list(self) -> list[dict]:
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                try:
                    out.append(self.info(entry))
                except FileNotFoundError:
                    continue  # deleted by a concurrent request since the directory was read
        return out

    def open_temp(self) -> tuple[IO[bytes], str]:
        """A temp file in the same directory, so the final rename is atomic."""
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.root)
        return os.fdopen(fd, "wb"), tmp

    def commit(self, tmp: str, name: str) -> dict:
        path = self.path_for(name)
        os.replace(tmp, path)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self.info(path)

    def discard(self, tmp: str) -> None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass

    def delete(self, name: str) -> None:
        self.path_for(name).unlink()
