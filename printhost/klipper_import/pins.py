"""Pins: the stepper, endstop, heater, sensor and fan pins of a Klipper config.

The section mappings only say which Klipper key feeds which printhost pin key
(`Converter.want_pin`); this module then decides every pin at once, because a pin is
only valid in relation to all the others: printhost gives each MCU pin to exactly one
key (its `_check_pins`), where Klipper lets steppers share an enable pin.

Keys are taken in the order printhost checks them, so the first key that names a pin
keeps it and a later one is reported. A pin printhost cannot parse, a pin on another
MCU and a duplicate are named problems. What happens to the key then:

* an optional pin (enable_pin, the extruder's endstop_pin, the fan) is left empty,
  never kept at printhost's default, which is a pin of another board;
* a required pin keeps printhost's default, and is reported naming it. When that
  default is already one of the imported pins, an unused pin from printhost's
  defaults holds its place instead, so the file still loads; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from printhost.klipper_import.converter import Converter, PinRequest
from printhost.klipper_import.render import toml_value
from printhost.mcu.pins import PinSpec, parse_pin

__all__ = ["PIN_KEYS", "assign_pins", "klipper_pin"]


@dataclass(frozen=True)
class PinKey:
    key: str
    required: bool
    is_input: bool
    what: str     # "the enable pin", for messages about an empty optional key


def _keys() -> list[PinKey]:
    # The order and the rules of printhost.config.loader._check_pins.
    keys: list[PinKey] = []
    for name in ("x", "y", "z", "extruder"):
        table = f"steppers.{name}"
        keys += [PinKey(f"{table}.step_pin", True, False, "a step pin"),
                 PinKey(f"{table}.dir_pin", True, False, "a direction pin"),
                 PinKey(f"{table}.enable_pin", False, False, "an enable pin"),
                 PinKey(f"{table}.endstop_pin", name != "extruder", True, "an endstop")]
    for name in ("extruder", "heater_bed"):
        keys += [PinKey(f"heaters.{name}.heater_pin", True, False, "a heater pin"),
                 PinKey(f"heaters.{name}.sensor_pin", True, True, "a sensor pin")]
    keys.append(PinKey("fan.pin", False, False, "a part fan"))
    return keys


PIN_KEYS = _keys()


def klipper_pin(text: str, *, is_input: bool) -> PinSpec:
    """Read a pin the way Klipper writes it and printhost accepts it.

    Klipper allows blanks after each modifier (`! PA1`) and names the main MCU with an
    optional `mcu:` prefix; both are dropped. A pin on any other chip (a second MCU,
    the probe's or a TMC driver's virtual endstop) raises ValueError.
    """
    rest = text.strip()
    mods = ""
    while rest[:1] in ("!", "^", "~") and rest:
        mods += rest[0]
        rest = rest[1:].strip()
    chip, sep, name = rest.partition(":")
    if sep:
        chip, name = chip.strip(), name.strip()
        if chip != "mcu":
            raise ValueError(f"{text.strip()!r} is on the chip {chip!r}, not on the MCU "
                             "printhost drives")
        rest = name
    return parse_pin(mods + rest, can_pull=is_input)


def assign_pins(conv: Converter) -> None:
    """Write every pin key the Klipper config feeds; report what cannot be written."""
    used: dict[str, str] = {}           # pin name -> printhost key holding it
    pending: list[tuple[PinKey, PinRequest | None, str | None]] = []
    for spec in PIN_KEYS:
        if spec.key in conv.entries:        # written by its section's mapping ("" = none)
            continue
        req = conv.pin_requests.get(spec.key)
        why = req.problem if req is not None else None
        if req is not None and req.raw is not None and why is None:
            try:
                pin = klipper_pin(req.raw, is_input=spec.is_input)
            except ValueError as exc:
                why = f"{exc}"
            else:
                if pin.name in used:
                    why = (f"pin {pin.name} is already used by {used[pin.name]} "
                           f"({conv.entries[used[pin.name]].source}); printhost gives each "
                           "pin to one key")
                else:
                    used[pin.name] = spec.key
                    conv.put(spec.key, str(pin), req.label, req.raw, req.comment)
                    continue
        pending.append((spec, req, why))

    # Pins that stay at printhost's default count as used before any placeholder is
    # chosen, so a placeholder never takes a pin printhost would use anyway.
    kept = {}
    for spec, req, _ in pending:
        if spec.required or req is None:  # these keep a pin; optional ones become ""
            default = conv.defaults[spec.key]
            if default:
                kept[spec.key] = parse_pin(default, can_pull=spec.is_input).name
    for spec, req, why in pending:
        shown = (f"{req.label} = {req.raw}" if req is not None and req.raw is not None
                 else req.label if req is not None else spec.key)
        if not spec.required and req is not None:
            none = "no " + spec.what.split(" ", 1)[1]
            conv.put(spec.key, "", req.label, req.raw,
                     f"{req.label} not imported: {none}" if why
                     else f"not set in [{req.section}]: {none}")
            if why:
                follows = ""
                if " already used by " in why and spec.key.endswith(".enable_pin"):
                    follows = (", so the shared pin is switched with "
                               + why.split(" already used by ")[1].split(" ")[0])
                conv.skip(req.section,
                          f"{shown}: {why}; {spec.key} is left empty ({none}){follows}")
            continue
        default = conv.defaults[spec.key]
        name = kept.get(spec.key)
        holder = used.get(name) if name else None
        if holder is None:
            if name:
                used[name] = spec.key
            if req is not None:
                conv.skip(req.section, f"{shown}: {why or 'required by Klipper but missing'}; "
                                       f"printhost's default {toml_value(default)} is used")
            continue
        placeholder = _placeholder(conv, spec, used, set(kept.values()))
        taken = (f"printhost's default {toml_value(default)} is already used by {holder} "
                 f"({conv.entries[holder].source})")
        if placeholder is None:
            # Nothing free: leave the default; the check of the whole file reports it.
            if req is not None:
                conv.skip(req.section, f"{shown}: {why or 'required by Klipper but missing'}; "
                                       f"{taken}")
            continue
        used[placeholder.name] = spec.key
        section = req.section if req is not None else spec.key.split(".")[1]
        label = (req.label if req is not None
                 else f"[{section}] {spec.key.rpartition('.')[2]} (not in the Klipper config)")
        conv.put(spec.key, str(placeholder), label, None,
                 "placeholder, not a pin of this printer: set the right one")
        start = f"{shown}: {why or 'required by Klipper but missing'}; " if req is not None \
            else f"{spec.key}: "
        conv.skip(section, f"{start}{taken}, so the unused {toml_value(str(placeholder))} "
                           "holds its place: set the right pin before connecting a board")


def _placeholder(conv: Converter, spec: PinKey, used: dict[str, str],
                 kept: set[str]) -> PinSpec | None:
    """The first of printhost's default pins that no key uses, shaped like the default."""
    default = parse_pin(conv.defaults[spec.key], can_pull=spec.is_input)
    # An input's place is held by another default input first: reading a pin is harmless.
    for other in sorted(PIN_KEYS, key=lambda k: k.is_input != spec.is_input):
        text = conv.defaults[other.key]
        if not text:
            continue
        name = parse_pin(text, can_pull=other.is_input).name
        if name not in used and name not in kept:
            return PinSpec(name, default.invert, default.pullup)
    return None
