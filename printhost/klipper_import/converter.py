"""The state of one conversion and the helpers that write a printhost key.

Every value the importer writes has to say which Klipper section and key it came from,
must pass printhost's own limits for that key (or be reported, naming the default that
stays), and every key it does not use has to be listed with a reason. `Converter`
keeps that bookkeeping in one place so the per-section mappings (`convert`,
`steppers`, `heaters`) only state what maps to what.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from printhost.config import Settings, describe
from printhost.klipper_import.options import KlipperSection, OptionProblem
from printhost.klipper_import.reader import KlipperConfig
from printhost.klipper_import.render import Entry, toml_value

__all__ = ["Converter", "NO_COUNTERPART", "PULSE_REASON", "SENSOR_REASON", "PinRequest",
           "field_problem", "tidy"]

# The reasons given for keys printhost leaves out, shared by every section's mapping.
SENSOR_REASON = "printhost's thermistor reading has no such setting, not imported"
PULSE_REASON = ("printhost sends the same step pulse duration for every stepper (2 us), "
                "not imported")
NO_COUNTERPART = "printhost has no such setting, not imported"


@dataclass(frozen=True)
class PinRequest:
    """What the Klipper config says for one printhost pin key.

    `raw` is the Klipper value (None when there is none); `problem` says why there is
    none, or why `raw` cannot be used (None: not set in the section).
    """

    section: str
    label: str              # "[stepper_x] step_pin"
    raw: str | None
    comment: str
    problem: str | None = None


class Converter:
    """What has been written, skipped and noted so far, and how to add to it."""

    def __init__(self, cfg: KlipperConfig) -> None:
        self.cfg = cfg
        self.entries: dict[str, Entry] = {}
        self.unconverted: list[tuple[str, str]] = []   # (section, message)
        self.notes: list[str] = list(cfg.notes)
        self.defaults = {key: value for key, value, _ in describe()}
        self.handled: set[str] = set()
        self.probe_sections_used: set[str] = set()
        self.pin_requests: dict[str, PinRequest] = {}
        self.probe_pins_used: set[str] = set()

    def want_pin(self, sec: KlipperSection, key: str, target: str, *,
                 problem: str | None = None) -> None:
        """Feed the Klipper pin `key` (set or not) to the printhost pin key `target`;
        `pins.assign_pins` decides all pins together once every section is read."""
        raw = sec.raw(key)
        self.pin_requests[target] = PinRequest(sec.name, sec.label(key), raw,
                                               sec.source(key), problem)

    def section(self, name: str) -> KlipperSection:
        self.handled.add(name)
        return KlipperSection(name, self.cfg.sections.get(name))

    def put(self, key: str, value: Any, source: str, raw: str | None, comment: str) -> bool:
        """Write one printhost key, unless printhost's own limits for that key refuse it."""
        if key not in self.defaults:
            raise AssertionError(f"importer writes unknown printhost key {key}")
        section = source[1:source.index("]")]
        problem = field_problem(key, value)
        if problem:
            shown = f"{source} = {raw}" if raw is not None else source
            self.skip(section, f"{shown}: rejected by printhost ({key}: {problem}); "
                               + self.default_note(key))
            return False
        self.entries[key] = Entry(value, section, source, raw, comment)
        return True

    def skip(self, sec: KlipperSection | str, message: str) -> None:
        name = sec.name if isinstance(sec, KlipperSection) else sec
        self.unconverted.append((name, message))

    def default_note(self, key: str) -> str:
        return f"printhost's default {toml_value(self.defaults[key])} is used"

    def read(self, sec: KlipperSection, key: str, target: str | None, **kw: Any) -> Any:
        """Read a number; on a problem record it (naming the printhost default) and return None."""
        try:
            return sec.number(key, **kw)
        except OptionProblem as exc:
            tail = f"; {self.default_note(target)}" if target else ""
            self.skip(sec, f"{sec.label(key)}: {exc}{tail}")
            return None

    def copy(self, sec: KlipperSection, key: str, target: str, **kw: Any) -> Any:
        """Read a number and write it to `target`; missing optional keys use Klipper's default."""
        value = self.read(sec, key, target, **kw)
        if value is None:
            return None
        if sec.has(key):
            done = self.put(target, value, sec.label(key), sec.raw(key), sec.source(key))
        else:
            done = self.put(target, value, sec.label(key), None,
                            f"not set in [{sec.name}]: Klipper's default")
        return value if done else None

    def leftovers(self, sec: KlipperSection, reasons: dict[str, str] | None = None,
                  default_reason: str = NO_COUNTERPART) -> None:
        for key in sec.options:
            if key in sec.used:
                continue
            reason = (reasons or {}).get(key)
            if reason is None:
                reason = default_reason
            self.skip(sec, f"{sec.label(key)}: {reason}")


def field_problem(key: str, value: Any) -> str | None:
    """Check one value against the limits printhost declares for the field (None if fine).

    The same limits are enforced again by parse_settings on the whole document; checking
    here first lets values derived from this one use the value that will be in effect.
    """
    owner: Any = Settings
    spec = None
    for part in key.split("."):
        spec = {f.name: f for f in dataclasses.fields(owner)}[part]
        owner = typing.get_type_hints(owner)[part]
    assert spec is not None
    meta = spec.metadata
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if low is not None and (value < low or (meta.get("exclusive_min") and value == low)):
        return f"{value!r} is below the minimum {low}"
    if high is not None and value > high:
        return f"{value!r} is above the maximum {high}"
    if choices and value not in choices:
        return f"{value!r} is not one of {', '.join(choices)}"
    return None


def tidy(value: float) -> float:
    """Round a computed value to 12 significant digits so the TOML shows no float noise."""
    return float(f"{value:.12g}")
