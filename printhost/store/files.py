"""Uploaded G-code files in `<state_dir>/gcodes`, in folders, with what the slicer said.

File names come from clients, so they are checked against strict rules instead of
being "cleaned": a name is either acceptable as given or refused with a reason. That
rules out path tricks (`../`, absolute paths, NUL, backslashes, leading dots) and makes
the name the user sees the name on disk. Letters and digits of any script are allowed
(`würfel.gcode`, `立方体.gcode`); the name is normalised to Unicode NFC first, so the same
name typed on different systems (a precomposed `ü` or `u` plus a combining diaeresis) is
one file.

A file is addressed by its path relative to the files' root: `cube.gcode`,
`parts/brackets/left.gcode`. Every component is checked with the same rules (folders
need no G-code suffix), at most `MAX_DEPTH` folders deep.

What the slicer wrote about a file (`gcode_meta`), its sha256 and its thumbnails are
kept beside it in the hidden `.meta/` tree (`.meta/<path>.json`, `.meta/<path>.<W>x<H>.png`),
made when the file is stored and made again whenever the file's size or modification
time no longer match (a file copied in by other means is parsed when first asked
about). Names starting with a dot are never the user's, so `.meta` cannot collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from printhost.store.atomic import fsync_directory, replace_file
from printhost.store.gcode_meta import read_metadata

ALLOWED_SUFFIXES = (".gcode", ".gco", ".g")
MAX_NAME_CHARS = 255
# The file system's limit for one name (ext4, and most others): bytes, not characters.
MAX_NAME_BYTES = 255
#: Folders nested at most this deep below the root.
MAX_DEPTH = 8
#: A whole path (folders and name), in UTF-8 bytes.
MAX_PATH_BYTES = 1024
META_DIR = ".meta"
# Bumped when what the sidecar holds changes: older sidecars are made again.
_META_VERSION = 1
_HASH_CHUNK = 1 << 20
_SIDECAR_SUFFIX = re.compile(r"\.json|\.[0-9]+x[0-9]+\.png")
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


def check_name(name: str, *, folder: bool = False) -> str:
    """The name in NFC if it is acceptable; FileNameError saying why if not. A folder's
    name follows the same rules without the G-code suffix."""
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
    if name.endswith("."):
        raise FileNameError("name must not end with a dot")
    if (not (_letter_or_digit(name[0]) or name[0] == "_")
            or not all(_allowed_inside(ch) for ch in name[1:]) or ".." in name):
        raise FileNameError("file name may only contain letters, digits (of any script), "
                            "spaces and . _ - ( ) + , and must start with a letter, digit or _")
    if not folder and not name.lower().endswith(ALLOWED_SUFFIXES):
        raise FileNameError("must end in .gcode, .gco or .g")
    return name


def check_path(path: str, *, folder: bool = False) -> str:
    """A relative path (`a/b/c.gcode`, or a folder's `a/b`) in NFC with every component
    checked; FileNameError saying why if not. The empty path is the root folder."""
    if not isinstance(path, str):
        raise FileNameError("path must be text")
    if folder and path == "":
        return ""
    if "\\" in path or "\x00" in path:
        raise FileNameError("path must use / between folders and contain no NUL")
    parts = path.split("/")
    if any(p == "" for p in parts):
        raise FileNameError("path must be relative, without empty parts (no leading, "
                            "trailing or doubled /)")
    if len(parts) - (0 if folder else 1) > MAX_DEPTH:
        raise FileNameError(f"folders may be nested at most {MAX_DEPTH} deep")
    checked = [check_name(p, folder=True) for p in parts[:-1]]
    checked.append(check_name(parts[-1], folder=folder))
    joined = "/".join(checked)
    if len(joined.encode("utf-8")) > MAX_PATH_BYTES:
        raise FileNameError(f"path must be at most {MAX_PATH_BYTES} bytes in UTF-8")
    return joined


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FolderNotEmpty(Exception):
    """A folder that still holds files is removed only when asked to."""




class GCodeFiles:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "gcodes"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.meta_root = self.root / META_DIR
        self.remove_partials()

    def remove_partials(self) -> None:
        """Remove what uploads cut short by a crash or a kill left behind. Called when
        the service starts, when no upload can be running."""
        for entry in self.root.glob(".upload-*.part"):
            entry.unlink(missing_ok=True)

    # ------------------------------------------------------------------ paths
    def path_for(self, path: str, *, folder: bool = False) -> Path:
        """The absolute path of a checked relative path (FileNameError if not allowed)."""
        rel = check_path(path, folder=folder)
        full = self.root / rel if rel else self.root
        # Belt and braces: the checked path can never leave the root, not even through a
        # symbolic link placed in the tree by other means.
        root = self.root.resolve()
        resolved = full.resolve()
        if resolved != root and root not in resolved.parents:
            raise FileNameError("path must stay inside the files' folder")
        return full

    def relative(self, full: Path) -> str:
        return full.relative_to(self.root).as_posix()

    def exists(self, path: str) -> bool:
        return self.path_for(path).is_file()

    # ------------------------------------------------------------------ listing
    def _folder(self, folder: str) -> Path:
        base = self.path_for(folder, folder=True)
        if not base.is_dir():
            raise FileNotFoundError(folder)
        return base

    def info(self, full: Path) -> dict[str, Any]:
        st = full.stat()
        return {"name": full.name, "path": self.relative(full), "size": st.st_size,
                "modified": _utc(st.st_mtime)}

    def list(self, folder: str = "") -> list[dict[str, Any]]:
        """Every file under `folder` (all folders deep), sorted by path."""
        base = self._folder(folder)
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                try:
                    out.append(self.info(Path(dirpath) / name))
                except FileNotFoundError:
                    continue  # deleted by a concurrent request since the folder was read
        out.sort(key=lambda f: f["path"])
        return out

    def folders(self, folder: str = "") -> list[dict[str, Any]]:
        """Every folder under `folder` (all deep), with its path and modification time."""
        base = self._folder(folder)
        out = []
        for dirpath, dirnames, _ in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in dirnames:
                full = Path(dirpath) / name
                try:
                    out.append({"path": self.relative(full),
                                "modified": _utc(full.stat().st_mtime)})
                except FileNotFoundError:
                    continue
        out.sort(key=lambda f: f["path"])
        return out

    def usage_bytes(self) -> int:
        """Bytes held by stored files (the sidecars' few KiB each not counted)."""
        return sum(f["size"] for f in self.list())

    def storage(self, quota_bytes: int, reserve_bytes: int,
                used_bytes: int | None = None) -> dict[str, Any]:
        """Usage against the quota (0: none) and the file system's free space."""
        st = os.statvfs(self.root)
        return {"used_bytes": self.usage_bytes() if used_bytes is None else used_bytes,
                "quota_bytes": quota_bytes or None, "free_bytes": st.f_bavail * st.f_frsize,
                "reserve_bytes": reserve_bytes}

    # ------------------------------------------------------------------ storing
    def open_temp(self) -> tuple[IO[bytes], str]:
        """A temp file in the root, so the final rename is atomic (one file system)."""
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.root)
        return os.fdopen(fd, "wb"), tmp

    def commit(self, tmp: str, name: str, *, replace: bool = True,
               sha256: str | None = None) -> dict[str, Any]:
        """Move the complete temp file to `name` (a relative path; its folders are made).
        Without `replace`, an existing file of that name raises FileExists and stays as
        it was: the new name is created with a hard link, which fails atomically if the
        name exists, so two uploads of one new name cannot both succeed. The file's
        metadata is parsed and kept before this returns."""
        path = self.path_for(name)
        self._make_parents(path)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExists(self.relative(path)) from None
            except OSError:
                # A file system without hard links: check, then rename (not atomic).
                if path.exists():
                    raise FileExists(self.relative(path)) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
        fsync_directory(path.parent)
        self._drop_meta(self.relative(path))
        self.metadata(self.relative(path), sha256=sha256)
        return self.info(path)

    def _make_parents(self, path: Path) -> None:
        """Make the folders above `path`; FileExists when one of them is a file."""
        parent = path.parent
        if parent == self.root:
            return
        for folder in reversed(parent.relative_to(self.root).parents[:-1]):
            self._make_folder_at(self.root / folder)
        self._make_folder_at(parent)

    def _make_folder_at(self, folder: Path) -> None:
        try:
            folder.mkdir(mode=0o750)
        except FileExistsError:
            if not folder.is_dir():
                raise FileExists(self.relative(folder)) from None

    def discard(self, tmp: str) -> None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass

    def delete(self, name: str) -> None:
        path = self.path_for(name)
        path.unlink()
        self._drop_meta(self.relative(path))

    # ------------------------------------------------------------------ folders
    def make_folder(self, folder: str) -> dict[str, Any]:
        """Create a folder (and its parents); FileExists if it exists already."""
        full = self.path_for(folder, folder=True)
        if full == self.root:
            raise FileExists("/")
        self._make_parents(full)
        try:
            full.mkdir(mode=0o750)
        except FileExistsError:
            raise FileExists(self.relative(full)) from None
        fsync_directory(full.parent)
        return {"path": self.relative(full), "modified": _utc(full.stat().st_mtime)}

    def delete_folder(self, folder: str, *, recursive: bool = False) -> None:
        """Remove a folder: an empty one, or with `recursive` everything in it.
        FileNotFoundError if there is none, FolderNotEmpty if it holds anything."""
        full = self.path_for(folder, folder=True)
        if full == self.root or not full.is_dir():
            raise FileNotFoundError(folder)
        rel = self.relative(full)
        if recursive:
            shutil.rmtree(full)
        else:
            try:
                full.rmdir()
            except OSError:
                raise FolderNotEmpty(rel) from None
        shutil.rmtree(self.meta_root / rel, ignore_errors=True)
        fsync_directory(full.parent)

    def move(self, source: str, dest: str) -> dict[str, Any]:
        """Rename or move a file, or a folder when `source` is one, to `dest` (a path that
        must not exist). FileNotFoundError, FileExists or FileNameError."""
        src = self.path_for(source, folder=True)
        if src == self.root or not src.exists():
            raise FileNotFoundError(source)
        is_folder = src.is_dir()
        dst = self.path_for(dest, folder=is_folder)
        if dst == self.root:
            raise FileNameError("the destination must name a file or folder")
        if is_folder and (dst == src or src in dst.parents):
            raise FileNameError("a folder cannot be moved into itself")
        self._make_parents(dst)
        # os.rename would replace an existing file: a hard link (files) or mkdir
        # (folders) claims the new name atomically first.
        if is_folder:
            try:
                dst.mkdir(mode=0o750)
            except FileExistsError:
                raise FileExists(self.relative(dst)) from None
            os.replace(src, dst)  # replaces the empty folder just made
        else:
            try:
                os.link(src, dst)
            except FileExistsError:
                raise FileExists(self.relative(dst)) from None
            except OSError:
                # A file system without hard links: check, then rename (not atomic).
                if dst.exists():
                    raise FileExists(self.relative(dst)) from None
                os.replace(src, dst)
            else:
                os.unlink(src)
        fsync_directory(dst.parent)
        if src.parent != dst.parent:
            fsync_directory(src.parent)
        old_meta, new_meta = self.meta_root / self.relative(src), self.meta_root / self.relative(dst)
        if is_folder:
            if old_meta.is_dir():
                new_meta.parent.mkdir(parents=True, exist_ok=True)
                os.replace(old_meta, new_meta)
            return {"path": self.relative(dst), "modified": _utc(dst.stat().st_mtime)}
        self._move_meta(self.relative(src), self.relative(dst))
        return self.info(dst)

    # ------------------------------------------------------------------ metadata
    def _meta_file(self, rel: str) -> Path:
        return self.meta_root / f"{rel}.json"

    def _thumb_file(self, rel: str, width: int, height: int) -> Path:
        return self.meta_root / f"{rel}.{width}x{height}.png"

    def _sidecars(self, rel: str) -> list[tuple[Path, str]]:
        """The sidecar files of `rel`, each with its suffix (`.json`, `.300x300.png`);
        exactly those: `a.gcode`'s are not `a.gcode.x.gcode`'s."""
        folder = (self.meta_root / rel).parent
        if not folder.is_dir():
            return []
        name = Path(rel).name
        out = []
        for entry in folder.iterdir():
            rest = entry.name[len(name):] if entry.name.startswith(name) else ""
            if _SIDECAR_SUFFIX.fullmatch(rest) and entry.is_file():
                out.append((entry, rest))
        return out

    def _drop_meta(self, rel: str) -> None:
        for entry, _ in self._sidecars(rel):
            entry.unlink(missing_ok=True)

    def _move_meta(self, old: str, new: str) -> None:
        self._drop_meta(new)
        new_dir = (self.meta_root / new).parent
        for entry, suffix in self._sidecars(old):
            new_dir.mkdir(parents=True, exist_ok=True)
            os.replace(entry, new_dir / (Path(new).name + suffix))

    def metadata(self, path: str, *, sha256: str | None = None) -> dict[str, Any]:
        """The file's info with its sha256 and what its slicer wrote (`metadata`), from
        the sidecar when it matches the file, else parsed now (reads the file once for
        the hash; run it in a worker thread)."""
        full = self.path_for(path)
        rel = self.relative(full)
        st = full.stat()
        sidecar = self._meta_file(rel)
        try:
            doc = json.loads(sidecar.read_bytes())
            if (doc.get("version") == _META_VERSION and doc.get("size") == st.st_size
                    and doc.get("mtime_ns") == st.st_mtime_ns):
                return self._with_info(full, doc)
        except (OSError, ValueError):
            pass
        parsed = read_metadata(full)
        doc = {"version": _META_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
               "sha256": sha256 or sha256_of(full), "metadata": parsed.to_json()}
        self._drop_meta(rel)
        sidecar.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        for thumb in parsed.thumbnails:
            replace_file(self._thumb_file(rel, thumb.width, thumb.height), thumb.png, 0o640)
        replace_file(sidecar, json.dumps(doc).encode(), 0o640)
        return self._with_info(full, doc)

    def _with_info(self, full: Path, doc: dict[str, Any]) -> dict[str, Any]:
        out = self.info(full)
        out["sha256"] = doc["sha256"]
        out["metadata"] = doc["metadata"]
        return out

    def thumbnail(self, path: str, width: int, height: int) -> Path:
        """The PNG of one of the file's thumbnails; FileNotFoundError if it has none of
        that size."""
        rel = self.metadata(path)["path"]
        thumb = self._thumb_file(rel, width, height)
        if not thumb.is_file():
            raise FileNotFoundError(f"{rel} {width}x{height}")
        return thumb
