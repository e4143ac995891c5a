"""Blocks: how messages are framed on the serial line and cut out of it again.

A block is `<length><0x10|seq><messages...><crc16 hi><crc16 lo><0x7e>`, at most 64
bytes, so at most 59 bytes of messages per block. This layer knows nothing of what
the messages mean; it only has to agree with the firmware's receive code on the
sizes, the sequence byte, the CRC and how to resynchronise after line noise.
"""

from __future__ import annotations

import binascii

from printhost.mcu.errors import ProtocolError

__all__ = ["BlockParser", "MESSAGE_DEST", "MESSAGE_HEADER_SIZE", "MESSAGE_MAX",
           "MESSAGE_MIN", "MESSAGE_PAYLOAD_MAX", "MESSAGE_SEQ_MASK", "MESSAGE_SYNC",
           "MESSAGE_TRAILER_SIZE", "crc16_ccitt", "encode_block"]

# --- Block framing constants (fixed by the firmware) ----------------------------------

MESSAGE_MIN = 5  # an empty block: length, sequence, two CRC bytes, sync
MESSAGE_MAX = 64  # the firmware's receive code never accepts a longer block
MESSAGE_HEADER_SIZE = 2
MESSAGE_TRAILER_SIZE = 3
MESSAGE_PAYLOAD_MAX = MESSAGE_MAX - MESSAGE_MIN  # 59 bytes of messages per block
MESSAGE_SEQ_MASK = 0x0F
MESSAGE_DEST = 0x10  # the high nibble of every sequence byte; the rest is reserved
MESSAGE_SYNC = 0x7E


# --- CRC -------------------------------------------------------------------------------


# Klipper's "CCITT" CRC is the bit-reflected form of polynomial 0x1021 starting from
# 0xffff with no final xor (catalogued as CRC-16/MCRF4XX). The standard library computes
# the unreflected form in C (`binascii.crc_hqx`, CRC-16/XMODEM with a given start); for a
# reflected CRC without a final xor, reflecting every input byte and the result gives
# the same value, which is ten times faster than a per-byte table loop in Python (a
# block is checked once when sent and once when received).
_REFLECT = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc16_ccitt(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit checksum Klipper puts in every block trailer (high byte first)."""
    crc = binascii.crc_hqx(bytes(data).translate(_REFLECT), 0xFFFF)
    return (_REFLECT[crc & 0xFF] << 8) | _REFLECT[crc >> 8]


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
