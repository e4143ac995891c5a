"""Turn a Klipper `printer.cfg` into a printhost TOML configuration.

`import_klipper()` reads the Klipper file with Klipper's own rules (described below),
maps every section and key printhost has a counterpart for onto printhost's settings,
and lists everything else in `ImportResult.unconverted` with the reason. The TOML it
writes is checked with `parse_settings` before it is returned, so a value printhost
would refuse never reaches the output: it is reported and printhost's default stays.

How Klipper reads a config file (klippy/configfile.py, which wraps Python's
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
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import secrets
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from printhost.config import SHAPER_TYPES, ConfigError, Settings, describe, parse_settings
from printhost.control.heaters import DERIVATIVE_SMOOTH_S
from printhost.store.atomic import fsync_directory

__all__ = ["ImportResult", "KlipperImportError", "KlipperOption", "import_klipper",
           "main_import", "read_klipper_config"]


class KlipperImportError(ConfigError):
    """The Klipper file cannot be imported at all (Klipper itself would not start)."""


# Klipper writes this header (with the newline in front of it) above the saved block.
SAVE_CONFIG_HEADER = (
    "\n#*# <---------------------- SAVE_CONFIG ---------------------->"
    "\n#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated."
    "\n#*#\n")
SAVED_PREFIX = "#*#"

# Temperatures below absolute zero are refused by Klipper.
ABSOLUTE_ZERO_C = -273.15

# The largest damping ratio Klipper accepts for each shaper.
SHAPER_MAX_DAMPING = {"zv": 0.99, "mzv": 0.99, "zvd": 0.99, "ei": 0.4,
                      "2hump_ei": 0.3, "3hump_ei": 0.2}

# Microsteps assumed for a legacy `step_distance` stepper that does not say.
LEGACY_MICROSTEPS = 16

PIN_REASON = "pins are configured with the MCU link, not imported"
SENSOR_REASON = "pins and sensors are configured with the MCU link, not imported"
MCU_LINK_REASON = "the MCU link is not configured yet, not imported"
NO_COUNTERPART = "printhost has no such setting, not imported"

_SECTION_RE = re.compile(r"\[(?P<header>.+)\]")
_OPTION_RE = re.compile(r"(?P<name>.*?)\s*[=:]\s*(?P<value>.*)$")
_ERROR_KEY_RE = re.compile(r"(?P<key>[A-Za-z0-9_.]+): (?P<msg>.*)$", re.S)
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# =========================================================================== reading

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


# =========================================================================== converting

class _Problem(Exception):
    """A key that cannot be converted; the message is the reason."""


_REQUIRED = object()


class _Section:
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
                raise _Problem("required by Klipper but missing")
            return default
        return value

    def number(self, key: str, default: Any = _REQUIRED, *, integer: bool = False,
               minval: float | None = None, maxval: float | None = None,
               above: float | None = None, below: float | None = None) -> Any:
        value = self.raw(key)
        if value is None:
            if default is _REQUIRED:
                raise _Problem("required by Klipper but missing")
            return default
        kind = "an integer" if integer else "a number"
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise _Problem(f"{value!r} is not {kind}") from None
        if not math.isfinite(number):
            raise _Problem(f"{value!r} is not a finite number")
        if minval is not None and number < minval:
            raise _Problem(f"{value} is invalid: Klipper requires at least {_fmt(minval)}")
        if maxval is not None and number > maxval:
            raise _Problem(f"{value} is invalid: Klipper requires at most {_fmt(maxval)}")
        if above is not None and number <= above:
            raise _Problem(f"{value} is invalid: Klipper requires a value above {_fmt(above)}")
        if below is not None and number >= below:
            raise _Problem(f"{value} is invalid: Klipper requires a value below {_fmt(below)}")
        return number


def _fmt(value: float) -> str:
    return f"{value:g}"


def _tidy(value: float) -> float:
    """Round a computed value to 12 significant digits so the TOML shows no float noise."""
    return float(f"{value:.12g}")


@dataclass
class _Entry:
    value: Any
    section: str     # Klipper section the value came from
    source: str      # Klipper section and key the value came from (or is derived from)
    raw: str | None  # the Klipper text, when the value was read directly
    comment: str


# Why whole sections are left out, by the first word of the section name.
_SECTION_REASONS = {
    "probe": "printhost does not probe",
    "bltouch": "printhost does not probe",
    "smart_effector": "printhost does not probe",
    "bed_mesh": "printhost has no bed mesh compensation",
    "safe_z_home": "printhost homes each axis at its own endstop position",
    "homing_override": "printhost homes each axis at its own endstop position",
    "gcode_macro": "printhost has no G-code macros",
    "delayed_gcode": "printhost has no G-code macros",
    "mcu": "printhost drives a single MCU",
    "fan": "fans arrive with the MCU link",
    "heater_fan": "fans arrive with the MCU link",
    "controller_fan": "fans arrive with the MCU link",
    "fan_generic": "fans arrive with the MCU link",
    "temperature_fan": "fans arrive with the MCU link",
    "temperature_sensor": "extra sensors arrive with the MCU link",
    "verify_heater": "printhost applies Klipper's default heater checks",
    "virtual_sdcard": "printhost stores and runs uploaded files itself",
    "extruder_stepper": "printhost drives one extruder",
}


def _section_reason(name: str) -> str:
    words = name.split()
    base = words[0] if words else name
    if base.startswith("tmc"):
        reason: str | None = "stepper driver setup arrives with the MCU link"
    elif re.fullmatch(r"extruder\d+", base):
        reason = "printhost drives one extruder"
    elif re.fullmatch(r"stepper_[xyz]\d+", base):
        reason = "printhost drives one motor per axis"
    else:
        reason = _SECTION_REASONS.get(base)
    return f"section not supported ({reason})" if reason else "section not supported"


_STEPPER_KEYS_NOT_CONVERTED = {
    "homing_retract_dist": NO_COUNTERPART,
    "homing_retract_speed": NO_COUNTERPART,
    "second_homing_speed": NO_COUNTERPART,
    "homing_positive_dir": NO_COUNTERPART,
    "step_pulse_duration": MCU_LINK_REASON,
}

_SENSOR_KEYS = ("sensor_type", "sensor_pin", "pullup_resistor", "inline_resistor",
                "adc_voltage", "voltage_offset", "sensor_mcu", "pwm_cycle_time")
_SENSOR_PREFIXES = ("rtd_", "tc_", "spi_", "i2c_")


class _Converter:
    def __init__(self, cfg: KlipperConfig) -> None:
        self.cfg = cfg
        self.entries: dict[str, _Entry] = {}
        self.unconverted: list[tuple[str, str]] = []   # (section, message)
        self.notes: list[str] = list(cfg.notes)
        self.defaults = {key: value for key, value, _ in describe()}
        self.handled: set[str] = set()
        self.probe_sections_used: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def section(self, name: str) -> _Section:
        self.handled.add(name)
        return _Section(name, self.cfg.sections.get(name))

    def put(self, key: str, value: Any, source: str, raw: str | None, comment: str) -> bool:
        """Write one printhost key, unless printhost's own limits for that key refuse it."""
        if key not in self.defaults:
            raise AssertionError(f"importer writes unknown printhost key {key}")
        section = source[1:source.index("]")]
        problem = _field_problem(key, value)
        if problem:
            shown = f"{source} = {raw}" if raw is not None else source
            self.skip(section, f"{shown}: rejected by printhost ({key}: {problem}); "
                               + self.default_note(key))
            return False
        self.entries[key] = _Entry(value, section, source, raw, comment)
        return True

    def skip(self, sec: _Section | str, message: str) -> None:
        name = sec.name if isinstance(sec, _Section) else sec
        self.unconverted.append((name, message))

    def default_note(self, key: str) -> str:
        return f"printhost's default {_toml_value(self.defaults[key])} is used"

    def read(self, sec: _Section, key: str, target: str | None, **kw: Any) -> Any:
        """Read a number; on a problem record it (naming the printhost default) and return None."""
        try:
            return sec.number(key, **kw)
        except _Problem as exc:
            tail = f"; {self.default_note(target)}" if target else ""
            self.skip(sec, f"{sec.label(key)}: {exc}{tail}")
            return None

    def copy(self, sec: _Section, key: str, target: str, **kw: Any) -> Any:
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

    def leftovers(self, sec: _Section, reasons: dict[str, str] | None = None,
                  default_reason: str = NO_COUNTERPART) -> None:
        for key in sec.options:
            if key in sec.used:
                continue
            reason = (reasons or {}).get(key)
            if reason is None:
                reason = default_reason
            self.skip(sec, f"{sec.label(key)}: {reason}")

    # ------------------------------------------------------------------ sections
    def convert(self) -> None:
        if "printer" not in self.cfg.sections:
            raise KlipperImportError(
                f"{self.cfg.files[0]}: no [printer] section; Klipper requires one "
                "(kinematics, max_velocity, max_accel)")
        kinematics = self.printer()
        supported = kinematics in ("cartesian", "corexy", None)
        for axis in ("x", "y", "z"):
            self.stepper_axis(axis, report_missing=supported)
        self.extruder()
        self.heater(self.section("heater_bed"), "heater_bed")
        self.input_shaper()
        self.mcu()
        self.gcode_arcs()
        self.firmware_retraction()
        for name in self.cfg.sections:
            if name not in self.handled:
                reason = _section_reason(name)
                if name in self.probe_sections_used:
                    reason += "; its z_offset was used as the Z endstop position"
                self.skip(name, f"[{name}]: {reason}")

    def printer(self) -> str | None:
        sec = self.section("printer")
        kinematics: str | None = None
        try:
            raw = sec.text("kinematics")
            if raw in ("cartesian", "corexy"):
                kinematics = raw
                self.put("printer.kinematics", raw, sec.label("kinematics"), raw,
                         sec.label("kinematics"))
            else:
                self.skip(sec, f"[printer] kinematics = {raw}: not supported "
                               "(printhost drives cartesian and corexy printers)")
                kinematics = raw
        except _Problem as exc:
            self.skip(sec, f"[printer] kinematics: {exc}; {self.default_note('printer.kinematics')}")
        velocity = self.copy(sec, "max_velocity", "printer.max_velocity", above=0.0)
        accel = self.copy(sec, "max_accel", "printer.max_accel", above=0.0)
        effective = {"max_velocity": velocity if velocity is not None
                     else self.defaults["printer.max_velocity"],
                     "max_accel": accel if accel is not None else self.defaults["printer.max_accel"]}
        # The limits Klipper would check the other options against (its own values when
        # they are usable at all, else the ones printhost will run with).
        klipper = {name: value if (value := sec.peek(name, effective[name])) > 0
                   else effective[name] for name in effective}
        self.copy(sec, "square_corner_velocity", "printer.square_corner_velocity",
                  default=5.0, minval=0.0)
        self.cruise_ratio(sec, klipper["max_accel"])
        for key, name in (("max_z_velocity", "max_velocity"), ("max_z_accel", "max_accel")):
            target = f"printer.{key}"
            if sec.has(key):
                self.copy(sec, key, target, above=0.0, maxval=klipper[name])
            else:
                sec.used.add(key)
                self.put(target, effective[name], f"[printer] {key} (Klipper's default: {name})",
                         None, f"not set in [printer]: Klipper then uses {name}")
        self.leftovers(sec, {
            "max_stepper_error": "Klipper read max_stepper_error from [mcu], never from "
                                 "[printer], not imported",
        }, NO_COUNTERPART if kinematics in ("cartesian", "corexy")
            else "belongs to an unsupported kinematics, not imported")
        return kinematics

    def cruise_ratio(self, sec: _Section, accel: float) -> None:
        if sec.has("minimum_cruise_ratio"):
            self.copy(sec, "minimum_cruise_ratio", "printer.minimum_cruise_ratio",
                      minval=0.0, below=1.0)
            if sec.has("max_accel_to_decel"):
                sec.used.add("max_accel_to_decel")
                self.notes.append("[printer] max_accel_to_decel: ignored because "
                                  "minimum_cruise_ratio is set (Klipper did the same)")
            return
        if not sec.has("max_accel_to_decel"):
            self.copy(sec, "minimum_cruise_ratio", "printer.minimum_cruise_ratio", default=0.5)
            return
        to_decel = self.read(sec, "max_accel_to_decel", "printer.minimum_cruise_ratio", above=0.0)
        if to_decel is None:
            return
        ratio = _tidy(1.0 - min(1.0, to_decel / accel))
        raw = sec.raw("max_accel_to_decel")
        self.put("printer.minimum_cruise_ratio", ratio, "[printer] max_accel_to_decel", raw,
                 f"from the legacy max_accel_to_decel = {raw}: 1 - {raw}/max_accel, "
                 "as Klipper converted it")
        self.notes.append(f"[printer] max_accel_to_decel = {raw}: legacy key, converted to "
                          f"minimum_cruise_ratio = {_toml_value(ratio)} "
                          "(1 - max_accel_to_decel / max_accel, never below 0, as Klipper "
                          "computed it)")

    # ---------------------------------------------------------------- steppers
    def step_geometry(self, sec: _Section, table: str) -> None:
        """rotation_distance, microsteps, full_steps_per_rotation and gear_ratio."""
        if sec.has("step_distance") and not sec.has("rotation_distance"):
            self.legacy_step_distance(sec, table)
            return
        if sec.has("step_distance"):
            sec.used.add("step_distance")
            self.notes.append(f"{sec.label('step_distance')}: ignored because rotation_distance "
                              "is set (Klipper did the same)")
        self.copy(sec, "rotation_distance", f"{table}.rotation_distance", above=0.0)
        self.copy(sec, "microsteps", f"{table}.microsteps", integer=True, minval=1)
        full = self.read(sec, "full_steps_per_rotation", f"{table}.full_steps_per_rotation",
                         default=200, integer=True, minval=1)
        if full is not None and full % 4:
            self.skip(sec, f"{sec.label('full_steps_per_rotation')}: {full} is invalid: Klipper "
                           "requires a multiple of 4; "
                           + self.default_note(f"{table}.full_steps_per_rotation"))
        elif full is not None:
            self.copy(sec, "full_steps_per_rotation", f"{table}.full_steps_per_rotation",
                      default=200, integer=True)
        self.gear_ratio(sec, table)

    def gear_ratio(self, sec: _Section, table: str) -> None:
        raw = sec.raw("gear_ratio")
        if raw is None:
            self.put(f"{table}.gear_ratio", 1.0, sec.label("gear_ratio"), None,
                     f"not set in [{sec.name}]: no gearing")
            return
        try:
            ratio = _parse_gear_ratio(raw)
        except _Problem as exc:
            self.skip(sec, f"{sec.label('gear_ratio')}: {exc}; "
                           + self.default_note(f"{table}.gear_ratio"))
            return
        self.put(f"{table}.gear_ratio", _tidy(ratio), sec.label("gear_ratio"), raw,
                 f"{sec.label('gear_ratio')} = {raw}")

    def legacy_step_distance(self, sec: _Section, table: str) -> None:
        step = self.read(sec, "step_distance", f"{table}.rotation_distance", above=0.0)
        micro = self.read(sec, "microsteps", f"{table}.microsteps",
                          default=None, integer=True, minval=1)
        full = self.read(sec, "full_steps_per_rotation", f"{table}.full_steps_per_rotation",
                         default=200, integer=True, minval=1)
        if sec.has("gear_ratio"):
            sec.used.add("gear_ratio")
            self.notes.append(f"{sec.label('gear_ratio')}: ignored, as Klipper ignored it next "
                              "to step_distance")
        if step is None:
            return
        assumed = micro is None
        driver = self.driver_microsteps(sec.name) if assumed else None
        if driver is not None:
            micro, assumed = driver[1], False
        full = full if full is not None else 200
        micro = micro if micro is not None else LEGACY_MICROSTEPS
        # rotation_distance is derived from the split, so a part printhost refuses is
        # replaced before the distance is computed, keeping the step size exact.
        for key, fallback in (("full_steps_per_rotation", 200), ("microsteps", LEGACY_MICROSTEPS)):
            given = full if key == "full_steps_per_rotation" else micro
            problem = _field_problem(f"{table}.{key}", given)
            if problem:
                self.skip(sec, f"{sec.label(key)} = {given}: rejected by printhost "
                               f"({table}.{key}: {problem}); {fallback} is used and "
                               "rotation_distance computed with it")
                if key == "microsteps":
                    micro, assumed, driver = fallback, True, None
                else:
                    full = fallback
        rotation = _tidy(step * full * micro)
        raw = sec.raw("step_distance")
        self.put(f"{table}.rotation_distance", rotation, sec.label("step_distance"), raw,
                 f"from the legacy step_distance = {raw}: step_distance x "
                 f"{full} full steps x {micro} microsteps")
        if driver is not None:
            self.put(f"{table}.microsteps", micro, f"[{driver[0]}] microsteps", str(micro),
                     f"[{driver[0]}] microsteps (the stepper driver section)")
        else:
            self.put(f"{table}.microsteps", micro, sec.label("microsteps"),
                     None if assumed else sec.raw("microsteps"),
                     "assumed for the legacy step_distance" if assumed else sec.source("microsteps"))
        self.put(f"{table}.full_steps_per_rotation", full, sec.label("full_steps_per_rotation"),
                 sec.raw("full_steps_per_rotation"),
                 sec.label("full_steps_per_rotation") if sec.has("full_steps_per_rotation")
                 else f"not set in [{sec.name}]: Klipper's default")
        self.put(f"{table}.gear_ratio", 1.0, sec.label("gear_ratio"), None,
                 "step_distance already includes any gearing")
        if assumed:
            how = (f"assuming {LEGACY_MICROSTEPS} microsteps, which changes only how the "
                   "distance is split, not the step size")
        elif driver is not None:
            how = f"with the {micro} microsteps of [{driver[0]}]"
        else:
            how = f"with its {micro} microsteps"
        self.notes.append(f"{sec.label('step_distance')} = {raw}: legacy key (removed from "
                          f"Klipper in 2021), converted to rotation_distance = "
                          f"{_toml_value(rotation)} ({raw} x {full} x {micro}), {how}")

    def driver_microsteps(self, stepper: str) -> tuple[str, int] | None:
        """Microsteps set in a `[tmcXXXX stepper]` section (where older configs kept them)."""
        for name, options in self.cfg.sections.items():
            words = name.split()
            if len(words) == 2 and words[0].startswith("tmc") and words[1] == stepper \
                    and "microsteps" in options:
                try:
                    value = int(options["microsteps"].value)
                except ValueError:
                    return None
                return (name, value) if value >= 1 else None
        return None

    def stepper_axis(self, axis: str, report_missing: bool) -> None:
        sec = self.section(f"stepper_{axis}")
        if not sec.present:
            if report_missing:
                self.skip(sec, f"[stepper_{axis}]: section missing (Klipper requires it); "
                               "printhost's defaults are used for this axis")
            return
        self.step_geometry(sec, f"steppers.{axis}")
        table = f"printer.axes.{axis}"
        self.copy(sec, "position_min", f"{table}.position_min", default=0.0)
        low = sec.peek("position_min", 0.0)
        self.copy(sec, "position_max", f"{table}.position_max", above=low)
        high = sec.peek("position_max", self.defaults[f"{table}.position_max"])
        self.endstop(sec, axis, low, high)
        self.copy(sec, "homing_speed", f"{table}.homing_speed", default=5.0, above=0.0)
        reasons = dict(_STEPPER_KEYS_NOT_CONVERTED)
        for key in sec.options:
            if key.endswith("_pin"):
                reasons[key] = PIN_REASON
        self.leftovers(sec, reasons)

    def endstop(self, sec: _Section, axis: str, low: float, high: float) -> None:
        target = f"printer.axes.{axis}.position_endstop"
        pin = (sec.options.get("endstop_pin").value if sec.has("endstop_pin") else "")
        if pin.lstrip("^~! ").startswith("probe:"):
            if sec.has("position_endstop"):
                sec.used.add("position_endstop")
                self.skip(sec, f"{sec.label('position_endstop')}: invalid: Klipper refuses "
                               "position_endstop when the axis homes on the probe "
                               f"(endstop_pin: {pin}); the probe's z_offset is used instead")
            self.probe_endstop(sec, target, low, high)
            return
        value = self.read(sec, "position_endstop", target, minval=low, maxval=high)
        if value is not None:
            self.put(target, value, sec.label("position_endstop"), sec.raw("position_endstop"),
                     sec.source("position_endstop"))

    def probe_endstop(self, sec: _Section, target: str, low: float, high: float) -> None:
        names = [n for n in self.cfg.sections
                 if (n.split() or [""])[0] in ("probe", "bltouch", "smart_effector")
                 or n.startswith("probe_eddy_current ")]
        if not names:
            self.skip(sec, f"{sec.label('position_endstop')}: the axis homes on a probe but no "
                           f"probe section was found; {self.default_note(target)}")
            return
        probe = _Section(names[0], self.cfg.sections[names[0]])
        value = self.read(probe, "z_offset", target, minval=low, maxval=high)
        if value is None:
            return
        self.probe_sections_used.add(names[0])
        self.put(target, value, probe.label("z_offset"), probe.raw("z_offset"),
                 "homes on the probe: Klipper takes the endstop position from "
                 + probe.source("z_offset"))

    # ---------------------------------------------------------------- extruder
    def extruder(self) -> None:
        sec = self.section("extruder")
        if not sec.present:
            self.notes.append("[extruder]: not in the Klipper config; printhost's extruder and "
                              "hotend defaults are kept")
            return
        if any(sec.has(k) for k in ("step_pin", "dir_pin", "rotation_distance", "step_distance")):
            self.step_geometry(sec, "steppers.extruder")
        else:
            self.notes.append("[extruder]: has no stepper in Klipper; printhost's "
                              "steppers.extruder defaults are kept")
        nozzle = self.copy(sec, "nozzle_diameter", "extruder.nozzle_diameter", above=0.0)
        nozzle_eff = nozzle if nozzle is not None else self.defaults["extruder.nozzle_diameter"]
        filament = self.copy(sec, "filament_diameter", "extruder.filament_diameter",
                             minval=sec.peek("nozzle_diameter", nozzle_eff))
        filament_eff = (filament if filament is not None
                        else self.defaults["extruder.filament_diameter"])
        if sec.has("max_extrude_cross_section"):
            self.copy(sec, "max_extrude_cross_section", "extruder.max_extrude_cross_section",
                      above=0.0)
        else:
            sec.used.add("max_extrude_cross_section")
            self.put("extruder.max_extrude_cross_section", 0.0,
                     "[extruder] max_extrude_cross_section", None,
                     "not set in [extruder]: 0 means 4 x nozzle_diameter^2, Klipper's default")
        self.copy(sec, "max_extrude_only_distance", "extruder.max_extrude_only_distance",
                  default=50.0, minval=0.0)
        self.copy(sec, "instantaneous_corner_velocity",
                  "extruder.instantaneous_corner_velocity", default=1.0, minval=0.0)
        self.copy(sec, "pressure_advance", "extruder.pressure_advance", default=0.0, minval=0.0)
        self.copy(sec, "pressure_advance_smooth_time", "extruder.pressure_advance_smooth_time",
                  default=0.040, above=0.0, maxval=0.200)
        # Klipper scales the extrude-only limits by the default extrusion ratio.
        ratio = 4.0 * nozzle_eff ** 2 / (math.pi * (filament_eff / 2.0) ** 2)
        for key, limit in (("max_extrude_only_velocity", "max_velocity"),
                           ("max_extrude_only_accel", "max_accel")):
            target = f"printer.{key}"
            if sec.has(key):
                self.copy(sec, key, target, above=0.0)
                continue
            sec.used.add(key)
            base = self.entries.get(f"printer.{limit}")
            base_value = base.value if base else self.defaults[f"printer.{limit}"]
            self.put(target, _tidy(base_value * ratio),
                     f"[extruder] {key} (Klipper's default from {limit})", None,
                     f"not set in [extruder]: Klipper's default, {limit} x "
                     "4 x nozzle_diameter^2 / filament area")
        self.heater(sec, "extruder")

    def heater(self, sec: _Section, name: str) -> None:
        if not sec.present:
            self.notes.append(f"[{name}]: not in the Klipper config; printhost's "
                              f"heaters.{name} defaults are kept")
            return
        table = f"heaters.{name}"
        self.copy(sec, "min_temp", f"{table}.min_temp", minval=ABSOLUTE_ZERO_C)
        low = sec.peek("min_temp", self.defaults[f"{table}.min_temp"])
        self.copy(sec, "max_temp", f"{table}.max_temp", above=low)
        high = sec.peek("max_temp", self.defaults[f"{table}.max_temp"])
        self.copy(sec, "max_power", f"{table}.max_power", default=1.0, above=0.0, maxval=1.0)
        if name == "extruder":
            self.copy(sec, "min_extrude_temp", "extruder.min_extrude_temp", default=170.0,
                      minval=low, maxval=high)
        self.control(sec, table)
        smooth_opt = sec.options.get("smooth_time")
        smooth = smooth_opt.value if smooth_opt is not None else None
        reasons = {}
        if smooth is not None:
            try:
                same = float(smooth) == DERIVATIVE_SMOOTH_S
            except ValueError:
                same = False
            reasons["smooth_time"] = (
                f"printhost always smooths over {_fmt(DERIVATIVE_SMOOTH_S)} s (Klipper's "
                "default); " + ("the same value" if same else f"{smooth} s is not imported"))
        reasons["max_delta"] = "only used by watermark control, not imported"
        if name == "heater_bed":
            reasons["min_extrude_temp"] = "only meaningful for an extruder, not imported"
        for key in sec.options:
            if key.endswith("_pin") or key in _SENSOR_KEYS or key.startswith(_SENSOR_PREFIXES):
                reasons[key] = SENSOR_REASON
        if name == "extruder":
            reasons["step_pulse_duration"] = MCU_LINK_REASON
        self.leftovers(sec, reasons)

    def control(self, sec: _Section, table: str) -> None:
        try:
            control = sec.text("control")
        except _Problem as exc:
            self.skip(sec, f"{sec.label('control')}: {exc}; printhost's default PID gains are used")
            for key in ("pid_kp", "pid_ki", "pid_kd"):
                if sec.has(key):
                    sec.used.add(key)
                    self.skip(sec, f"{sec.label(key)}: not imported because control is missing")
            return
        if control != "pid":
            what = ("printhost heaters are PID-controlled" if control == "watermark"
                    else "Klipper accepts only pid or watermark")
            self.skip(sec, f"{sec.label('control')} = {control}: not supported ({what}); "
                           "printhost's default PID gains are used")
            for key in ("pid_kp", "pid_ki", "pid_kd"):
                if sec.has(key):
                    sec.used.add(key)
                    self.skip(sec, f"{sec.label(key)}: not used with control = {control}, "
                                   "not imported")
            return
        for key in ("pid_kp", "pid_ki", "pid_kd"):
            self.copy(sec, key, f"{table}.{key}")

    # ---------------------------------------------------------------- the rest
    def input_shaper(self) -> None:
        sec = self.section("input_shaper")
        if not sec.present:
            return
        common = sec.text("shaper_type", "mzv")
        for axis in ("x", "y"):
            key = f"shaper_type_{axis}"
            raw = sec.text(key, common)
            label = sec.label(key if sec.has(key) else "shaper_type")
            name = raw.strip().lower()
            max_damping = 0.99
            if "(" in name:
                self.skip(sec, f"{label} = {raw}: shaper parameters are not supported; "
                               + self.default_note(f"input_shaper.{key}"))
            elif name not in SHAPER_TYPES:
                self.skip(sec, f"{label} = {raw}: unknown shaper type (printhost knows "
                               f"{', '.join(SHAPER_TYPES)}); "
                               + self.default_note(f"input_shaper.{key}"))
            else:
                max_damping = SHAPER_MAX_DAMPING.get(name, 0.99)
                given = key if sec.has(key) else "shaper_type" if sec.has("shaper_type") else None
                self.put(f"input_shaper.{key}", name, label, raw if given else None,
                         sec.source(given) if given else "not set in [input_shaper]: Klipper's default")
                if raw.strip() != name:
                    self.notes.append(f"{label} = {raw}: written as {name!r}; Klipper itself "
                                      "accepts only lower-case shaper names in the config")
            self.copy(sec, f"shaper_freq_{axis}", f"input_shaper.shaper_freq_{axis}",
                      default=0.0, minval=0.0)
            self.copy(sec, f"damping_ratio_{axis}", f"input_shaper.damping_ratio_{axis}",
                      default=0.1, minval=0.0, maxval=max_damping)
        z_reason = "printhost shapes X and Y only, not imported"
        self.leftovers(sec, {"shaper_freq_z": z_reason, "shaper_type_z": z_reason,
                             "damping_ratio_z": z_reason})

    def mcu(self) -> None:
        sec = self.section("mcu")
        if not sec.present:
            return
        if sec.has("max_stepper_error"):
            self.copy(sec, "max_stepper_error", "mcu.max_stepper_error", minval=0.0)
        self.leftovers(sec, default_reason=MCU_LINK_REASON)

    def gcode_arcs(self) -> None:
        sec = self.section("gcode_arcs")
        if not sec.present:
            self.notes.append("[gcode_arcs]: not in the Klipper config, so Klipper would "
                              "refuse G2/G3; printhost accepts arcs (gcode.arc_resolution "
                              "keeps its default)")
            return
        self.copy(sec, "resolution", "gcode.arc_resolution", default=1.0, above=0.0)
        self.leftovers(sec)

    def firmware_retraction(self) -> None:
        sec = self.section("firmware_retraction")
        if not sec.present:
            return
        table = "firmware_retraction"
        self.copy(sec, "retract_length", f"{table}.retract_length", default=0.0, minval=0.0)
        self.copy(sec, "retract_speed", f"{table}.retract_speed", default=20.0, minval=1.0)
        self.copy(sec, "unretract_extra_length", f"{table}.unretract_extra_length",
                  default=0.0, minval=0.0)
        self.copy(sec, "unretract_speed", f"{table}.unretract_speed", default=10.0, minval=1.0)
        self.leftovers(sec)


def _field_problem(key: str, value: Any) -> str | None:
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


def _parse_gear_ratio(raw: str) -> float:
    """'80:20, 16:48' -> 80/20 * 16/48, read the way Klipper splits the list."""
    result = 1.0
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        pair = [p.strip() for p in part.split(":")]
        if len(pair) != 2:
            raise _Problem(f"{raw!r} is invalid: each gear ratio must be 'driving:driven', "
                           "e.g. '80:20, 16:48'")
        try:
            first, second = float(pair[0]), float(pair[1])
        except ValueError:
            raise _Problem(f"{raw!r} is invalid: {part!r} is not two numbers") from None
        if not (math.isfinite(first) and math.isfinite(second)) or second == 0.0:
            raise _Problem(f"{raw!r} is invalid: {part!r} is not a usable ratio")
        result *= first / second
    return result


# =========================================================================== writing

def _toml_value(value: Any) -> str:
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


def _render(entries: dict[str, _Entry], order: dict[str, int], header: list[str],
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
        out.append(f"{name} = {_toml_value(entry.value)}  # {_comment(entry.comment)}")
    if footer:
        out.append("")
        out.extend(f"# {_comment(line)}" if line else "#" for line in footer)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class ImportResult:
    """The printhost TOML and what could not be carried over."""
    toml: str
    unconverted: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)
    settings: Settings | None = None
    files: list[str] = dataclasses.field(default_factory=list)


def _validate(conv: _Converter, order: dict[str, int], source: str) -> Settings:
    """Drop every value printhost refuses until the document passes parse_settings."""
    tag = "klipper-import"
    for _ in range(len(conv.entries) + 2):
        text = _render(conv.entries, order, [], [])
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
    conv = _Converter(cfg)
    conv.convert()
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
    text = _render(conv.entries, order, header, footer)
    settings = parse_settings(tomllib.loads(text), source=source)
    return ImportResult(toml=text, unconverted=unconverted, notes=list(conv.notes),
                        settings=settings, files=list(cfg.files))


# =========================================================================== command line

def _write_atomically(target: Path, text: str) -> None:
    """Replace `target` with `text` in one step (temporary file, fsync, rename).

    A configuration file is not a secret: a new one gets the usual 0666 filtered by the
    umask, and a file being replaced keeps its permissions.
    """
    directory = target.parent
    tmp = directory / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        keep_mode: int | None = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        keep_mode = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if keep_mode is not None:
                os.fchmod(handle.fileno(), keep_mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def main_import(cfg_path: str, out: str | None) -> int:
    """`printhost config import-klipper CFG [-o OUT]`: 0 on success, 2 on a fatal error.

    The TOML goes to OUT (replaced atomically) or to standard output; the list of what
    was not converted, and the notes, go to standard error.
    """
    if out is not None and Path(out).resolve() == Path(cfg_path).resolve():
        print(f"printhost: refusing to overwrite the Klipper config {cfg_path} with the "
              "import", file=sys.stderr)
        return 2
    try:
        result = import_klipper(Path(cfg_path))
    except KlipperImportError as exc:
        print(f"printhost: cannot import Klipper config: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.unconverted:
        print(f"{len(result.unconverted)} item(s) not converted:", file=sys.stderr)
        for item in result.unconverted:
            print(f"  - {item}", file=sys.stderr)
    if out is None:
        sys.stdout.write(result.toml)
        sys.stdout.flush()
        return 0
    try:
        _write_atomically(Path(out), result.toml)
    except OSError as exc:
        print(f"printhost: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} from {cfg_path}", file=sys.stderr)
    return 0
