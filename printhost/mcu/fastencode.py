"""Compiled encoding and framing of many small, fixed-shape messages at once.

A print sends the MCU well over a hundred thousand `queue_step` and
`set_next_step_dir` commands per hour of motion. `MessageCodec.encode` handles any
message of any dictionary, but it pays Python's per-call cost for every parameter
of every message, which made encoding the largest single cost of `printhost batch`.
Step commands, however, are all of one simple shape: a message id followed by a
handful of integers. This module takes such messages as arrays (one row per message)
and turns them into wire bytes in compiled loops.

`protocol` stays the definition of the wire format; these kernels reproduce it byte
for byte (the host form of the VLQ, `MessageStream`'s greedy block filling, its
sequence numbering and CRC), and the tests hold them to it. Nothing here knows
message names or ids: `message_params` reads the parameter order and types from the
data dictionary's `MessageFormat`, so a firmware build that numbers or orders things
differently is encoded correctly, and out-of-range values are refused as the Python
codec refuses them.

The pieces, in the order a sender uses them:

* `message_params`: named integer columns -> the (n, MAX_PARAMS) parameter array of
  one message kind, checked against the declared types;
* `encode_messages`: ids, parameter counts and parameters -> concatenated message
  bytes plus each message's length;
* `pack_encoded`: already-encoded messages (e.g. from `MessageCodec`) -> the same
  two arrays, so they can share blocks with compiled output;
* `frame_messages`: bytes and lengths -> message blocks and the next sequence number;
  `frame_complete_blocks` the same for output written as it is made (the last block
  waits for the messages that may still join it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numba
import numpy as np

from printhost.mcu.dictionary import MessageFormat
from printhost.mcu.errors import ProtocolError
from printhost.mcu.framing import (MESSAGE_DEST, MESSAGE_MIN, MESSAGE_PAYLOAD_MAX,
                                   MESSAGE_SEQ_MASK, MESSAGE_SYNC)
from printhost.mcu.vlq import VLQ_MAX, VLQ_MIN

__all__ = ["EncodedMessages", "MAX_PARAMS", "encode_messages", "frame_complete_blocks",
           "frame_messages", "message_params", "pack_encoded"]

#: Widest message these kernels take: queue_step has four parameters. Enough for every
#: fixed-shape integer command; anything wider goes through `MessageCodec`.
MAX_PARAMS = 4


class EncodedMessages(NamedTuple):
    """Messages back to back (`data`) and the byte length of each, in order."""

    data: np.ndarray     # uint8
    lengths: np.ndarray  # int64, each 1..MESSAGE_PAYLOAD_MAX

    @property
    def count(self) -> int:
        return int(self.lengths.shape[0])


# --- kernels ---------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _vlq_size(value):
    # The host form sizes by the value as given (see vlq.append_vlq): n bytes
    # hold [-(1 << (7n - 2)), 3 << (7n - 2)) for n = 1..4, anything else takes five.
    for n in range(1, 5):
        bound = np.int64(1) << (7 * n - 2)
        if -bound <= value < 3 * bound:
            return n
    return 5


@numba.njit(cache=True, nogil=True)
def _put_vlq(out, pos, value):
    size = _vlq_size(value)
    for k in range(size - 1, 0, -1):
        # Arithmetic shift of the int64, as Python's >> on a negative int.
        out[pos] = ((value >> (7 * k)) & 0x7F) | 0x80
        pos += 1
    out[pos] = value & 0x7F
    return pos + 1


@numba.njit(cache=True, nogil=True)
def _encode_kernel(msgids, nparams, params, vlq_min, vlq_max):
    """Encode every row; returns (bytes, lengths, -1) or (empty, empty, bad row)."""
    n = msgids.shape[0]
    lengths = np.empty(n, np.int64)
    total = 0
    for i in range(n):
        v = msgids[i]
        if v < vlq_min or v > vlq_max:
            return np.empty(0, np.uint8), np.empty(0, np.int64), i
        size = _vlq_size(v)
        for j in range(nparams[i]):
            v = params[i, j]
            if v < vlq_min or v > vlq_max:
                return np.empty(0, np.uint8), np.empty(0, np.int64), i
            size += _vlq_size(v)
        lengths[i] = size
        total += size
    out = np.empty(total, np.uint8)
    pos = 0
    for i in range(n):
        pos = _put_vlq(out, pos, msgids[i])
        for j in range(nparams[i]):
            pos = _put_vlq(out, pos, params[i, j])
    return out, lengths, np.int64(-1)


@numba.njit(cache=True, nogil=True)
def _crc_table():
    # CRC-16/MCRF4XX, reflected polynomial 0x8408: the same table framing builds.
    table = np.empty(256, np.int64)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x8408
            else:
                crc >>= 1
        table[byte] = crc
    return table


@numba.njit(cache=True, nogil=True)
def _frame_kernel(data, lengths, seq, payload_max, header_dest, seq_mask, sync, block_min,
                  hold_last):
    """Greedy blocks over whole messages, as MessageStream._payloads cuts them.

    With `hold_last` the last block is left out (messages that follow could still join
    it); returns (blocks, next sequence number, index of the first message not framed)."""
    n = lengths.shape[0]
    # First pass: where each block starts (in messages), to size the output exactly.
    starts = np.empty(n + 1, np.int64)
    nblocks = 0
    fill = 0
    for i in range(n):
        if nblocks == 0 or fill + lengths[i] > payload_max:
            starts[nblocks] = i
            nblocks += 1
            fill = 0
        fill += lengths[i]
    starts[nblocks] = n
    framed = n
    if hold_last and nblocks > 0:
        nblocks -= 1
        framed = starts[nblocks]
    nbytes = 0
    for i in range(framed):
        nbytes += lengths[i]
    out = np.empty(nbytes + nblocks * block_min, np.uint8)
    table = _crc_table()
    src = 0
    pos = 0
    for b in range(nblocks):
        size = 0
        for i in range(starts[b], starts[b + 1]):
            size += lengths[i]
        begin = pos
        out[pos] = size + block_min
        out[pos + 1] = header_dest | ((seq + b) & seq_mask)
        pos += 2
        for k in range(size):
            out[pos + k] = data[src + k]
        pos += size
        src += size
        crc = 0xFFFF
        for k in range(begin, pos):
            crc = (crc >> 8) ^ table[(crc ^ out[k]) & 0xFF]
        out[pos] = crc >> 8
        out[pos + 1] = crc & 0xFF
        out[pos + 2] = sync
        pos += 3
    return out, seq + nblocks, framed


# --- wrappers --------------------------------------------------------------------------


def encode_messages(msgids: np.ndarray, nparams: np.ndarray,
                    params: np.ndarray) -> EncodedMessages:
    """Encode one message per row: `msgids[i]` then `params[i, :nparams[i]]` as VLQs.

    Integers use the host's VLQ form (`encode_vlq` without `mcu_form`), so the bytes
    equal `MessageCodec.encode` for the same values. Values must fit the wire's 32
    bits (signed or unsigned reading, as there); per-field ranges are the business of
    `message_params`, which builds `params` from the dictionary's declared types.
    """
    ids = np.ascontiguousarray(msgids, dtype=np.int64)
    counts = np.ascontiguousarray(nparams, dtype=np.int64)
    values = np.ascontiguousarray(params, dtype=np.int64)
    if ids.ndim != 1 or counts.shape != ids.shape:
        raise ValueError("msgids and nparams must be 1-D arrays of the same length")
    if values.ndim != 2 or values.shape[0] != ids.shape[0] or values.shape[1] > MAX_PARAMS:
        raise ValueError(f"params must be an (n, k) array with k <= {MAX_PARAMS}, one row "
                         "per message")
    if len(counts) and (counts.min() < 0 or counts.max() > values.shape[1]):
        raise ValueError(f"parameter counts must lie in 0..{values.shape[1]}")
    data, lengths, bad = _encode_kernel(ids, counts, values, VLQ_MIN, VLQ_MAX)
    if bad >= 0:
        row = [int(ids[bad]), *(int(v) for v in values[bad, :counts[bad]])]
        raise ProtocolError(f"message {bad}: {row} has a value that does not fit in 32 bits")
    return EncodedMessages(data, lengths)


def message_params(message: MessageFormat, values: Mapping[str, np.ndarray], *,
                   rows: int | None = None) -> np.ndarray:
    """The (n, MAX_PARAMS) parameter rows of `message` from one array per parameter name.

    Columns follow the order the dictionary declares, whatever order `values` lists
    them in; columns past the message's parameters are zero. `rows` is only needed
    for a message without parameters, where no column says how many there are. The
    same checks as
    `MessageCodec.encode` apply: every parameter given and no others, integers only,
    each within its conversion's range (e.g. -128..255 for %c). Messages with byte
    strings or enumerated parameters are refused: they need the Python codec.
    """
    if len(message.params) > MAX_PARAMS:
        raise ProtocolError(f"{message.name}: {len(message.params)} parameters, more than "
                            f"{MAX_PARAMS}")
    names = message.param_names
    missing = [name for name in names if name not in values]
    if missing:
        raise ProtocolError(f"{message.name}: missing parameter(s) {', '.join(missing)}")
    extra = sorted(set(values) - set(names))
    if extra:
        raise ProtocolError(f"{message.name}: unknown parameter(s) {', '.join(extra)}")
    columns = [np.asarray(values[name]) for name in names]
    if rows is None:
        if not columns:
            raise ValueError(f"{message.name} has no parameters: pass rows")
        rows = columns[0].shape[0] if columns[0].ndim == 1 else 0
    out = np.zeros((rows, MAX_PARAMS), dtype=np.int64)
    for j, (param, column) in enumerate(zip(message.params, columns)):
        where = f"{message.name}: {param.name}"
        ptype = param.type
        if not ptype.is_int or param.enumeration is not None:
            raise ProtocolError(f"{where} ({ptype.code}) is not a plain integer parameter")
        if column.ndim != 1 or len(column) != rows:
            raise ValueError(f"{where}: expected a 1-D array of {rows} values")
        if column.dtype.kind not in "iub":
            raise ProtocolError(f"{where} must be integers ({ptype.code}), got "
                                f"{column.dtype}")
        if rows:
            low, high = int(column.min()), int(column.max())
            if low < ptype.min_value or high > ptype.max_value:
                bad = low if low < ptype.min_value else high
                raise ProtocolError(f"{where}={bad} out of range for {ptype.code} "
                                    f"({ptype.min_value}..{ptype.max_value})")
        out[:, j] = column
    return out


def pack_encoded(messages: Iterable[bytes]) -> EncodedMessages:
    """Already-encoded messages as the arrays `frame_messages` takes.

    Each must be non-empty and fit in one block, as `MessageStream.queue_encoded`
    requires.
    """
    parts = [bytes(m) for m in messages]
    for m in parts:
        if not m:
            raise ProtocolError("empty message")
        if len(m) > MESSAGE_PAYLOAD_MAX:
            raise ProtocolError(f"message of {len(m)} bytes does not fit in a block")
    data = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
    return EncodedMessages(data, np.array([len(m) for m in parts], dtype=np.int64))


def frame_messages(data: np.ndarray | bytes, lengths: np.ndarray,
                   seq: int = 0) -> tuple[bytes, int]:
    """Pack whole messages into blocks; returns the blocks and the next sequence number.

    `data` holds the messages back to back and `lengths` their sizes. Blocks are filled
    greedily in order and numbered from `seq` exactly as `MessageStream.flush()` does
    for the same messages queued on a stream whose `next_seq` is `seq`, so the result is
    byte-identical to it (and empty, with `seq` unchanged, when there are no messages).
    """
    out, next_seq, _ = _frame(data, lengths, seq, False)
    return out, next_seq


def frame_complete_blocks(data: np.ndarray | bytes, lengths: np.ndarray,
                          seq: int = 0) -> tuple[bytes, int, int]:
    """`frame_messages` for a stream written as it is made: every block but the last,
    which messages still to come could join; returns (blocks, next sequence number,
    how many of the messages were framed). Framing the rest with the next messages,
    and `frame_messages` at the end, gives the bytes of framing everything at once."""
    return _frame(data, lengths, seq, True)


def _frame(data: np.ndarray | bytes, lengths: np.ndarray, seq: int,
           hold_last: bool) -> tuple[bytes, int, int]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        # A writable copy: numba would compile a second variant for read-only buffers.
        raw = np.frombuffer(data, dtype=np.uint8).copy()
    else:
        raw = np.ascontiguousarray(data, dtype=np.uint8)
    sizes = np.ascontiguousarray(lengths, dtype=np.int64)
    if raw.ndim != 1 or sizes.ndim != 1:
        raise ValueError("data and lengths must be 1-D arrays")
    if int(sizes.sum()) != raw.shape[0]:
        raise ValueError(f"message lengths add up to {int(sizes.sum())} bytes, data has "
                         f"{raw.shape[0]}")
    if len(sizes):
        if sizes.min() <= 0:
            raise ProtocolError("empty message")
        if sizes.max() > MESSAGE_PAYLOAD_MAX:
            raise ProtocolError(f"message of {int(sizes.max())} bytes does not fit in a block")
    seq = int(seq)
    if seq < 0:
        raise ValueError(f"sequence number must be >= 0, got {seq}")
    out, next_seq, framed = _frame_kernel(raw, sizes, seq, MESSAGE_PAYLOAD_MAX, MESSAGE_DEST,
                                          MESSAGE_SEQ_MASK, MESSAGE_SYNC, MESSAGE_MIN,
                                          hold_last)
    return out.tobytes(), int(next_seq), int(framed)


def warm_up() -> None:
    """Compile (or load from the cache) both kernels, so the first real batch does not."""
    encoded = encode_messages(np.array([5]), np.array([2]), np.array([[1, -1]]))
    frame_messages(encoded.data, encoded.lengths)
