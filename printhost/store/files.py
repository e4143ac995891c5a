"""Uploaded G-code files in `<state_dir>/gcodes`.

File names come from clients, so they are checked against strict rules instead of
being "cleaned": a name is either acceptable as given or refused with a reason. That
rules out path tricks (`../`, absolute paths, NUL, backslashes, leading dots) and makes
the name the user sees the name on disk. Letters and digits of any script are allowed
(`würfel.gcode`, `立方体.gcode`); the name is normalised to Unicode NFC first, so the same
name typed on different systems (a precomposed `ü` or `u` plus a combining diaeresis) is
one file.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

ALLOWED_SUFFIXES = (".gcode", ".gco", ".g")
MAX_NAME_CHARS = 255
# The file system's limit for one name (ext4, and most others): bytes, not characters.
MAX_NAME_BYTES = 255
# ASCII that may appear in a name besides letters and digits; the dot only between
# other characters (never first, never two in a row).
_ASCII_PUNCTUATION = frozenset("_ ()+,-.")


class FileNameError(ValueError):
    """The file name is not acceptable; the message says why."""


class FileExists(Exception):
    """A file of that name is already stored and the upload did not ask to replace it."""


def _letter_or_digit(ch: str) -> bool:
    """ASCII letters and digits, and beyond ASCII the letters (L*) and decimal digits
    (Nd) of any script."""
    if ch.isascii():
        return ch.isalnum()
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd"


def _allowed_inside(ch: str) -> bool:
    """After the first character: also combining marks (scripts such as Devanagari
    write letters with marks that have no precomposed form) and the punctuation."""
    if ch.isascii():
        return ch.isalnum() or ch in _ASCII_PUNCTUATION
    return _letter_or_digit(ch) or unicodedata.category(ch)[0] == "M"


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def check_name(name: str) -> str:
    """The name in NFC if it is acceptable; FileNameError saying why if not."""
    if not isinstance(name, str) or not name:
        raise FileNameError("file name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise FileNameError(f"file name must be at most {MAX_NAME_CHARS} characters")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise FileNameError("file name must not contain a path")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        raise FileNameError("file name must be valid Unicode text")
    name = unicodedata.normalize("NFC", name)
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise FileNameError(f"file name must be at most {MAX_NAME_BYTES} bytes in UTF-8 "
                            "(letters beyond ASCII take 2 to 4 bytes each)")
    if any(_is_control(ch) for ch in name):
        raise FileNameError("file name must not contain control characters")
    if name.startswith("."):
        raise FileNameError("file name must not start with a dot")
    if (not (_letter_or_digit(name[0]) or name[0] == "_")
            or not all(_allowed_inside(ch) for ch in name[1:]) or ".." in name):
        raise FileNameError("file name may only contain letters, digits (of any script), "
                            "spaces and . _ - ( ) + , and must start with a letter, digit or _")
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

    def commit(self, tmp: str, name: str, *, replace: bool = True) -> dict:
        """Move the complete temp file to `name`. Without `replace`, an existing file
        of that name raises FileExists and stays as it was: the new name is created
        with a hard link, which fails atomically if the name exists, so two uploads
        of one new name cannot both succeed."""
        path = self.path_for(name)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExists(path.name) from None
            except OSError:
                # A file system without hard links: check, then rename (not atomic).
                if path.exists():
                    raise FileExists(path.name) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
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
