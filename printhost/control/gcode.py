"""G-code line parsing.

A print file is untrusted input that ends up moving hardware, so the parser is strict
about the commands printhost acts on and lenient about the ones it does not: a typo in
`G1 X1O0` must stop the print with the line number rather than be read as `X1`, while
a slicer's `M486`, `T0` or Klipper-style `EXCLUDE_OBJECT_DEFINE ...` line must never
abort an otherwise good file. Commands in `KNOWN_COMMANDS` get their parameters
checked; anything else that looks like a command is passed through untouched with
`known=False` for the layer above to ignore or interpret.

Parameter values are plain decimal numbers only. Python's `float()` would also accept
`nan`, `inf` and `1e5`; none of those is a sensible coordinate, and scientific notation
in particular is ambiguous in compact G-code (`X1E5` is X=1, E=5), so all are refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

KNOWN_COMMANDS = frozenset({
    "G0", "G1", "G2", "G3", "G4", "G10", "G11", "G17", "G18", "G19", "G20", "G21", "G28",
    "G90", "G91", "G92", "M82", "M83", "M104", "M109", "M140", "M190", "M106", "M107",
    "M204", "M220", "M221", "M400", "M84", "M18", "M114", "M112", "M80", "M81", "M141",
    "M191",
})

# Commands whose parameters may be bare letters meaning "this axis": `G28 X Y` homes
# X and Y, and Marlin-style end scripts use `M84 X Y E` to release chosen steppers.
_BARE_LETTER_COMMANDS = frozenset({"G28", "M84", "M18"})

# Longest line `iter_lines` accepts. Real G-code lines are short (thumbnail lines are
# ~80 bytes, object polygons a few KiB); the cap keeps a file with no newlines at all
# from being pulled into memory in one readline().
MAX_LINE_BYTES = 1 << 20

# ASCII digits only: `\d` would also match other scripts' digits, which float() accepts.
_LINE_NUMBER = re.compile(r"[Nn][0-9]+\s*")
_CLASSIC = re.compile(r"([A-Za-z])([0-9]+)(\.[0-9]+)?")
_EXTENDED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


class GCodeError(Exception):
    """A line that cannot be executed safely; `lineno` lets the user find it in the file."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno
        self.message = message


@dataclass(frozen=True)
class GCodeCommand:
    """One parsed command.

    `params` is filled only for known commands (letters uppercased). `raw` is the
    original line without surrounding whitespace, for echoing and logging; `arg_text`
    is what followed the command name once the line number, checksum and comment were
    removed, so extended commands (`SET_FAN_SPEED FAN=x`) can be interpreted later
    without re-implementing the line framing.
    """

    name: str
    params: dict[str, float] = field(hash=False)
    lineno: int
    known: bool
    raw: str
    arg_text: str = ""


def _clip(text: str, limit: int = 80) -> str:
    """Shorten quoted input in messages: a hostile file's line may be a megabyte long."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _checksum(text: str) -> int:
    value = 0
    for byte in text.encode("utf-8"):
        value ^= byte
    return value


def _strip_checksum(body: str, lineno: int) -> str:
    """Verify and remove a trailing `*<checksum>` if the line has one."""
    star = body.rfind("*")
    if star < 0:
        return body
    given = body[star + 1:].strip()
    # A checksum is one byte; the length cap also keeps int() away from huge digit runs.
    if not given.isascii() or not given.isdigit() or len(given) > 3:
        raise GCodeError(lineno, f"bad checksum {_clip(given, 30)!r} in {_clip(body)!r}")
    expected = _checksum(body[:star])
    if int(given) != expected:
        raise GCodeError(lineno, f"checksum mismatch: line says {int(given)}, "
                                 f"computed {expected} in {_clip(body)!r}")
    return body[:star].rstrip()


def _split_command(body: str, lineno: int) -> tuple[str, str]:
    """Return (normalised name, rest of the line) or raise if `body` is not a command."""
    m = _CLASSIC.match(body)
    if m:
        letter, number, sub = m.groups()
        # Leading zeros are dropped so that G01 and G1 are the same command. (Not with
        # int(): a hostile line's thousands of digits would make int() raise.)
        return letter.upper() + (number.lstrip("0") or "0") + (sub or ""), body[m.end():]
    m = _EXTENDED.match(body)
    if m:
        return m.group().upper(), body[m.end():]
    raise GCodeError(lineno, f"not a command: {_clip(body)!r}")


def _parse_value(letter: str, value: str, name: str, line: str, lineno: int) -> float:
    if value == "":
        if name in _BARE_LETTER_COMMANDS:
            return 0.0
        raise GCodeError(lineno, f"missing number for {letter} in {_clip(line)!r}")
    if _DECIMAL.fullmatch(value):
        number = float(value)
        if math.isfinite(number):  # a few hundred digits still overflow to inf
            return number
    raise GCodeError(lineno, f"bad number {_clip(value, 30)!r} for {letter} in {_clip(line)!r}")


# Commands whose parameters are coordinates: any other letter there is a typo that
# would silently change the geometry (`G1 X1O0`), so it stops the job.
_GEOMETRY_LETTERS = {
    "G0": "XYZEF", "G1": "XYZEF", "G2": "XYZEFIJR", "G3": "XYZEFIJR", "G92": "XYZE",
}


def _parse_params(name: str, args: str, line: str, lineno: int) -> dict[str, float]:
    """Split `X10 Y2` or compact `X10Y2` into letter -> number.

    Inside a whitespace-separated token an uppercase letter starts a new parameter
    (that is what makes compact G-code work), while lowercase letters stay part of
    the value, so `Xabc` and `X1e5` are reported as bad numbers instead of being
    silently split into other parameters. A token with no uppercase letter at all
    (`x10y2`, typed by hand) is read as its uppercase form. The first character of a
    token is always a parameter letter, whatever its case.
    """
    params: dict[str, float] = {}
    for token in args.split():
        if not token[0].isascii() or not token[0].isalpha():
            raise GCodeError(lineno, f"expected a parameter letter, got {_clip(token)!r} "
                                     f"in {_clip(line)!r}")
        if not any(c.isascii() and c.isupper() for c in token):
            token = token.upper()
        starts = [0] + [i for i in range(1, len(token))
                        if token[i].isascii() and token[i].isupper()]
        for a, b in zip(starts, starts[1:] + [len(token)]):
            letter = token[a].upper()
            if letter in params:
                raise GCodeError(lineno, f"duplicate parameter {letter} in {_clip(line)!r}")
            params[letter] = _parse_value(letter, token[a + 1:b], name, line, lineno)
    allowed = _GEOMETRY_LETTERS.get(name)
    if allowed is not None:
        for letter in params:
            if letter not in allowed:
                raise GCodeError(lineno, f"unknown parameter {letter} for {name} in "
                                         f"{_clip(line)!r}")
    return params


def parse_line(text: str, lineno: int) -> GCodeCommand | None:
    """Parse one line; None for lines that hold nothing but whitespace or a comment.

    A trailing `*<checksum>` is recognised on known commands and on any line with an
    `N<number>` prefix (the host-protocol framing). On other unknown commands a `*` is
    just text: `M117 ** done **` is a display message, not a broken checksum, and an
    unknown command must never abort a print.
    """
    raw = text.strip()
    body = raw.split(";", 1)[0].rstrip()
    if not body:
        return None
    numbered = _LINE_NUMBER.match(body)
    start = numbered.end() if numbered else 0
    if numbered:
        body = _strip_checksum(body, lineno)
        if start >= len(body):
            return None
    name, rest = _split_command(body[start:], lineno)
    known = name in KNOWN_COMMANDS
    if known and not numbered and "*" in rest:
        # The command name cannot contain '*', so stripping leaves it unchanged.
        body = _strip_checksum(body, lineno)
        name, rest = _split_command(body, lineno)
    line = body[start:]
    params = _parse_params(name, rest, line, lineno) if known else {}
    return GCodeCommand(name, params, lineno, known, raw, rest.strip())


#: Longest script the console takes at once (raw G-code, a filament sequence).
MAX_SCRIPT_LINES = 200


def parse_script(text: str, max_lines: int = MAX_SCRIPT_LINES) -> list[GCodeCommand]:
    """Parse several lines someone typed or configured (the console's raw G-code, a
    filament sequence). Unlike a print file, a command printhost does not execute is an
    error here: in a file it is a slicer's extra, but a person who types `G29` expects
    something to happen and must be told that nothing will."""
    commands: list[GCodeCommand] = []
    lines = text.splitlines()
    if len(lines) > max_lines:
        raise GCodeError(max_lines + 1, f"more than {max_lines} lines")
    for lineno, line in enumerate(lines, 1):
        cmd = parse_line(line, lineno)
        if cmd is None:
            continue
        if not cmd.known:
            raise GCodeError(lineno, f"unknown command {_clip(cmd.name, 40)}")
        commands.append(cmd)
    return commands


def _number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def make_command(name: str, **params: float) -> GCodeCommand:
    """A known command built from values (no text to parse: what the printer sends
    itself, such as a typed console command or a resume's prologue), with its text for
    logs."""
    text = " ".join([name] + [f"{k}{_number(v)}" for k, v in params.items()])
    return GCodeCommand(name, dict(params), 0, True, text)


def iter_lines(binary_file: BinaryIO) -> Iterator[tuple[int, int, str]]:
    """Yield (line number from 1, byte offset just after the line, text without the newline).

    The file is read one line at a time so a multi-gigabyte print never sits in
    memory, and the byte offset lets a caller report progress or resume from a line.
    Undecodable bytes become U+FFFD rather than an exception: they can only occur in
    comments of a sane file, and the parser rejects them anywhere else.
    """
    lineno = 0
    offset = 0
    while True:
        chunk = binary_file.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        lineno += 1
        offset += len(chunk)
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            raise GCodeError(lineno, f"line longer than {MAX_LINE_BYTES} bytes")
        text = chunk.decode("utf-8", errors="replace").rstrip("\r\n")
        if lineno == 1 and text.startswith("\ufeff"):  # byte-order mark some editors add
            text = text[1:]
        yield lineno, offset, text
