"""Klipper's variable-length integers and byte strings: the protocol's value encodings.

Every parameter of every message is one of two things on the wire, so these are the
only value encodings the firmware knows:

* integers: a variable-length quantity (VLQ) in which each byte carries seven bits,
  high bit set on all but the last, and bits 5-6 of the first byte act as a sign so
  small negative numbers stay short (-32..95 in one byte);
* byte strings (`%s`, `%.*s`, `%*s`): one raw length byte followed by the bytes.

They are kept apart from messages and blocks because the compiled encoders
(`fastencode`) and the dictionary's message ids need them without either.
"""

from __future__ import annotations

from printhost.mcu.errors import ProtocolError

__all__ = ["VLQ_MAX", "VLQ_MIN", "append_string", "append_vlq", "decode_string",
           "decode_vlq", "encode_vlq", "vlq_size"]

#: Integers on the wire are 32-bit; the encoder accepts both the signed and the
#: unsigned reading of those 32 bits, as Klipper's host does.
VLQ_MIN = -(1 << 31)
VLQ_MAX = (1 << 32) - 1

_U32 = 0xFFFFFFFF
_VLQ_MAX_BYTES = 5

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


def append_vlq(out: bytearray, value: int, mcu_form: bool = False) -> None:
    """Append `value` to `out` in VLQ form (see `encode_vlq` for `mcu_form`).

    The building block of message encoding: appending in place spares the codec a
    bytes object per parameter.
    """
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
    append_vlq(out, value, mcu_form)
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


def append_string(out: bytearray, data: bytes) -> None:
    """Append a byte string as Klipper sends it: one raw length byte, then the bytes.

    The length is a raw byte, not a VLQ; below 96 the two are the same anyway. Callers
    bound the length by what fits in a block, far below the byte's 255.
    """
    if len(data) > 0xFF:
        raise ProtocolError(f"byte string of {len(data)} bytes is longer than 255")
    out.append(len(data))
    out += data


def decode_string(data: bytes | bytearray | memoryview, pos: int,
                  what: str) -> tuple[bytes, int]:
    """Read one length-prefixed byte string at `pos`; return `(bytes, position after it)`.

    `what` names the message being read, for the error when the string is cut short.
    """
    if pos >= len(data):
        raise ProtocolError(f"{what}: truncated string length")
    length = data[pos]
    end = pos + 1 + length
    if end > len(data):
        raise ProtocolError(f"{what}: string runs past end of block")
    return bytes(data[pos + 1:end]), end
