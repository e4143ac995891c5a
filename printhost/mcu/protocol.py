"""Klipper's binary host<->MCU protocol, reproduced byte for byte.

The firmware on the printer board is unmodified Klipper, so nothing here is a design
choice: every byte we put on the wire must be one the firmware's parser accepts, and
every byte it sends must be read the way Klipper's own host reads it. The layers are:

* integers: a variable-length quantity (VLQ) scheme in which each byte carries seven
  bits, high bit set on all but the last, and bits 5-6 of the first byte act as a sign
  so small negative numbers stay short (-32..95 in one byte);
* byte strings (`%s`, `%.*s`, `%*s`): one raw length byte followed by the bytes;
* messages: the VLQ message id from the firmware's data dictionary, then each
  parameter in declaration order;
* blocks: `<length><0x10|seq><messages...><crc16 hi><crc16 lo><0x7e>`, at most 64
  bytes, so at most 59 bytes of messages per block.

Message ids are not fixed: a firmware build numbers its commands and responses itself
and describes them in a zlib-compressed JSON "data dictionary" that the host downloads
with `identify`. Only `identify_response` (id 0) and `identify` (id 1) are fixed,
because they are needed to fetch the dictionary in the first place. `DataDictionary`
parses that JSON, `MessageCodec` uses it to turn named parameters into message bytes and
back, `encode_block`/`BlockParser` frame and unframe, and `MessageStream` packs
messages into consecutive blocks the way Klipper's serial queue does.
"""

from __future__ import annotations

import json
import operator
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BOOTSTRAP_MESSAGES",
    "BlockParser",
    "DataDictionary",
    "IDENTIFY_FORMAT",
    "IDENTIFY_RESPONSE_FORMAT",
    "MESSAGE_DEST",
    "MESSAGE_HEADER_SIZE",
    "MESSAGE_MAX",
    "MESSAGE_MIN",
    "MESSAGE_PAYLOAD_MAX",
    "MESSAGE_SEQ_MASK",
    "MESSAGE_SYNC",
    "MESSAGE_TRAILER_SIZE",
    "MessageCodec",
    "MessageFormat",
    "MessageStream",
    "PARAM_TYPES",
    "Param",
    "ParamType",
    "ProtocolError",
    "UnknownMessageError",
    "VLQ_MAX",
    "VLQ_MIN",
    "crc16_ccitt",
    "decode_vlq",
    "encode_block",
    "encode_vlq",
    "expand_enumerations",
    "msgid_for_index",
    "parse_format",
    "parse_output_format",
    "vlq_size",
]

# --- Block framing constants (fixed by the firmware) ----------------------------------

MESSAGE_MIN = 5  # an empty block: length, sequence, two CRC bytes, sync
MESSAGE_MAX = 64  # the firmware's receive code never accepts a longer block
MESSAGE_HEADER_SIZE = 2
MESSAGE_TRAILER_SIZE = 3
MESSAGE_PAYLOAD_MAX = MESSAGE_MAX - MESSAGE_MIN  # 59 bytes of messages per block
MESSAGE_SEQ_MASK = 0x0F
MESSAGE_DEST = 0x10  # the high nibble of every sequence byte; the rest is reserved
MESSAGE_SYNC = 0x7E

IDENTIFY_RESPONSE_FORMAT = "identify_response offset=%u data=%.*s"
IDENTIFY_FORMAT = "identify offset=%u count=%c"
#: The only two messages whose ids every firmware agrees on; with them alone the host
#: can download the data dictionary that numbers everything else.
BOOTSTRAP_MESSAGES: Mapping[str, int] = {IDENTIFY_RESPONSE_FORMAT: 0, IDENTIFY_FORMAT: 1}

#: Integers on the wire are 32-bit; the encoder accepts both the signed and the
#: unsigned reading of those 32 bits, as Klipper's host does.
VLQ_MIN = -(1 << 31)
VLQ_MAX = (1 << 32) - 1

_U32 = 0xFFFFFFFF
_VLQ_MAX_BYTES = 5


class ProtocolError(ValueError):
    """Bytes or values that do not fit Klipper's protocol (a programming or link error)."""


class UnknownMessageError(ProtocolError):
    """A message id or name the data dictionary does not define.

    Kept separate because on a live link it usually means the host is talking to a
    different firmware build than the one whose dictionary it loaded.
    """

    def __init__(self, message: str, msgid: int | None = None) -> None:
        super().__init__(message)
        self.msgid = msgid


# --- Variable length quantities --------------------------------------------------------

# Largest magnitude that fits in n bytes: the first byte's bits 5-6 double as a sign, so
# n bytes hold [-(1 << (7n-2)), 3 << (7n-2)). The table in Klipper's Protocol.md
# (-32..95, -4096..12287, ...) is this formula.
_VLQ_BOUNDS = tuple((-(1 << (7 * n - 2)), 3 << (7 * n - 2)) for n in range(1, 5))


def vlq_size(value: int) -> int:
    """Bytes the host encoder spends on `value` (1-5)."""
    for n, (low, high) in enumerate(_VLQ_BOUNDS, start=1):
        if low <= value < high:
            return n
    return _VLQ_MAX_BYTES


def _append_vlq(out: bytearray, value: int, mcu_form: bool = False) -> None:
    if not VLQ_MIN <= value <= VLQ_MAX:
        raise ProtocolError(f"{value} does not fit in 32 bits")
    if mcu_form:
        # The firmware holds every value as uint32 and sizes it by its int32 reading,
        # so e.g. 0xffffffff goes out as the single byte for -1.
        bits = value & _U32
        size = vlq_size(bits - (1 << 32) if bits & 0x80000000 else bits)
    else:
        # Klipper's Python host sizes by the value as given: 0xffffffff takes five
        # bytes, -1 takes one. Both forms decode to the same 32 bits.
        bits = value
        size = vlq_size(value)
    for shift in range(7 * (size - 1), 0, -7):
        out.append(((bits >> shift) & 0x7F) | 0x80)
    out.append(bits & 0x7F)


def encode_vlq(value: int, *, mcu_form: bool = False) -> bytes:
    """One integer in Klipper's VLQ form.

    `mcu_form=False` gives the bytes Klipper's host sends; `mcu_form=True` gives the
    bytes the firmware's C encoder sends for the same 32 bits (they differ only for
    values whose signed and unsigned readings differ, e.g. 0xffffffff). A simulated
    MCU uses the latter so the host's decoder meets exactly what real boards send.
    """
    out = bytearray()
    _append_vlq(out, value, mcu_form)
    return bytes(out)


def decode_vlq(data: bytes | bytearray | memoryview, pos: int = 0, *,
               signed: bool = True) -> tuple[int, int]:
    """Read one VLQ integer at `pos`; return `(value, position after it)`.

    The result is the 32-bit value read as int32 (`signed`) or uint32, which is all the
    firmware can ever mean: both encoders' forms of the same bits decode alike.
    Encodings longer than five bytes never come from Klipper and are rejected.
    """
    end = len(data)
    if pos >= end:
        raise ProtocolError("truncated integer")
    byte = data[pos]
    pos += 1
    value = byte & 0x7F
    if byte & 0x60 == 0x60:
        value |= -0x20  # bits 5 and 6 both set: a negative number, sign-extend
    used = 1
    while byte & 0x80:
        if used == _VLQ_MAX_BYTES:
            raise ProtocolError("integer encoding longer than 5 bytes")
        if pos >= end:
            raise ProtocolError("truncated integer")
        byte = data[pos]
        pos += 1
        used += 1
        value = (value << 7) | (byte & 0x7F)
    value &= _U32
    if signed and value & 0x80000000:
        value -= 1 << 32
    return value, pos


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


# --- CRC -------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    # Klipper's "CCITT" CRC is the bit-reflected form of polynomial 0x1021 (0x8408
    # reflected) starting from 0xffff with no final xor - the variant catalogued as
    # CRC-16/MCRF4XX. A lookup table of the per-byte step keeps long dictionaries fast.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_ccitt(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit checksum Klipper puts in every block trailer (high byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


# --- Blocks ----------------------------------------------------------------------------


def encode_block(seq: int, payload: bytes | bytearray) -> bytes:
    """Frame `payload` (zero or more encoded messages) as one block.

    Only the low four bits of `seq` are sent. An empty payload makes the 5-byte block
    the firmware uses as an ack/nak.
    """
    if len(payload) > MESSAGE_PAYLOAD_MAX:
        raise ProtocolError(
            f"block payload of {len(payload)} bytes exceeds {MESSAGE_PAYLOAD_MAX}")
    frame = bytearray((len(payload) + MESSAGE_MIN, MESSAGE_DEST | (seq & MESSAGE_SEQ_MASK)))
    frame += payload
    crc = crc16_ccitt(frame)
    frame += bytes((crc >> 8, crc & 0xFF, MESSAGE_SYNC))
    return bytes(frame)


class BlockParser:
    """Cuts a byte stream into blocks, recovering after noise the way Klipper does.

    A serial line drops and corrupts bytes, and the sync byte 0x7e may legitimately
    appear inside a block, so the parser cannot just split on it. Instead it checks the
    block at the head of the buffer (length, sequence high nibble, trailing sync, CRC);
    if anything is wrong it throws away everything up to and including the next 0x7e and
    tries again from there. That is the same rule both the firmware and Klipper's host
    use, so a stream that resynchronises for one resynchronises for the other.

    `errors` counts rejected frames, `discarded` the bytes thrown away doing so
    (including stray sync bytes between blocks, which the protocol permits and which
    are not counted as errors).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need_sync = False
        self.errors = 0
        self.discarded = 0

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a block."""
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self._need_sync = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Add received bytes; return every complete valid block as `(seq, payload)`."""
        buf = self._buf
        buf += data
        blocks: list[tuple[int, bytes]] = []
        while buf:
            if self._need_sync:
                sync = buf.find(MESSAGE_SYNC)
                if sync < 0:
                    self.discarded += len(buf)
                    buf.clear()
                    break
                self.discarded += sync + 1
                del buf[:sync + 1]
                self._need_sync = False
                continue
            # Judge the header as soon as its bytes are here rather than waiting for a
            # whole block's worth: a bad length byte would otherwise stall the stream.
            length = buf[0]
            if not MESSAGE_MIN <= length <= MESSAGE_MAX:
                self._reject()
                continue
            if len(buf) >= 2 and buf[1] & ~MESSAGE_SEQ_MASK != MESSAGE_DEST:
                self._reject()
                continue
            if len(buf) < length:
                break
            crc = crc16_ccitt(memoryview(buf)[:length - MESSAGE_TRAILER_SIZE])
            if (buf[length - 1] != MESSAGE_SYNC or buf[length - 3] != crc >> 8
                    or buf[length - 2] != crc & 0xFF):
                self._reject()
                continue
            blocks.append((buf[1] & MESSAGE_SEQ_MASK,
                           bytes(buf[MESSAGE_HEADER_SIZE:length - MESSAGE_TRAILER_SIZE])))
            del buf[:length]
        return blocks

    def _reject(self) -> None:
        # A sync byte at the head is framing, not damage: drop just that byte.
        if self._buf[0] != MESSAGE_SYNC:
            self.errors += 1
        self._need_sync = True


# --- Format strings and the data dictionary --------------------------------------------


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


# --- Encoding and decoding messages ----------------------------------------------------


class MessageCodec:
    """Named parameters <-> the bytes of one firmware build's messages.

    `mcu_form` selects which side's integer encoder to imitate (see `encode_vlq`):
    the host leaves it off, printhost's simulated MCU turns it on. Decoding accepts both.
    """

    def __init__(self, dictionary: DataDictionary | Mapping[str, Any] | str | bytes | None = None,
                 *, mcu_form: bool = False) -> None:
        if not isinstance(dictionary, DataDictionary):
            dictionary = DataDictionary(dictionary)
        self.dictionary = dictionary
        self.mcu_form = mcu_form
        self._reverse: dict[str, dict[int, str]] = {}

    # --- encoding ---

    def encode(self, name: str, /, **params: Any) -> bytes:
        """One message, e.g. `encode("queue_step", oid=3, interval=100, count=5, add=0)`."""
        message = self.dictionary.lookup(name)
        missing = [p.name for p in message.params if p.name not in params]
        if missing:
            raise ProtocolError(f"{name}: missing parameter(s) {', '.join(missing)}")
        extra = sorted(set(params) - set(message.param_names))
        if extra:
            raise ProtocolError(f"{name}: unknown parameter(s) {', '.join(extra)}")
        out = bytearray(message.id_bytes)
        for param in message.params:
            self._encode_param(out, message, param, params[param.name])
        if len(out) > MESSAGE_PAYLOAD_MAX:
            raise ProtocolError(
                f"{name}: encodes to {len(out)} bytes, more than one block holds "
                f"({MESSAGE_PAYLOAD_MAX})")
        return bytes(out)

    def _encode_param(self, out: bytearray, message: MessageFormat, param: Param,
                      value: Any) -> None:
        where = f"{message.name}: {param.name}"
        if param.enumeration is not None:
            table = self.dictionary.enumerations[param.enumeration]
            if not isinstance(value, str) or value not in table:
                raise ProtocolError(
                    f"{where}={value!r} is not a value of enumeration {param.enumeration!r}")
            value = table[value]
        ptype = param.type
        if ptype.is_int:
            try:
                number = operator.index(value)  # ints, bools, numpy integers; not floats
            except TypeError:
                raise ProtocolError(
                    f"{where}={value!r} must be an integer ({ptype.code})") from None
            if not ptype.min_value <= number <= ptype.max_value:
                raise ProtocolError(
                    f"{where}={number} out of range for {ptype.code} "
                    f"({ptype.min_value}..{ptype.max_value})")
            _append_vlq(out, number, self.mcu_form)
            return
        if isinstance(value, str):
            value = value.encode("utf-8")
        try:
            data = bytes(value)
        except (TypeError, ValueError):
            raise ProtocolError(f"{where}={value!r} must be bytes ({ptype.code})") from None
        if len(data) > MESSAGE_PAYLOAD_MAX:
            raise ProtocolError(
                f"{where} is {len(data)} bytes; at most {MESSAGE_PAYLOAD_MAX} fit in a block")
        # The length is a raw byte, not a VLQ; below 96 the two are the same anyway.
        out.append(len(data))
        out += data

    def encode_text(self, text: str) -> bytes:
        """Encode Klipper's human-readable form, e.g. "queue_step oid=3 interval=100 ...".

        Integers may use any Python literal base (0x10); enumerated parameters take
        their names (pin=PA3); byte strings are written in hex, as in Klipper's console.
        """
        parts = text.split()
        if not parts:
            raise ProtocolError("empty command text")
        message = self.dictionary.lookup(parts[0])
        params: dict[str, Any] = {}
        for part in parts[1:]:
            key, eq, raw = part.partition("=")
            if not eq:
                raise ProtocolError(f"{parts[0]}: expected name=value, got {part!r}")
            param = next((p for p in message.params if p.name == key), None)
            if param is None:
                raise ProtocolError(f"{parts[0]}: unknown parameter {key!r}")
            if key in params:
                raise ProtocolError(f"{parts[0]}: parameter {key!r} given twice")
            params[key] = self._parse_text_value(message, param, raw)
        return self.encode(parts[0], **params)

    @staticmethod
    def _parse_text_value(message: MessageFormat, param: Param, raw: str) -> Any:
        if param.enumeration is not None:
            return raw
        try:
            if param.type.is_int:
                return int(raw, 0)
            return bytes.fromhex(raw)
        except ValueError:
            kind = "integer" if param.type.is_int else "hex bytes"
            raise ProtocolError(f"{message.name}: {param.name}={raw!r} is not {kind}") from None

    def format_text(self, name: str, params: Mapping[str, Any]) -> str:
        """The human-readable form `encode_text` accepts (byte strings in hex)."""
        message = self.dictionary.lookup(name)
        parts = [message.name]
        for param in message.params:
            value = params[param.name]
            if not param.type.is_int and param.enumeration is None:
                value = bytes(value).hex()
            parts.append(f"{param.name}={value}")
        return " ".join(parts)

    # --- decoding ---

    def decode_message(self, payload: bytes | bytearray | memoryview,
                       pos: int = 0) -> tuple[str, dict[str, Any], int]:
        """Decode the message starting at `pos`; return `(name, params, next position)`.

        Integers come back as Klipper's host reads them: int32 for signed conversions,
        uint32 for unsigned ones (so -1 sent in a %c field reads back as 0xffffffff).
        Enumerated values come back as names, or "?<n>" for numbers the enumeration
        does not list, as Klipper reports them.
        """
        msgid, pos = decode_vlq(payload, pos)
        message = self.dictionary.by_id(msgid)
        values: list[Any] = []
        params: dict[str, Any] = {}
        for param in message.params:
            ptype = param.type
            if ptype.is_int:
                value, pos = decode_vlq(payload, pos, signed=ptype.signed)
            else:
                if pos >= len(payload):
                    raise ProtocolError(f"{message.name}: truncated string length")
                length = payload[pos]
                end = pos + 1 + length
                if end > len(payload):
                    raise ProtocolError(f"{message.name}: string runs past end of block")
                value = bytes(payload[pos + 1:end])
                pos = end
            if param.enumeration is not None:
                reverse = self._reverse_enumeration(param.enumeration)
                value = reverse.get(value, f"?{value}")
            values.append(value)
            params[param.name] = value
        if message.kind == "output":
            return message.name, {"#msg": _render_output(message.format, values)}, pos
        return message.name, params, pos

    def decode(self, payload: bytes | bytearray | memoryview) -> list[tuple[str, dict[str, Any]]]:
        """Every message in a block's payload, in order; the payload must end exactly."""
        out = []
        pos = 0
        while pos < len(payload):
            name, params, pos = self.decode_message(payload, pos)
            out.append((name, params))
        return out

    def _reverse_enumeration(self, enum_name: str) -> dict[int, str]:
        reverse = self._reverse.get(enum_name)
        if reverse is None:
            # Where two names share a value the later one wins, as in Klipper's host.
            reverse = {v: k for k, v in self.dictionary.enumerations[enum_name].items()}
            self._reverse[enum_name] = reverse
        return reverse


def _render_output(fmt: str, values: list[Any]) -> str:
    # Substitute decoded values into the firmware's printf text. Byte strings are shown
    # as Python literals, as Klipper's log does, since they need not be printable.
    pieces = []
    pos = 0
    index = 0
    while True:
        at = fmt.find("%", pos)
        if at < 0:
            pieces.append(fmt[pos:])
            return "".join(pieces)
        pieces.append(fmt[pos:at])
        if fmt.startswith("%%", at):
            pieces.append("%")
            pos = at + 2
            continue
        for width in (2, 3, 4):
            if fmt[at:at + width] in PARAM_TYPES:
                break
        value = values[index]
        index += 1
        pieces.append(repr(value) if isinstance(value, bytes) else str(value))
        pos = at + width


# --- Streams of blocks -----------------------------------------------------------------


class MessageStream:
    """Packs encoded messages into consecutive numbered blocks.

    Like Klipper's serial queue it fills each block greedily in order and starts the
    next one when a message would not fit, and every block gets the next sequence
    number (only its low four bits go on the wire). Retransmission and acks are the
    transport's business, not this class's.
    """

    def __init__(self, codec: MessageCodec, *, seq: int = 0) -> None:
        self.codec = codec
        self.next_seq = seq
        self._queued: list[bytes] = []

    def queue(self, name: str, /, **params: Any) -> None:
        self._queued.append(self.codec.encode(name, **params))

    def queue_text(self, text: str) -> None:
        self._queued.append(self.codec.encode_text(text))

    def queue_encoded(self, message: bytes) -> None:
        if not message:
            raise ProtocolError("empty message")
        if len(message) > MESSAGE_PAYLOAD_MAX:
            raise ProtocolError(f"message of {len(message)} bytes does not fit in a block")
        self._queued.append(bytes(message))

    @property
    def queued(self) -> int:
        return len(self._queued)

    def flush(self) -> bytes:
        """All queued messages as blocks (nothing at all if none are queued)."""
        out = bytearray()
        for payload in self._payloads():
            out += encode_block(self.next_seq, payload)
            self.next_seq += 1
        self._queued.clear()
        return bytes(out)

    def pack(self, messages: Iterable[bytes]) -> bytes:
        for message in messages:
            self.queue_encoded(message)
        return self.flush()

    def _payloads(self) -> Iterator[bytes]:
        payload = bytearray()
        for message in self._queued:
            if len(payload) + len(message) > MESSAGE_PAYLOAD_MAX:
                yield bytes(payload)
                payload.clear()
            payload += message
        if payload:
            yield bytes(payload)

    def decode_stream(self, data: bytes | bytearray, *,
                      strict: bool = True) -> list[tuple[str, dict[str, Any]]]:
        """Every message in a byte stream of blocks, in order.

        With `strict` (the default) damaged frames or a trailing partial block raise,
        so a test cannot pass while silently losing messages.
        """
        parser = BlockParser()
        blocks = parser.feed(data)
        if strict and (parser.errors or parser.pending):
            raise ProtocolError(
                f"stream has {parser.errors} bad frame(s) and {parser.pending} "
                "trailing byte(s)")
        out = []
        for _seq, payload in blocks:
            out.extend(self.codec.decode(payload))
        return out
