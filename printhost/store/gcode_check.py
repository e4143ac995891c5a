"""Is an upload G-code? A look at the start of the file while it is being stored.

Every slicer writes plain text: a header of `;` comments (PrusaSlicer and OrcaSlicer
put base64 thumbnails there too, often hundreds of KiB), then commands, one per line:
`G`, `M` and `T` commands (`G1 X10 Y10`, `M104 S200`, `T0`, compact `G1X10Y10`), and
for Klipper printers extended commands (`PRINT_START BED=60`,
`EXCLUDE_OBJECT_DEFINE NAME=...`). A text file that is not G-code (notes, a README, a
Klipper config) has lines that are neither comments nor commands, and a binary file
(a PNG, an STL, Prusa's binary `.bgcode`) has NUL bytes near its start.

`GCodeCheck` is fed the file's bytes in order and decides from a bounded prefix:

* it looks at most at the first `INSPECT_BYTES` (1 MiB, so thumbnails fit), and stops
  as soon as `DECIDE_LINES` (50) lines that are not comments or blank have been seen;
* the file is G-code if among those lines there is at least one G, M or T command and
  at most one in ten is something else (a line a print would stop at);
* an empty file, a file of only comments and blank lines, and a file with a NUL byte
  (or many control characters) in the inspected part are not G-code.

The rest of the file is not looked at: a big file costs the same as a small one, and a
broken line later in the file stops the print with its line number instead.
"""

from __future__ import annotations

import re

INSPECT_BYTES = 1 << 20
DECIDE_LINES = 50
# A longer line (no newline in sight) is judged by its first LINE_BYTES bytes.
LINE_BYTES = 64 * 1024
# Share of the inspected lines that may be something other than a command.
MAX_OTHER_SHARE = 0.1
# Share of control characters (other than tab, newline, vertical tab, form feed and
# carriage return) above which the data is binary even without a NUL byte.
MAX_CONTROL_SHARE = 0.01

_BGCODE_MAGIC = b"GCDE"
_CONTROL_BYTES = bytes([*range(0, 9), *range(14, 32), 127])
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL_BYTES)

_LINE_NUMBER = re.compile(r"[Nn][0-9]+\s*")
_CHECKSUM = re.compile(r"\*[0-9]{1,3}\s*$")
# `G1 X10`, `G1X10` (compact), `M862.3 P "MK4"`, `T0`: a letter, a number, then the end,
# a blank or a parameter letter.
_CLASSIC = re.compile(r"([A-Za-z])[0-9]+(?:\.[0-9]+)?(?=$|\s|[A-Z*])")
# Klipper's extended commands: a name, then nothing or KEY=VALUE parameters.
_EXTENDED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=$|\s)")


class NotGCode(ValueError):
    """The upload is not a G-code file; the message says why, for the client."""


def _shown(text: str, limit: int = 60) -> str:
    text = text.strip()
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return repr(text)


def classify(body: str) -> str:
    """What a line is once its `;` comment is removed: "blank", "gmt" (a G, M or T
    command), "command" (another command a print reads) or "other"."""
    body = body.strip()
    numbered = _LINE_NUMBER.match(body)
    if numbered:
        body = _CHECKSUM.sub("", body[numbered.end():]).strip()
    if not body:
        return "blank"
    m = _CLASSIC.match(body)
    if m:
        return "gmt" if m.group(1) in "GMTgmt" else "command"
    m = _EXTENDED.match(body)
    if m:
        rest = body[m.end():].split(None, 1)
        if not rest or "=" in rest[0]:
            return "command"
    return "other"


class GCodeCheck:
    """Feed the upload's bytes with `feed`, then call `finish` at the end of the file;
    either raises `NotGCode`. Once `decided` is true the rest need not be fed."""

    def __init__(self) -> None:
        self.decided = False
        self._inspected = 0
        self._controls = 0
        self._pending = bytearray()
        self._skipping = False       # inside a line longer than LINE_BYTES
        self._lineno = 0
        self._lines = 0              # lines that are not comments or blank
        self._gmt = 0
        self._other = 0
        self._first_other: tuple[int, str] | None = None
        self._first_line: tuple[int, str] | None = None

    # ------------------------------------------------------------------ input

    def feed(self, chunk: bytes) -> None:
        if self.decided or not chunk:
            return
        room = INSPECT_BYTES - self._inspected
        data = chunk[:room]
        if self._inspected == 0 and data.startswith(_BGCODE_MAGIC):
            raise NotGCode("binary G-code (.bgcode) is not supported; export plain-text "
                           "G-code from the slicer")
        nul = data.find(b"\x00")
        head = data if nul < 0 else data[:nul]
        self._controls += len(head.translate(None, _NOT_CONTROL))
        self._inspected += len(head)
        self._take_lines(head)
        if self.decided:
            return
        if nul >= 0:
            raise NotGCode(f"binary data (a NUL byte at byte {self._inspected}), "
                           "not G-code text")
        if self._inspected >= INSPECT_BYTES:
            if self._pending and not self._skipping:
                self._line_done(bytes(self._pending))
            self._pending.clear()
            if not self.decided:
                self._decide(at_end=False)

    def finish(self) -> None:
        """The end of the file: judge whatever was seen."""
        if self.decided:
            return
        if self._inspected == 0:
            raise NotGCode("the file is empty")
        if self._pending and not self._skipping:
            self._line_done(bytes(self._pending))
            self._pending.clear()
        if not self.decided:
            self._decide(at_end=True)

    # ------------------------------------------------------------------ lines

    def _take_lines(self, data: bytes) -> None:
        start = 0
        while not self.decided:
            end = data.find(b"\n", start)
            if end < 0:
                self._pending += data[start:]
                if len(self._pending) > LINE_BYTES:
                    if not self._skipping:
                        self._line_done(bytes(self._pending[:LINE_BYTES]))
                        self._skipping = True
                    self._pending.clear()
                return
            self._pending += data[start:end]
            if self._skipping:
                self._skipping = False       # the end of a long line, judged already
            else:
                self._line_done(bytes(self._pending))
            self._pending.clear()
            start = end + 1

    def _line_done(self, raw: bytes) -> None:
        self._lineno += 1
        lineno = self._lineno
        text = raw.decode("utf-8", errors="replace")
        if lineno == 1:
            text = text.removeprefix("\ufeff")
        body = text.split(";", 1)[0]
        kind = classify(body)
        if kind == "blank":
            return
        self._lines += 1
        if self._first_line is None:
            self._first_line = (lineno, body)
        if kind == "gmt":
            self._gmt += 1
        elif kind == "other":
            self._other += 1
            if self._first_other is None:
                self._first_other = (lineno, body)
        if self._lines >= DECIDE_LINES:
            self._decide(at_end=False)

    # ------------------------------------------------------------------ verdict

    def _decide(self, *, at_end: bool) -> None:
        self.decided = True
        if self._controls > MAX_CONTROL_SHARE * self._inspected:
            raise NotGCode("binary data (control characters), not G-code text")
        if self._lines == 0:
            if at_end:
                raise NotGCode("the file holds only comments and blank lines, no G-code "
                               "commands")
            raise NotGCode(f"no G-code command in the first {INSPECT_BYTES // 1024} KiB, "
                           "only comments and blank lines")
        if self._other > MAX_OTHER_SHARE * self._lines:
            assert self._first_other is not None
            lineno, body = self._first_other
            raise NotGCode(f"not G-code: line {lineno} is neither a comment nor a G-code "
                           f"command: {_shown(body)}")
        if self._gmt == 0:
            assert self._first_line is not None
            lineno, body = self._first_line
            raise NotGCode(f"not G-code: no G, M or T command in the first {self._lines} "
                           f"lines that are not comments (line {lineno} reads {_shown(body)})")
