"""Messages: named parameters <-> bytes, and streams of them packed into blocks.

A message is its VLQ id from the firmware's data dictionary followed by each parameter
in declaration order. `MessageCodec` is the one place that joins the dictionary's
formats to the value encodings, so the checks Klipper's firmware cannot make for
itself (ranges, enumeration names, missing or unknown parameters) happen here, before
anything reaches the wire. `MessageStream` packs encoded messages into consecutive
blocks the way Klipper's serial queue does, and reads such streams back for tests.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from printhost.mcu.dictionary import PARAM_TYPES, DataDictionary, MessageFormat, Param
from printhost.mcu.errors import ProtocolError
from printhost.mcu.framing import MESSAGE_PAYLOAD_MAX, BlockParser, encode_block
from printhost.mcu.vlq import append_string, append_vlq, decode_string, decode_vlq

__all__ = ["MessageCodec", "MessageStream"]

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
            append_vlq(out, number, self.mcu_form)
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
        append_string(out, data)

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
                value, pos = decode_string(payload, pos, message.name)
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
