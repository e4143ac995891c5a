"""Reading one Klipper section's values with Klipper's own checks.

Klipper refuses a config whose values are out of the range each option declares; the
importer applies the same checks so it never carries over a value Klipper itself
would have rejected, and reports the reason in Klipper's terms instead.
"""

from __future__ import annotations

import math
from typing import Any

from printhost.klipper_import.reader import KlipperOption

__all__ = ["KlipperSection", "OptionProblem", "format_number", "parse_gear_ratio"]


class OptionProblem(Exception):
    """A key that cannot be converted; the message is the reason."""


_REQUIRED = object()


class KlipperSection:
    """Typed access to one Klipper section, with Klipper's checks, remembering what was read."""

    def __init__(self, name: str, options: dict[str, KlipperOption] | None) -> None:
        self.name = name
        self.present = options is not None
        self.options = options or {}
        self.used: set[str] = set()

    def label(self, key: str) -> str:
        return f"[{self.name}] {key}"

    def has(self, key: str) -> bool:
        return key in self.options

    def raw(self, key: str) -> str | None:
        self.used.add(key)
        opt = self.options.get(key)
        return None if opt is None else opt.value

    def peek(self, key: str, fallback: float) -> float:
        """The number Klipper would read for `key` (without checks), else `fallback`.

        Klipper checks one option against another as written in its own file, so the
        limit comes from here even when printhost ends up refusing the other option.
        """
        opt = self.options.get(key)
        try:
            value = float(opt.value) if opt is not None else fallback
        except ValueError:
            return fallback
        return value if math.isfinite(value) else fallback

    def source(self, key: str) -> str:
        """`[section] key`, marked when the value came from the SAVE_CONFIG block."""
        opt = self.options.get(key)
        return self.label(key) + (" (SAVE_CONFIG)" if opt is not None and opt.saved else "")

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.raw(key)
        if value is None:
            if default is _REQUIRED:
                raise OptionProblem("required by Klipper but missing")
            return default
        return value

    def number(self, key: str, default: Any = _REQUIRED, *, integer: bool = False,
               minval: float | None = None, maxval: float | None = None,
               above: float | None = None, below: float | None = None) -> Any:
        value = self.raw(key)
        if value is None:
            if default is _REQUIRED:
                raise OptionProblem("required by Klipper but missing")
            return default
        kind = "an integer" if integer else "a number"
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise OptionProblem(f"{value!r} is not {kind}") from None
        if not math.isfinite(number):
            raise OptionProblem(f"{value!r} is not a finite number")
        if minval is not None and number < minval:
            raise OptionProblem(
                f"{value} is invalid: Klipper requires at least {format_number(minval)}")
        if maxval is not None and number > maxval:
            raise OptionProblem(
                f"{value} is invalid: Klipper requires at most {format_number(maxval)}")
        if above is not None and number <= above:
            raise OptionProblem(
                f"{value} is invalid: Klipper requires a value above {format_number(above)}")
        if below is not None and number >= below:
            raise OptionProblem(
                f"{value} is invalid: Klipper requires a value below {format_number(below)}")
        return number


def format_number(value: float) -> str:
    return f"{value:g}"


def parse_gear_ratio(raw: str) -> float:
    """'80:20, 16:48' -> 80/20 * 16/48, read the way Klipper splits the list."""
    result = 1.0
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        pair = [p.strip() for p in part.split(":")]
        if len(pair) != 2:
            raise OptionProblem(f"{raw!r} is invalid: each gear ratio must be 'driving:driven', "
                                "e.g. '80:20, 16:48'")
        try:
            first, second = float(pair[0]), float(pair[1])
        except ValueError:
            raise OptionProblem(f"{raw!r} is invalid: {part!r} is not two numbers") from None
        if not (math.isfinite(first) and math.isfinite(second)) or second == 0.0:
            raise OptionProblem(f"{raw!r} is invalid: {part!r} is not a usable ratio")
        result *= first / second
    return result
