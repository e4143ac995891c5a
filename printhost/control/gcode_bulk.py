"""G-code parsing into arrays: how print jobs and `printhost batch` read their files.

`parse_line` in `gcode` is the reference (and parses the console's single lines).
This module reads a file's bytes, or a piece of whole lines, in one compiled pass and
produces, per line, the command (as an index into `COMMAND_NAMES`) and the values of
the common parameters in fixed columns, NaN where a parameter is absent. That is
orders of magnitude faster than calling `parse_line` per line, and arrays are what
the compiled planner reads (`control.jobfeed`, `kernels.plan`).

The compiled kernel accepts only a strict subset of what `parse_line` accepts, and
every line outside that subset is *flagged*; the wrapper then runs `parse_line` on
exactly those lines. So the kernel never has to reproduce an error message or a rare
case, and whatever it does accept it must parse exactly as `parse_line` does (the
tests compare the two on every line of a real file and on thousands of random and
malformed lines). Flagged are: unknown and extended commands, any byte above 0x7F
before the comment, a line number or checksum that is not plainly valid, parameter
letters outside `PARAM_LETTERS`, duplicate letters, anything that is not a plain
decimal, numbers whose conversion is not certainly exact (below), and over-long
lines.

Exact numbers: a decimal "d.ddd" is read as an integer mantissa m and a count k of
fraction digits, and converted as m / 10**k in one IEEE division. When m < 2**53 and
k <= 22 both operands are exact doubles, so the quotient is the correctly rounded
value of the decimal, which is by definition what Python's float() returns: the two
parsers agree bit for bit. Longer numbers are flagged and left to float().
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import BinaryIO
from dataclasses import dataclass, field

import numba
import numpy as np

from printhost.control import gcode
from printhost.control.gcode import (_BARE_LETTER_COMMANDS, KNOWN_COMMANDS, GCodeCommand,
                                     GCodeError, parse_line)

# Command codes: an index into COMMAND_NAMES, or one of these.
EMPTY = -1       # nothing but whitespace or a comment (parse_line returns None)
FALLBACK = -2    # decided by parse_line (its result is in BulkGCode.fallback)

COMMAND_NAMES: tuple[str, ...] = tuple(sorted(KNOWN_COMMANDS))
# Parameter columns. Lines using any other letter are flagged.
PARAM_LETTERS = "XYZEFIJRSPT"

_MAX_COMMAND_NUMBER = 1024          # command numbers at or above this are flagged
_MAX_EXACT_MANTISSA = 1 << 53
_POW10 = np.array([10.0 ** k for k in range(23)], dtype=np.float64)   # all exact


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables for the kernel: (letter, number) -> code, bare-letter flags, letter -> column."""
    command_code = np.full((26, _MAX_COMMAND_NUMBER), -1, dtype=np.int16)
    bare = np.zeros(len(COMMAND_NAMES), dtype=np.bool_)
    for code, name in enumerate(COMMAND_NAMES):
        command_code[ord(name[0]) - ord("A"), int(name[1:])] = code
        bare[code] = name in _BARE_LETTER_COMMANDS
    column = np.full(128, -1, dtype=np.int8)
    for col, letter in enumerate(PARAM_LETTERS):
        column[ord(letter)] = col
    return command_code, bare, column


_COMMAND_CODE, _BARE, _COLUMN = _tables()


# ------------------------------------------------------------------ compiled kernel

@numba.njit(cache=True, nogil=True)
def _is_space(c: int) -> bool:
    # Exactly the ASCII characters Python's str.isspace()/split()/strip() treat as
    # whitespace: \t \n \v \f \r, the four separators 0x1C-0x1F, and space.
    return (9 <= c <= 13) or (28 <= c <= 32)


@numba.njit(cache=True, nogil=True)
def _is_digit(c: int) -> bool:
    return 48 <= c <= 57


@numba.njit(cache=True, nogil=True)
def _count_lines(buf: np.ndarray) -> int:
    n = 0
    for i in range(buf.shape[0]):
        if buf[i] == 10:
            n += 1
    if buf.shape[0] > 0 and buf[buf.shape[0] - 1] != 10:
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _strip_checksum(buf: np.ndarray, body_start: int, body_end: int) -> int:
    """New body end with a valid `*<checksum>` removed; -1 if the checksum is not
    plainly valid (then parse_line must judge the line). No star: body_end unchanged."""
    star = -1
    for i in range(body_end - 1, body_start - 1, -1):
        if buf[i] == 42:
            star = i
            break
    if star < 0:
        return body_end
    # The digits after the star, surrounding whitespace allowed: 1 to 3 of them.
    a = star + 1
    while a < body_end and _is_space(buf[a]):
        a += 1
    b = body_end
    while b > a and _is_space(buf[b - 1]):
        b -= 1
    if b - a < 1 or b - a > 3:
        return -1
    given = 0
    for i in range(a, b):
        if not _is_digit(buf[i]):
            return -1
        given = given * 10 + (buf[i] - 48)
    value = 0
    for i in range(body_start, star):
        value ^= buf[i]
    if value != given:
        return -1
    end = star
    while end > body_start and _is_space(buf[end - 1]):
        end -= 1
    return end


@numba.njit(cache=True, nogil=True)
def _parse_number(buf: np.ndarray, a: int, b: int, pow10: np.ndarray) -> tuple[bool, float]:
    """Plain decimal in buf[a:b] -> (ok, value); ok is False for anything else or a
    number whose conversion would not be certainly exact."""
    i = a
    negative = False
    if i < b and (buf[i] == 43 or buf[i] == 45):
        negative = buf[i] == 45
        i += 1
    mantissa = 0
    digits = 0
    fraction = 0
    seen_point = False
    while i < b:
        c = int(buf[i])
        if _is_digit(c):
            digits += 1
            mantissa = mantissa * 10 + (c - 48)
            if mantissa >= 9007199254740992:        # 2**53: no longer certainly exact
                return False, 0.0
            if seen_point:
                fraction += 1
                if fraction > 22:
                    return False, 0.0
        elif c == 46 and not seen_point:
            seen_point = True
        else:
            return False, 0.0
        i += 1
    if digits == 0:
        return False, 0.0
    value = mantissa / pow10[fraction]
    if negative:
        value = -value
    return True, value


@numba.njit(cache=True, nogil=True)
def _parse_lines(buf: np.ndarray, line_start: np.ndarray, line_end: np.ndarray,
                 codes: np.ndarray, params: np.ndarray, args_start: np.ndarray,
                 args_end: np.ndarray, command_code: np.ndarray, bare: np.ndarray,
                 column: np.ndarray, pow10: np.ndarray, max_line: int) -> None:
    n_bytes = buf.shape[0]
    row = 0
    s = 0
    while s < n_bytes:
        e = s
        while e < n_bytes and buf[e] != 10:
            e += 1
        line_start[row] = s
        line_end[row] = e
        args_start[row] = 0
        args_end[row] = 0
        codes[row] = _parse_one(buf, s, e, row, params, args_start, args_end,
                                command_code, bare, column, pow10, max_line)
        row += 1
        s = e + 1


# Inlined into the per-line loop: as a separate call it halves the throughput.
@numba.njit(cache=True, nogil=True, inline="always")
def _parse_one(buf: np.ndarray, s: int, e: int, row: int, params: np.ndarray,
               args_start: np.ndarray, args_end: np.ndarray, command_code: np.ndarray,
               bare: np.ndarray, column: np.ndarray, pow10: np.ndarray, max_line: int) -> int:
    if e - s > max_line:
        return -2
    # The body is what precedes the first ';', trimmed; it must be plain ASCII.
    cend = s
    while cend < e and buf[cend] != 59:
        if buf[cend] >= 128:
            return -2
        cend += 1
    bs = s
    while bs < cend and _is_space(buf[bs]):
        bs += 1
    be = cend
    while be > bs and _is_space(buf[be - 1]):
        be -= 1
    if bs == be:
        return -1
    # Optional line number "N<digits>", then whitespace; its checksum is mandatory-valid.
    start = bs
    numbered = False
    if (buf[bs] == 78 or buf[bs] == 110) and bs + 1 < be and _is_digit(buf[bs + 1]):
        numbered = True
        start = bs + 1
        while start < be and _is_digit(buf[start]):
            start += 1
        while start < be and _is_space(buf[start]):
            start += 1
        be = _strip_checksum(buf, bs, be)
        if be < 0:
            return -2
        if start >= be:
            return -1
    # Classic command: a letter and digits, no ".<sub>" part (those are unknown).
    c = int(buf[start])
    if 97 <= c <= 122:
        c -= 32
    if not (65 <= c <= 90):
        return -2
    p = start + 1
    if p >= be or not _is_digit(buf[p]):
        return -2
    number = 0
    while p < be and _is_digit(buf[p]):
        number = number * 10 + (buf[p] - 48)
        if number >= 1024:
            return -2
        p += 1
    if p < be and buf[p] == 46:
        return -2
    code = command_code[c - 65, number]
    if code < 0:
        return -2
    if not numbered:
        for i in range(p, be):
            if buf[i] == 42:
                be = _strip_checksum(buf, bs, be)
                if be < 0:
                    return -2
                break
    args_start[row] = p
    args_end[row] = be
    # Parameters: whitespace-separated tokens, each one or more letter+number pairs.
    i = p
    while i < be:
        if _is_space(buf[i]):
            i += 1
            continue
        t_end = i
        has_upper = False
        while t_end < be and not _is_space(buf[t_end]):
            if 65 <= buf[t_end] <= 90:
                has_upper = True
            t_end += 1
        j = i
        while j < t_end:
            letter = int(buf[j])
            if 97 <= letter <= 122:
                letter -= 32
            if not (65 <= letter <= 90):
                return -2
            col = column[letter]
            if col < 0:
                return -2
            if not math.isnan(params[row, col]):
                return -2                       # duplicate parameter
            v = j + 1
            # The value runs to the next parameter letter: any letter if the token is
            # all lowercase, an uppercase one otherwise (a lowercase one is bad).
            while v < t_end:
                ch = int(buf[v])
                if 65 <= ch <= 90:
                    break
                if 97 <= ch <= 122:
                    if has_upper:
                        return -2
                    break
                v += 1
            if v == j + 1:
                if not bare[code]:
                    return -2
                params[row, col] = 0.0
            else:
                ok, value = _parse_number(buf, j + 1, v, pow10)
                if not ok:
                    return -2
                params[row, col] = value
            j = v
        i = t_end
    return code


# ------------------------------------------------------------------ wrapper

@dataclass
class BulkGCode:
    """Per-line arrays for a file or a piece of one; row r is line `first_line` + r.

    `code[r]` is an index into `COMMAND_NAMES`, `EMPTY`, or `FALLBACK` (then
    `fallback[r]` holds what `parse_line` returned, or the `GCodeError` it raised).
    `params[r, c]` is the value of parameter `PARAM_LETTERS[c]`, NaN when absent; for
    fallback rows the row is all NaN, the parameters are in the fallback command.
    `offset[r]` is the byte offset just after the line, as `iter_lines` gives it.
    """

    data: bytes
    code: np.ndarray
    params: np.ndarray
    line_start: np.ndarray
    line_end: np.ndarray
    args_start: np.ndarray
    args_end: np.ndarray
    fallback: dict[int, GCodeCommand | GCodeError | None] = field(default_factory=dict)
    # The file's line number of row 0 (a piece from `iter_chunks` starts further on).
    first_line: int = 1

    def __len__(self) -> int:
        return int(self.code.shape[0])

    @property
    def lineno(self) -> np.ndarray:
        return np.arange(self.first_line, self.first_line + len(self), dtype=np.int64)

    @property
    def offset(self) -> np.ndarray:
        return np.minimum(self.line_end + 1, len(self.data))

    @property
    def first_error(self) -> GCodeError | None:
        for row in sorted(self.fallback):
            result = self.fallback[row]
            if isinstance(result, GCodeError):
                return result
        return None

    def column(self, letter: str) -> np.ndarray:
        """The values of one parameter for every line (NaN where absent or on fallback rows)."""
        return self.params[:, PARAM_LETTERS.index(letter)]

    def text(self, row: int) -> str:
        """Line `row` decoded exactly as `iter_lines` would give it."""
        raw = self.data[int(self.line_start[row]):int(self.line_end[row])]
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if row == 0 and self.first_line == 1 and text.startswith("\ufeff"):
            text = text[1:]
        return text

    def command(self, row: int) -> GCodeCommand | None:
        """What `parse_line` gives for line `row` (None for empty lines); raises its GCodeError."""
        code = int(self.code[row])
        if code == EMPTY:
            return None
        if code == FALLBACK:
            result = self.fallback[row]
            if isinstance(result, GCodeError):
                raise result
            return result
        values = self.params[row]
        params = {PARAM_LETTERS[c]: float(values[c]) for c in _present_columns(values)}
        args = self.data[int(self.args_start[row]):int(self.args_end[row])].decode("ascii")
        return GCodeCommand(COMMAND_NAMES[code], params, self.first_line + row, True,
                            self.text(row).strip(), args.strip())

    def commands(self) -> Iterator[GCodeCommand]:
        """Every command in file order; raises the first line's GCodeError when it comes to it."""
        for row in range(len(self)):
            cmd = self.command(row)
            if cmd is not None:
                yield cmd


def _present_columns(values: np.ndarray) -> list[int]:
    """Columns holding a value. (The order of the letters on the line is not kept,
    which dict equality ignores anyway.)"""
    return [c for c in range(values.shape[0]) if not math.isnan(values[c])]


def _flag_foreign_letters(codes: np.ndarray, params: np.ndarray) -> None:
    """Send geometry commands carrying a letter they do not take to `parse_line`.

    The kernel reads every letter of `PARAM_LETTERS` for any known command; the
    per-command rule (`G1 T8` is a typo that stops the job) lives in `parse_line`,
    which then reports it exactly as it would for a line read on its own.
    """
    for name, allowed in gcode._GEOMETRY_LETTERS.items():
        foreign = [i for i, letter in enumerate(PARAM_LETTERS) if letter not in allowed]
        rows = codes == COMMAND_NAMES.index(name)
        if foreign and rows.any():
            bad = rows & ~np.isnan(params[:, foreign]).all(axis=1)
            codes[bad] = FALLBACK


def parse_bytes(data: bytes | bytearray | memoryview, first_line: int = 1) -> BulkGCode:
    """Parse a file's bytes, or a piece of whole lines starting at line `first_line`;
    lines the kernel flags are handed to `parse_line`."""
    data = bytes(data)
    buf = np.frombuffer(data, dtype=np.uint8)
    n = _count_lines(buf)
    line_start = np.empty(n, dtype=np.int64)
    line_end = np.empty(n, dtype=np.int64)
    codes = np.empty(n, dtype=np.int16)
    params = np.full((n, len(PARAM_LETTERS)), np.nan, dtype=np.float64)
    args_start = np.empty(n, dtype=np.int64)
    args_end = np.empty(n, dtype=np.int64)
    _parse_lines(buf, line_start, line_end, codes, params, args_start, args_end,
                 _COMMAND_CODE, _BARE, _COLUMN, _POW10, gcode.MAX_LINE_BYTES)
    _flag_foreign_letters(codes, params)
    result = BulkGCode(data, codes, params, line_start, line_end, args_start, args_end,
                       first_line=first_line)
    for row in np.flatnonzero(codes == FALLBACK).tolist():
        params[row, :] = np.nan      # the kernel may have filled some before giving up
        lineno = first_line + row
        if line_end[row] - line_start[row] > gcode.MAX_LINE_BYTES:
            result.fallback[row] = GCodeError(lineno, f"line longer than {gcode.MAX_LINE_BYTES} bytes")
            continue
        try:
            result.fallback[row] = parse_line(result.text(row), lineno)
        except GCodeError as exc:
            result.fallback[row] = exc
    return result


def parse_file(path: str | os.PathLike[str]) -> BulkGCode:
    with open(path, "rb") as fh:
        return parse_bytes(fh.read())


#: Bytes read at a time by `iter_chunks`: about ten thousand slicer lines. Peak RSS of
#: `printhost batch` was 157, 160 and 162 MiB on cube.gcode, 8 and 32 times it (1 MiB
#: pieces: 157, 175, 179); the piece size does not change the CPU time.
CHUNK_BYTES = 1 << 18


def iter_chunks(path: str | os.PathLike[str], chunk_bytes: int | None = None
                ) -> Iterator[BulkGCode]:
    """The file as consecutive pieces of whole lines, each parsed on its own, so memory
    follows the piece and not the file (`iter_pieces` on the opened file)."""
    with open(path, "rb") as fh:
        for piece, _ in iter_pieces(fh, chunk_bytes):
            yield piece


def iter_pieces(fh: BinaryIO, chunk_bytes: int | None = None, *, first_line: int = 1,
                base_offset: int = 0) -> Iterator[tuple[BulkGCode, int]]:
    """An open file as consecutive pieces of whole lines, each parsed on its own, with
    the file offset of its first byte. Every piece but the last ends at a newline;
    `first_line` numbers its rows as the whole file's, and the lines and what they
    parse to are exactly those of `parse_file`. A file opened and positioned at the
    start of a line further on (a job resumed from a checkpoint) is read from there:
    `first_line` and `base_offset` then say which line and offset that is.

    A line longer than `gcode.MAX_LINE_BYTES` is cut at about that length (its first
    part is refused with the same error as from `parse_file`; nothing after an error
    is read by a caller that stops there)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    base = base_offset
    pending = b""
    while True:
        block = fh.read(chunk_bytes)
        data = pending + block
        if not block:
            if data:
                yield parse_bytes(data, first_line), base
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) <= gcode.MAX_LINE_BYTES + 1:
                pending = data          # a line still being read
                continue
            cut = len(data)
        piece = parse_bytes(data[:cut], first_line)
        pending = data[cut:]
        yield piece, base
        first_line += len(piece)
        base += cut
