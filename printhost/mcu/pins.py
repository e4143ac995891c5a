"""Pin names as printer configurations write them: `PC8`, `!PB12`, `^PC0`, `~!PA1`.

Klipper's configs mark an inverted pin with `!` and ask for the MCU's internal pull-up
(`^`) or pull-down (`~`) in front of the name, and we read the same syntax so a pin
line copies over from a printer.cfg unchanged. The name itself is only checked against
the firmware's `pin` enumeration once the MCU's data dictionary is known: which names
exist depends on the board.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PIN_RE = re.compile(r"^(?P<mods>[\^~!]*)(?P<name>[A-Za-z_][A-Za-z0-9_.]*)$")


@dataclass(frozen=True)
class PinSpec:
    """One parsed pin: its firmware name and how the host must drive or read it."""

    name: str
    invert: bool = False
    pullup: int = 0  # 1: pull-up, -1: pull-down, 0: none (the firmware's pull_up values)

    def __str__(self) -> str:
        pull = {1: "^", -1: "~"}.get(self.pullup, "")
        return f"{pull}{'!' if self.invert else ''}{self.name}"


def parse_pin(text: str, *, can_pull: bool = False, can_invert: bool = True) -> PinSpec:
    """Parse a configured pin; `can_pull` is for inputs (endstops, buttons) only.

    Raises ValueError with a message that names the problem, because it ends up in a
    configuration error shown to the user.
    """
    raw = text.strip()
    match = _PIN_RE.match(raw)
    if not match:
        raise ValueError(f"{text!r} is not a pin name (expected e.g. PC8, !PB12 or ^PC0)")
    mods = match.group("mods")
    if len(set(mods)) != len(mods):
        raise ValueError(f"pin {text!r} repeats a modifier")
    pullup = 0
    if "^" in mods and "~" in mods:
        raise ValueError(f"pin {text!r} asks for both a pull-up and a pull-down")
    if "^" in mods:
        pullup = 1
    elif "~" in mods:
        pullup = -1
    if pullup and not can_pull:
        raise ValueError(f"pin {text!r}: pull-up/pull-down (^ or ~) only applies to inputs")
    if "!" in mods and not can_invert:
        raise ValueError(f"pin {text!r} cannot be inverted")
    return PinSpec(match.group("name"), "!" in mods, pullup)
