"""Telling a Klipper config from files that are not one, before importing anything.

Klipper's syntax is loose enough that other files get far: printhost's own TOML has
`[printer]` and `key = value` lines, so it used to be "imported" with dozens of
contradicting notes. The main file is therefore looked at first:

* **TOML**: a file that parses as TOML and has a nested table (`[printer.axes.x]`) or
  a quoted string, boolean or array value is TOML, not a Klipper config. A real
  Klipper config is never such a file: its `[printer]` needs `kinematics: cartesian`
  (or `= cartesian`), which is not valid TOML, and Klipper would read a quoted value
  with its quotes. If printhost accepts it as its own configuration, the message says
  so.
* **Anything else**: the first line that is not blank or a comment must be a
  `[section]` header (Klipper refuses an option outside a section, and an option-like
  `key: value` line keeps Klipper's own error message); a file whose first such line
  is neither, or a file with no section header at all, is not a Klipper config.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from printhost.config import ConfigError, parse_settings

__all__ = ["not_klipper_reason"]

_SECTION = re.compile(r"\[[^\[\]]+\]\s*$")
# `key: value` / `key = value` as Klipper reads options (names are identifier-like).
_OPTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .-]*\s*[:=]")


def _toml_only(node: Any, top: bool = True) -> bool:
    """True if the TOML document uses something a Klipper config cannot hold."""
    if isinstance(node, dict):
        for value in node.values():
            if isinstance(value, dict):
                if not top or _toml_only(value, top=False):
                    return True
            elif isinstance(value, (str, bool, list)) or _toml_only(value, top=False):
                return True
        return False
    return False


def _meaningful_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped or stripped.startswith(";"):
            continue
        out.append((lineno, stripped))
    return out


def _shown(text: str, limit: int = 50) -> str:
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def not_klipper_reason(text: str) -> str | None:
    """Why `text` is not a Klipper config, or None if it may be one."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        document = None
    if document and _toml_only(document):
        try:
            parse_settings(document, source="import-klipper")
        except ConfigError:
            return "it is a TOML file, not Klipper's config format"
        return ("it is a printhost configuration (TOML) already: check it with "
                "`printhost config check` and use it with --config")
    lines = _meaningful_lines(text)
    if not lines:
        return None  # empty: Klipper's own complaint (no [printer] section) says it
    lineno, first = lines[0]
    if not _SECTION.match(first) and not _OPTION.match(first):
        return (f"line {lineno} ({_shown(first)}) is neither a [section] header nor a "
                "'key: value' option")
    if not any(_SECTION.match(line) for _, line in lines):
        return "it has no [section] headers"
    return None
