"""The data dictionary: what one firmware build understands and how it numbers it.

Message ids are not fixed: a firmware build numbers its commands and responses itself
and describes them in a zlib-compressed JSON "data dictionary" that the host downloads
with `identify`. Only `identify_response` (id 0) and `identify` (id 1) are fixed,
because they are needed to fetch the dictionary in the first place. This module turns
that JSON into typed message formats (the printf-style parameter conversions, the
enumerations that name pin and other values) that `codec` encodes and decodes with.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from printhost.mcu.errors import ProtocolError, UnknownMessageError
from printhost.mcu.vlq import decode_vlq, encode_vlq

__all__ = ["BOOTSTRAP_MESSAGES", "DataDictionary", "IDENTIFY_FORMAT",
           "IDENTIFY_RESPONSE_FORMAT", "MessageFormat", "PARAM_TYPES", "Param", "ParamType",
           "expand_enumerations", "msgid_for_index", "parse_format", "parse_output_format"]

IDENTIFY_RESPONSE_FORMAT = "identify_response offset=%u data=%.*s"
IDENTIFY_FORMAT = "identify offset=%u count=%c"
#: The only two messages whose ids every firmware agrees on; with them alone the host
#: can download the data dictionary that numbers everything else.
BOOTSTRAP_MESSAGES: Mapping[str, int] = {IDENTIFY_RESPONSE_FORMAT: 0, IDENTIFY_FORMAT: 1}


def msgid_for_index(index: int) -> int:
    """The dictionary id a Klipper build gives the message it numbers `index`.

    The build numbers messages 0, 1, 2, ... and the firmware writes that number as one
    byte (below 0x80) or two raw 7-bit groups. The dictionary, however, records the
    *VLQ reading* of those bytes, so numbers 96-127 appear as -32..-1 and some two-byte
    numbers come out negative too. Encoding the recorded id with `encode_vlq` gives back
    exactly the bytes the firmware expects.
    """
    if not 0 <= index < 1 << 14:
        raise ProtocolError(f"message index {index} needs more than two bytes")
    raw = bytes((index,)) if index < 0x80 else bytes(((index >> 7) | 0x80, index & 0x7F))
    msgid = decode_vlq(raw)[0]
    if len(encode_vlq(msgid)) != len(raw):
        # The top 32 two-byte numbers read as -32..-1, which the host would send as the
        # one-byte ids of numbers 96-127: such a build could not be addressed correctly.
        raise ProtocolError(f"message index {index} has no unambiguous id")
    return msgid


# --- Format strings -------------------------------------------------------------------


@dataclass(frozen=True)
class ParamType:
    """One printf-style conversion from a message format.

    For integers the declared width is documentation to Klipper: every integer travels
    as a 32-bit VLQ and the firmware handler casts it to whatever C type it wants.
    Klipper's host relies on that, e.g. it sends `invert_step=-1` in a `%c` field, so
    an unsigned field also accepts negatives down to -2**(bits-1) (the same bits as the
    unsigned value). What it must not accept is anything wider than the field, which
    the firmware would silently truncate.
    """

    code: str
    bits: int  # 0 for byte strings
    signed: bool

    @property
    def is_int(self) -> bool:
        return self.bits > 0

    @property
    def min_value(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max_value(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


PARAM_TYPES: Mapping[str, ParamType] = {
    "%u": ParamType("%u", 32, False),
    "%i": ParamType("%i", 32, True),
    "%hu": ParamType("%hu", 16, False),
    "%hi": ParamType("%hi", 16, True),
    "%c": ParamType("%c", 8, False),
    # Three spellings for one wire form: a C string, a buffer in flash and a buffer in
    # RAM differ only in how the firmware reads them.
    "%s": ParamType("%s", 0, False),
    "%.*s": ParamType("%.*s", 0, False),
    "%*s": ParamType("%*s", 0, False),
}


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType
    #: Name of the dictionary enumeration whose strings this parameter takes, if any.
    enumeration: str | None = None


@dataclass(frozen=True)
class MessageFormat:
    """A command, response or debug-output message as one firmware build defines it."""

    msgid: int
    kind: str  # "command", "response" or "output"
    format: str
    name: str  # "#output" for debug output, whose format is free text
    params: tuple[Param, ...]
    id_bytes: bytes

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


def parse_format(msgformat: str) -> tuple[str, tuple[tuple[str, ParamType], ...]]:
    """Split "queue_step oid=%c interval=%u ..." into its name and typed parameters."""
    parts = msgformat.split()
    if not parts:
        raise ProtocolError("empty message format")
    params = []
    seen = set()
    for part in parts[1:]:
        name, eq, code = part.partition("=")
        if not eq or not name:
            raise ProtocolError(f"malformed parameter {part!r} in {msgformat!r}")
        ptype = PARAM_TYPES.get(code)
        if ptype is None:
            raise ProtocolError(f"unknown conversion {code!r} in {msgformat!r}")
        if name in seen:
            raise ProtocolError(f"parameter {name!r} repeated in {msgformat!r}")
        seen.add(name)
        params.append((name, ptype))
    return parts[0], tuple(params)


def parse_output_format(msgformat: str) -> tuple[ParamType, ...]:
    """The conversions, in order, of a free-text firmware `output()` format.

    `%%` is a literal percent sign; any other `%` must start a Klipper conversion.
    """
    types = []
    pos = 0
    while True:
        pos = msgformat.find("%", pos)
        if pos < 0:
            return tuple(types)
        if msgformat.startswith("%%", pos):
            pos += 2
            continue
        for width in (2, 3, 4):
            ptype = PARAM_TYPES.get(msgformat[pos:pos + width])
            if ptype is not None:
                types.append(ptype)
                pos += width
                break
        else:
            raise ProtocolError(f"invalid conversion in output format {msgformat!r}")


# --- The data dictionary --------------------------------------------------------------


def expand_enumerations(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Turn the dictionary's enumerations into plain name -> value maps.

    Besides single values, a build can declare a range: `"PA0": [0, 16]` stands for
    PA0..PA15 with values 0..15. The trailing digits of the key give the first number
    (`"PC3": [35, 2]` is PC3=35, PC4=36); a key without digits starts at 0.
    """
    out: dict[str, dict[str, int]] = {}
    for enum_name, entries in raw.items():
        values = out.setdefault(str(enum_name), {})
        for key, value in entries.items():
            key = str(key)
            if isinstance(value, int) and not isinstance(value, bool):
                values[key] = value
                continue
            try:
                start_value, count = value
                start_value, count = int(start_value), int(count)
            except (TypeError, ValueError):
                raise ProtocolError(
                    f"enumeration {enum_name!r} entry {key!r} has bad value {value!r}"
                ) from None
            root = key.rstrip("0123456789")
            first = int(key[len(root):]) if len(root) < len(key) else 0
            for i in range(count):
                values[f"{root}{first + i}"] = start_value + i
    return out


class DataDictionary:
    """A firmware build's data dictionary: what it understands and how it numbers it.

    Accepts the parsed JSON object, the JSON text, or the zlib-compressed bytes the MCU
    returns through `identify` (the form it stores in flash). `DataDictionary()` with no
    argument knows only the two bootstrap messages, which is what a host has before it
    has downloaded anything.
    """

    def __init__(self, data: Mapping[str, Any] | str | bytes | bytearray | None = None) -> None:
        if data is None:
            data = {}
        elif isinstance(data, (bytes, bytearray, str)):
            data = self._load(data)
        if not isinstance(data, Mapping):
            raise ProtocolError("data dictionary must be a JSON object")
        self.raw: dict[str, Any] = dict(data)
        try:
            self.commands: dict[str, int] = _id_map(data.get("commands", {}), "commands")
            self.responses: dict[str, int] = _id_map(data.get("responses", {}), "responses")
            self.output: dict[str, int] = _id_map(data.get("output", {}), "output")
            self.enumerations = expand_enumerations(data.get("enumerations", {}))
            self.config: dict[str, Any] = dict(data.get("config", {}))
        except ProtocolError:
            raise
        except (AttributeError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed data dictionary: {exc}") from None
        self.version: str = str(data.get("version", ""))
        self.build_versions: str = str(data.get("build_versions", ""))
        self.app: str = str(data.get("app", ""))
        self.license: str = str(data.get("license", ""))
        self._by_id: dict[int, MessageFormat] = {}
        self._by_name: dict[str, MessageFormat] = {}
        # The bootstrap pair is always known; a dictionary repeating it changes nothing.
        declared: dict[int, tuple[str, str]] = {
            msgid: (fmt, "command" if fmt == IDENTIFY_FORMAT else "response")
            for fmt, msgid in BOOTSTRAP_MESSAGES.items()}
        sources = (("command", self.commands), ("response", self.responses),
                   ("output", self.output))
        seen: dict[int, str] = {}
        for kind, table in sources:
            for fmt, msgid in table.items():
                if msgid in seen:
                    raise ProtocolError(
                        f"message id {msgid} used by both {seen[msgid]!r} and {fmt!r}")
                seen[msgid] = fmt
                declared[msgid] = (fmt, kind)
        for msgid, (fmt, kind) in declared.items():
            self._add(msgid, fmt, kind)

    @staticmethod
    def _load(data: str | bytes | bytearray) -> Any:
        if isinstance(data, (bytes, bytearray)):
            if data.lstrip()[:1] != b"{":
                try:
                    data = zlib.decompress(bytes(data))
                except zlib.error as exc:
                    raise ProtocolError(f"data dictionary is neither JSON nor zlib: {exc}") from None
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"data dictionary is not UTF-8: {exc}") from None
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"data dictionary is not valid JSON: {exc}") from None

    def _add(self, msgid: int, fmt: str, kind: str) -> None:
        if kind == "output":
            params = tuple(Param("", t) for t in parse_output_format(fmt))
            name = "#output"
        else:
            name, typed = parse_format(fmt)
            params = tuple(Param(pname, ptype, self._enumeration_for(pname))
                           for pname, ptype in typed)
        message = MessageFormat(msgid, kind, fmt, name, params, encode_vlq(msgid))
        self._by_id[msgid] = message
        if kind != "output":
            other = self._by_name.get(name)
            if other is not None:
                raise ProtocolError(
                    f"message name {name!r} defined twice: {other.format!r} and {fmt!r}")
            self._by_name[name] = message

    def _enumeration_for(self, param_name: str) -> str | None:
        # A parameter takes an enumeration's strings when it is named after it or ends
        # in "_<name>" (step_pin, dir_pin -> "pin"); the first such enumeration wins.
        for enum_name in self.enumerations:
            if param_name == enum_name or param_name.endswith("_" + enum_name):
                return enum_name
        return None

    # --- lookups ---

    @property
    def messages(self) -> list[MessageFormat]:
        return sorted(self._by_id.values(), key=lambda m: m.msgid)

    def by_id(self, msgid: int) -> MessageFormat:
        try:
            return self._by_id[msgid]
        except KeyError:
            raise UnknownMessageError(f"unknown message id {msgid}", msgid) from None

    def lookup(self, name: str) -> MessageFormat:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownMessageError(f"unknown message {name!r}") from None

    def lookup_format(self, msgformat: str) -> MessageFormat:
        """The message with this exact format, or an error naming what the MCU has instead.

        Host code states the full format it was written against; if the firmware
        declares the same name with other parameters, carrying on would misencode.
        """
        words = msgformat.split()
        message = self.lookup(words[0] if words else "")
        if " ".join(words) != message.format:
            raise ProtocolError(
                f"format mismatch: expected {msgformat!r}, MCU has {message.format!r}")
        return message

    def has(self, name: str) -> bool:
        return name in self._by_name

    def constant(self, name: str, default: Any = ...) -> Any:
        """A build constant (CLOCK_FREQ, MCU, ...); `default` if given and absent."""
        if name in self.config:
            return self.config[name]
        if default is ...:
            raise ProtocolError(f"firmware constant {name!r} not in data dictionary")
        return default

    def constant_int(self, name: str, default: Any = ...) -> int:
        value = self.constant(name, default)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ProtocolError(f"firmware constant {name}={value!r} is not an integer") from None

    def constant_float(self, name: str, default: Any = ...) -> float:
        value = self.constant(name, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ProtocolError(f"firmware constant {name}={value!r} is not a number") from None


def _id_map(table: Any, section: str) -> dict[str, int]:
    out = {}
    for fmt, msgid in dict(table).items():
        if not isinstance(msgid, int) or isinstance(msgid, bool):
            raise ProtocolError(f"{section}: id of {fmt!r} is not an integer")
        out[str(fmt)] = msgid
    return out
