"""The building blocks of every settings section: a field that carries its default,
its allowed range or choices and its documentation, so that the loader's checks, the
defaults and docs/config.md come from one declaration."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


class ConfigError(Exception):
    """A configuration file could not be loaded; the message names file, key and problem."""


def setting(default: Any, *, min: float | None = None, max: float | None = None,
            choices: tuple[str, ...] | None = None, doc: str = "",
            exclusive_min: bool = False) -> Any:
    """One key of a section: its default, its bounds or choices, and a line of doc."""
    meta = {"min": min, "max": max, "choices": choices, "doc": doc,
            "exclusive_min": exclusive_min}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A nested section: built from its defaults, documented by its class docstring."""
    return field(default_factory=cls, metadata={"doc": cls.__doc__ or ""})
