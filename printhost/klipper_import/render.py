"""Writing the imported settings as commented printhost TOML.

Every value is followed by a comment naming the Klipper section and key it came from,
so the output can be checked against the original file line by line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "render_toml", "toml_value"]

_CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class Entry:
    """One printhost key's value and where in the Klipper config it came from."""

    value: Any
    section: str     # Klipper section the value came from
    source: str      # Klipper section and key the value came from (or is derived from)
    raw: str | None  # the Klipper text, when the value was read directly
    comment: str


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    raise TypeError(f"cannot write {value!r} as TOML")


def _comment(text: str) -> str:
    return _CONTROL_CHARS_RE.sub(" ", text)


def render_toml(entries: dict[str, Entry], order: dict[str, int], header: list[str],
                footer: list[str]) -> str:
    out = [f"# {_comment(line)}" if line else "#" for line in header]
    table = None
    for key in sorted(entries, key=order.__getitem__):
        parent, _, name = key.rpartition(".")
        if parent != table:
            out.append("")
            out.append(f"[{parent}]")
            table = parent
        entry = entries[key]
        out.append(f"{name} = {toml_value(entry.value)}  # {_comment(entry.comment)}")
    if footer:
        out.append("")
        out.extend(f"# {_comment(line)}" if line else "#" for line in footer)
    return "\n".join(out) + "\n"
