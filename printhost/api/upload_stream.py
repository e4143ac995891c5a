"""A multipart upload streamed straight into its partial file in the state directory.

Starlette's `request.form()` spools every file part to the system's temp directory
(/tmp, often a RAM disk on a Pi) before the route sees it: a body over the limit had
already filled that much of /tmp when it was refused. Here the part named `file` is
written, as it arrives, to the partial file next to its final place
(`GCodeFiles.open_temp`), so:

- the size limit (BodyLimitMiddleware, by Content-Length or while counting) stops the
  body where it is, and the partial file is removed;
- the free space in the state directory is checked before (by Content-Length) and
  every few MiB while writing: an upload that would leave less than
  `server.health_min_free_mb` free is refused with 507 and removed;
- the name is checked (400) and, without overwrite, an existing file refused (409) as
  soon as the part's headers arrive, before its data is stored;
- the G-code check reads the start of the data as it passes (400 for anything else);
- with a storage quota (`server.storage_quota_mb`), the stored files plus this one
  may not exceed it (507);
- the data's sha256 is computed as it passes; a client that sent one (a `checksum`
  field, 64 hex digits) gets 400 if they differ, and nothing is stored.

Besides the file, a `folder` field before the file part (or the `folder` query
parameter) names the folder to store it in: where the file goes must be known when
its part begins, for the checks above. The `checksum` field may come before or after.

Parsing and writing run in a worker thread, a few hundred KiB at a time.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from printhost.api.errors import ApiError
from printhost.store.files import FileNameError, GCodeFiles, check_name
from printhost.store.gcode_check import GCodeCheck, NotGCode

MAX_FIELDS = 8
MAX_FIELD_BYTES = 4096
MAX_HEADER_BYTES = 8192
# Free space is checked each time this much more has been written.
SPACE_CHECK_BYTES = 8 * 1024 * 1024
MALFORMED = "Malformed multipart body"
# Form fields kept (others are read and ignored).
KEPT_FIELDS = ("folder", "checksum")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _decode(value: bytes, charset: str) -> str:
    try:
        return value.decode(charset)
    except UnicodeDecodeError:
        return value.decode("latin-1")


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def insufficient_storage(need: int | None, reserve: int) -> ApiError:
    what = f"{need} bytes" if need is not None else "the rest of the upload"
    return ApiError(507, f"Not enough free space for {what}: the state directory must keep "
                         f"{reserve // (1024 * 1024)} MiB free")


def over_quota(used: int, quota: int) -> ApiError:
    return ApiError(507, f"Storage quota reached: stored files use {used // (1024 * 1024)} "
                         f"of {quota // (1024 * 1024)} MiB; delete files to make room")


class UploadReceiver:
    """Feed the body with `feed` (in a worker thread), then call `finish`; `abort`
    removes the partial file on any failure. After `finish`, `name` is the checked
    (NFC) file name and `tmp` the complete partial file, fsynced."""

    def __init__(self, files: GCodeFiles, content_type: str, *, overwrite: bool,
                 reserve_bytes: int, folder: str | None = None, quota_bytes: int = 0,
                 used_bytes: int = 0) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, MALFORMED)
        charset = params.get(b"charset", b"utf-8").decode("latin-1")
        try:
            self.charset = codecs.lookup(charset).name
        except LookupError:
            self.charset = "latin-1"
        self.files = files
        self.overwrite = overwrite
        self.reserve_bytes = reserve_bytes
        self.quota_bytes = quota_bytes
        self.used_bytes = used_bytes
        # None: not given in the query; a `folder` field may still come.
        self.folder = folder
        self.fields: dict[str, str] = {}
        self.sha256: str | None = None
        self._hash = hashlib.sha256()
        self._field_name = ""
        self._field_value = bytearray()
        self._filename = ""
        self.name: str | None = None
        self.tmp: str | None = None
        self._fh: IO[bytes] | None = None
        self._check = GCodeCheck()
        self._written = 0
        self._next_space_check = SPACE_CHECK_BYTES
        self._file_parts = 0
        self._fields = 0
        self._part = ""              # "upload", "field" or "skip" for the current part
        self._part_bytes = 0
        self._disposition = b""
        self._header_name = b""
        self._header_value = b""
        self._header_bytes = 0
        self._upload_done = False
        self._ended = False
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_end": self._on_end,
        })

    # -- driving

    def feed(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except ApiError:
            raise
        except NotGCode as exc:
            raise ApiError(400, "Invalid upload", fields={"file": str(exc)}) from None
        except Exception:
            raise ApiError(400, MALFORMED) from None

    def finish(self) -> None:
        try:
            self._parser.finalize()
        except ApiError:
            raise
        except Exception:
            raise ApiError(400, MALFORMED) from None
        if not self._ended:
            raise ApiError(400, MALFORMED)
        if not self._upload_done:
            raise ApiError(400, "Invalid upload",
                           fields={"file": "required (a file part named 'file')"})
        folder = self.fields.get("folder", self.folder) or ""
        path = self.files.path_for(f"{folder}/{self._filename}" if folder else self._filename)
        self.name = self.files.relative(path)
        self.sha256 = self._hash.hexdigest()
        given = self.fields.get("checksum")
        if given is not None:
            if not _SHA256.fullmatch(given.strip()):
                raise ApiError(400, "Invalid upload",
                               fields={"checksum": "must be the file's sha256 in hex "
                                                   "(64 digits)"})
            if given.strip().lower() != self.sha256:
                raise ApiError(400, "Invalid upload",
                               fields={"checksum": f"does not match the data received "
                                                   f"(sha256 {self.sha256}); the upload "
                                                   "was damaged or the wrong file was sent"})

    def abort(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        if self.tmp is not None:
            self.files.discard(self.tmp)
            self.tmp = None

    # -- parser callbacks

    def _on_part_begin(self) -> None:
        self._part = ""
        self._part_bytes = 0
        self._disposition = b""
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._count_header(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise ApiError(400, MALFORMED)

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, MALFORMED)
        if b"filename" not in options:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise ApiError(400, MALFORMED)
            self._part = "field"
            self._field_name = _decode(options[b"name"], self.charset)
            self._field_value.clear()
            return
        self._file_parts += 1
        if self._file_parts > 1:
            raise ApiError(400, MALFORMED)
        if _decode(options[b"name"], self.charset) != "file":
            self._part = "skip"
            return
        filename = _decode(options[b"filename"], self.charset)
        try:
            # The name alone: a client's file name is never a path into our folders.
            self._filename = check_name(filename)  # NFC
        except FileNameError as exc:
            raise ApiError(400, "Invalid upload", fields={"file": str(exc)}) from None
        folder = self.fields.get("folder", self.folder) or ""
        try:
            path = self.files.path_for(f"{folder}/{self._filename}" if folder
                                       else self._filename)
        except FileNameError as exc:
            raise ApiError(400, "Invalid upload", fields={"folder": str(exc)}) from None
        if not self.overwrite and path.exists():
            raise ApiError(409, f"A file named {self.files.relative(path)!r} exists already; "
                                "upload with ?overwrite=true to replace it")
        self._fh, self.tmp = self.files.open_temp()
        self._part = "upload"

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "upload":
            chunk = data[start:end]
            self._check.feed(chunk)
            self._hash.update(chunk)
            assert self._fh is not None
            self._fh.write(chunk)
            self._written += len(chunk)
            if self.quota_bytes and self.used_bytes + self._written > self.quota_bytes:
                raise over_quota(self.used_bytes, self.quota_bytes)
            if self._written >= self._next_space_check:
                self._next_space_check = self._written + SPACE_CHECK_BYTES
                self._fh.flush()
                if free_bytes(str(self.files.root)) < self.reserve_bytes:
                    raise insufficient_storage(None, self.reserve_bytes)
        elif self._part == "field":
            self._part_bytes += end - start
            if self._part_bytes > MAX_FIELD_BYTES:
                raise ApiError(400, MALFORMED)
            if self._field_name in KEPT_FIELDS:
                self._field_value += data[start:end]

    def _on_part_end(self) -> None:
        if self._part == "upload":
            try:
                self._check.finish()
            except NotGCode as exc:
                raise ApiError(400, "Invalid upload", fields={"file": str(exc)}) from None
            assert self._fh is not None
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            self._upload_done = True
        elif self._part == "field" and self._field_name in KEPT_FIELDS:
            if self._field_name in self.fields:
                raise ApiError(400, "Invalid upload",
                               fields={self._field_name: "given more than once"})
            if self._field_name == "folder" and self._filename:
                # Where the file goes decides what is checked when its part begins.
                raise ApiError(400, "Invalid upload",
                               fields={"folder": "must come before the file part (or use "
                                                 "the folder query parameter)"})
            self.fields[self._field_name] = _decode(bytes(self._field_value), self.charset)
        self._part = ""

    def _on_end(self) -> None:
        self._ended = True
