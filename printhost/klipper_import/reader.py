"""How Klipper reads a config file (klippy/configfile.py, which wraps Python's
configparser) and what this module therefore does the same way:

* `#` starts a comment anywhere on a line, even inside a value. `;` starts one only at
  the start of a line or after whitespace.
* `key: value` and `key = value` are both accepted; the first `:` or `=` splits.
  Option names are case-insensitive (stored lower-case), section names are not.
* A line indented deeper than its option line continues that option's value.
* A section may appear several times; its options merge and a later value replaces an
  earlier one.
* `[include PATTERN]` at the start of a line reads the files matching the glob
  PATTERN (relative to the including file, in sorted order) at that point, so the
  order of overrides is the order of reading. A plain name that matches nothing is an
  error; a pattern with wildcards may match nothing. Options after an include line
  need a new section header.
* The block after Klipper's three-line SAVE_CONFIG header in the main file (every
  line prefixed `#*# `) is read last, but only for keys the rest of the
  configuration does not set: when both set a key, Klipper keeps the regular value and
  drops the saved one. If the block is damaged (a line without the prefix, a second
  header, or `#*# ` lines before the header) Klipper ignores all of it.

Reading is kept separate from converting so the configuration the converter sees is
exactly the one Klipper would run, whatever the file's layout.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from printhost.klipper_import.detect import not_klipper_reason
from printhost.klipper_import.errors import KlipperImportError, NotAKlipperConfig

__all__ = ["KlipperConfig", "KlipperOption", "SAVED_PREFIX", "SAVE_CONFIG_HEADER", "Sections",
           "read_klipper_config"]

# Klipper writes this header (with the newline in front of it) above the saved block.
SAVE_CONFIG_HEADER = (
    "\n#*# <---------------------- SAVE_CONFIG ---------------------->"
    "\n#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated."
    "\n#*#\n")
SAVED_PREFIX = "#*#"

_SECTION_RE = re.compile(r"\[(?P<header>.+)\]")
_OPTION_RE = re.compile(r"(?P<name>.*?)\s*[=:]\s*(?P<value>.*)$")


@dataclass(frozen=True)
class KlipperOption:
    """One option's final value and where it came from."""
    value: str
    file: str
    line: int
    saved: bool = False  # from the SAVE_CONFIG block

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" + (" (SAVE_CONFIG)" if self.saved else "")


Sections = dict[str, dict[str, KlipperOption]]


@dataclass
class KlipperConfig:
    """A Klipper configuration as Klipper would see it, plus what was noticed on the way."""
    sections: Sections
    files: list[str]                      # display names of every file read, main first
    saved_block: bool = False             # a SAVE_CONFIG block was read
    problems: list[str] = field(default_factory=list)  # parts Klipper (and we) ignore
    notes: list[str] = field(default_factory=list)


def _drop_hash_comment(line: str) -> str:
    pos = line.find("#")
    return line if pos < 0 else line[:pos]


def _semicolon_comment(line: str) -> int | None:
    """Index where a `;` comment starts: at a line's first non-blank or after a blank."""
    if line.strip().startswith(";"):
        return 0
    pos = line.find(";")
    while pos >= 0:
        if pos == 0 or line[pos - 1].isspace():
            return pos
        pos = line.find(";", pos + 1)
    return None


def _parse_chunk(lines: list[tuple[int, str]], display: str, sections: Sections,
                 saved: bool = False) -> None:
    """Read one run of lines (hash comments already removed) into `sections`.

    Like one configparser read: it starts outside any section, so the first option
    needs a header before it.
    """
    pending: dict[tuple[str, str], tuple[list[str], int]] = {}
    section: str | None = None
    option: str | None = None
    indent = 0
    for lineno, line in lines:
        cut = _semicolon_comment(line)
        text = (line if cut is None else line[:cut]).strip()
        if not text:
            # A blank line inside a multi-line value is kept (trailing ones go later);
            # a line that only held a `;` comment is not.
            if cut is None and section is not None and option is not None:
                pending[(section, option)][0].append("")
            continue
        level = len(line) - len(line.lstrip())
        if section is not None and option is not None and level > indent:
            pending[(section, option)][0].append(text)
            continue
        indent = level
        header = _SECTION_RE.match(text)
        if header:
            section = header.group("header")
            sections.setdefault(section, {})
            option = None
            continue
        if section is None:
            raise KlipperImportError(
                f"{display}:{lineno}: '{text}' is not inside a [section] "
                "(after an [include] line a new section header is needed)")
        match = _OPTION_RE.match(text)
        if not match or not match.group("name").strip():
            raise KlipperImportError(
                f"{display}:{lineno}: cannot read '{text}' in [{section}]: "
                "expected 'key: value' or 'key = value'")
        option = match.group("name").rstrip().lower()
        pending.pop((section, option), None)
        pending[(section, option)] = ([match.group("value").strip()], lineno)
    for (sec, opt), (parts, lineno) in pending.items():
        sections[sec][opt] = KlipperOption("\n".join(parts).rstrip(), display, lineno, saved)


def _split_saved_block(text: str, display: str,
                       problems: list[str]) -> tuple[str, list[tuple[int, str]] | None]:
    """Separate the SAVE_CONFIG block; returns the regular text and the block's lines."""
    pos = text.find(SAVE_CONFIG_HEADER)
    if pos < 0:
        if f"\n{SAVED_PREFIX} " in "\n" + text:
            problems.append(
                f"{display}: SAVE_CONFIG block: '#*#' lines without Klipper's complete "
                "three-line SAVE_CONFIG header; Klipper ignores them, so they were not imported")
        return text, None
    regular = text[:pos]
    rest = text[pos + len(SAVE_CONFIG_HEADER):]
    block = rest.strip()
    block_start = pos + len(SAVE_CONFIG_HEADER) + len(rest) - len(rest.lstrip())
    first_line = text.count("\n", 0, block_start) + 1
    damaged = None
    if f"\n{SAVED_PREFIX} " in regular:
        damaged = "'#*#' lines appear above the SAVE_CONFIG header"
    elif SAVE_CONFIG_HEADER in block:
        damaged = "the SAVE_CONFIG header appears twice"
    lines: list[tuple[int, str]] = []
    for offset, line in enumerate(block.split("\n") if block else []):
        if damaged is None and (not line.startswith(SAVED_PREFIX)
                                or (len(line) > 3 and not line.startswith(SAVED_PREFIX + " "))):
            damaged = f"line {first_line + offset} below the header does not start with '#*# '"
        lines.append((first_line + offset, _drop_hash_comment(line[4:])))
    if damaged:
        problems.append(f"{display}: SAVE_CONFIG block: {damaged}; Klipper ignores the whole "
                        "block, so none of its values were imported")
        return text, None
    return regular, lines


def _read_text(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KlipperImportError(f"{display}: file not found") from None
    except IsADirectoryError:
        raise KlipperImportError(f"{display}: is a directory, not a config file") from None
    except OSError as exc:
        raise KlipperImportError(f"{display}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise KlipperImportError(f"{display}: not UTF-8 text") from None


def _read_file(path: Path, display: str, cfg: KlipperConfig, visited: set[Path],
               root: Path, is_main: bool) -> list[tuple[int, str]] | None:
    real = path.resolve()
    if real in visited:
        raise KlipperImportError(f"{display}: included from itself (recursive [include])")
    visited.add(real)
    cfg.files.append(display)
    text = _read_text(path, display)
    saved: list[tuple[int, str]] | None = None
    if is_main:
        reason = not_klipper_reason(text)
        if reason is not None:
            raise NotAKlipperConfig(f"{display} is not a Klipper config: {reason}")
        text, saved = _split_saved_block(text, display, cfg.problems)
    elif f"\n{SAVED_PREFIX}" in "\n" + text:
        cfg.problems.append(f"{display}: SAVE_CONFIG block: Klipper only reads it from the "
                            "main config file, so the '#*#' lines of an included file were "
                            "not imported")
    chunk: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = _drop_hash_comment(line)
        header = _SECTION_RE.match(line)
        name = header.group("header") if header else ""
        if not name.startswith("include "):
            chunk.append((lineno, line))
            continue
        _parse_chunk(chunk, display, cfg.sections)
        chunk = []
        pattern = os.path.join(os.path.dirname(path), name[len("include "):].strip())
        matches = sorted(glob.glob(pattern))
        if not matches and not glob.has_magic(pattern):
            raise KlipperImportError(f"{display}:{lineno}: [{name}]: file {pattern} does not exist")
        for match in matches:
            _read_file(Path(match), _display_name(Path(match), root), cfg, visited, root, False)
    _parse_chunk(chunk, display, cfg.sections)
    visited.discard(real)
    return saved


def _display_name(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def read_klipper_config(path: str | os.PathLike[str]) -> KlipperConfig:
    """Read a Klipper config with its includes and SAVE_CONFIG block, as Klipper does."""
    main = Path(path)
    cfg = KlipperConfig(sections={}, files=[])
    saved = _read_file(main, str(main), cfg, set(), main.resolve().parent, True)
    if saved is None:
        return cfg
    cfg.saved_block = True
    saved_sections: Sections = {}
    _parse_chunk(saved, str(main), saved_sections, saved=True)
    for name, options in saved_sections.items():
        target = cfg.sections.setdefault(name, {})
        for key, opt in options.items():
            regular = target.get(key)
            if regular is None:
                target[key] = opt
            elif regular.value != opt.value:
                cfg.notes.append(
                    f"[{name}] {key}: set in {regular.where} ({regular.value}) and in the "
                    f"SAVE_CONFIG block ({opt.value}); Klipper keeps {regular.value} and drops "
                    "the saved value, and so does this import")
    return cfg
