"""The import as a whole: read, convert, check against printhost, write.

The TOML is checked with `parse_settings` before it is returned, so a value printhost
would refuse never reaches the output: it is reported and printhost's default stays.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field

from printhost.config import ConfigError, Settings, parse_settings
from printhost.klipper_import.convert import convert
from printhost.klipper_import.converter import Converter
from printhost.klipper_import.errors import KlipperImportError
from printhost.klipper_import.reader import read_klipper_config
from printhost.klipper_import.render import render_toml

__all__ = ["ImportResult", "import_klipper"]

_ERROR_KEY_RE = re.compile(r"(?P<key>[A-Za-z0-9_.]+): (?P<msg>.*)$", re.S)


@dataclass(frozen=True)
class ImportResult:
    """The printhost TOML and what could not be carried over."""
    toml: str
    unconverted: list[str]
    notes: list[str] = field(default_factory=list)
    settings: Settings | None = None
    files: list[str] = field(default_factory=list)


def _validate(conv: Converter, order: dict[str, int], source: str) -> Settings:
    """Drop every value printhost refuses until the document passes parse_settings."""
    tag = "klipper-import"
    for _ in range(len(conv.entries) + 2):
        text = render_toml(conv.entries, order, [], [])
        try:
            return parse_settings(tomllib.loads(text), source=tag)
        except ConfigError as exc:
            message = str(exc).removeprefix(f"{tag}: ")
        match = _ERROR_KEY_RE.match(message)
        key, why = (match.group("key"), match.group("msg")) if match else ("", message)
        entry = conv.entries.pop(key, None)
        if entry is not None:
            shown = f"{entry.source} = {entry.raw}" if entry.raw is not None else entry.source
            conv.skip(entry.section,
                      f"{shown}: rejected by printhost ({key}: {why}); {conv.default_note(key)}")
            continue
        # The key printhost names was not written (a cross-check against a default):
        # drop the whole table it belongs to, so printhost's consistent defaults apply.
        parent = key.rpartition(".")[0]
        dropped = [k for k in conv.entries if parent and k.startswith(parent + ".")]
        if not dropped:
            raise KlipperImportError(f"{source}: the imported settings are rejected: {message}")
        for k in dropped:
            entry = conv.entries.pop(k)
            conv.skip(entry.section,
                      f"{entry.source}: dropped with the rest of [{parent}] because printhost "
                      f"rejects the combination ({key}: {why}); {conv.default_note(k)}")
    raise KlipperImportError(f"{source}: the imported settings could not be made valid")


def import_klipper(path: str | os.PathLike[str]) -> ImportResult:
    """Convert a Klipper config file (with includes and SAVE_CONFIG block) to printhost TOML.

    Raises KlipperImportError when Klipper could not load the file either (unreadable,
    syntax error, missing include, no [printer] section).
    """
    source = str(path)
    cfg = read_klipper_config(path)
    conv = convert(cfg)
    order = {key: i for i, key in enumerate(conv.defaults)}
    _validate(conv, order, source)
    section_pos = {name: i for i, name in enumerate(cfg.sections)}
    # File order of sections; complaints about missing sections come last.
    ranked = sorted(conv.unconverted,
                    key=lambda item: section_pos.get(item[0], len(section_pos)))
    unconverted = cfg.problems + [message for _, message in ranked]

    header = [f"printhost configuration imported from the Klipper config {source}",
              "by `printhost config import-klipper`."]
    if len(cfg.files) > 1:
        header.append("Included files read: " + ", ".join(cfg.files[1:]) + ".")
    if cfg.saved_block:
        header.append("Values from its SAVE_CONFIG block are marked (SAVE_CONFIG).")
    header += ["Each value names the Klipper section and key it came from. Keys not listed",
               "keep printhost's defaults; `printhost config show --config FILE` prints all."]
    footer: list[str] = []
    if conv.notes:
        footer.append("Notes:")
        footer += [f"  - {note}" for note in conv.notes]
    if unconverted:
        footer.append(f"Not converted ({len(unconverted)}):")
        footer += [f"  - {item}" for item in unconverted]
    text = render_toml(conv.entries, order, header, footer)
    settings = parse_settings(tomllib.loads(text), source=source)
    return ImportResult(toml=text, unconverted=unconverted, notes=list(conv.notes),
                        settings=settings, files=list(cfg.files))
