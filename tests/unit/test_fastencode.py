"""The compiled array encoder against the Python codec, which defines the wire format.

Every test here compares bytes with `MessageCodec.encode` / `MessageStream`: the
compiled path is only correct if it is indistinguishable from them.
"""

from __future__ import annotations

import numpy as np
import pytest

from printhost.batch import run_batch
from printhost.mcu.stepencode import encode_step_commands
from printhost.config import load_settings
from printhost.control.stepstream import QUEUE_STEP, SET_NEXT_STEP_DIR, StepCommands
from printhost.mcu.fastencode import (MAX_PARAMS, encode_messages, frame_complete_blocks,
                                      frame_messages,
                                      message_params, pack_encoded)
from printhost.mcu.protocol import (MESSAGE_PAYLOAD_MAX, DataDictionary, MessageCodec,
                                    MessageStream, ProtocolError, encode_vlq,
                                    msgid_for_index)
from printhost.mcu.sim_dictionary import sim_dictionary

QUEUE_STEP_FMT = "queue_step oid=%c interval=%u count=%hu add=%hi"
SET_DIR_FMT = "set_next_step_dir oid=%c dir=%c"

# Both sides of every VLQ size boundary (-32..95, -4096..12287, ...) and the 32-bit ends.
VLQ_EDGES = sorted({v for n in range(1, 5) for b in (1 << (7 * n - 2),)
                    for v in (-b - 1, -b, -b + 1, 3 * b - 1, 3 * b)}
                   | {-(1 << 31), -(1 << 31) + 1, -1, 0, 1, (1 << 31) - 1, 1 << 31,
                      (1 << 32) - 2, (1 << 32) - 1})


@pytest.fixture(scope="module")
def codec() -> MessageCodec:
    return MessageCodec(DataDictionary(sim_dictionary()))


def _random_commands(rng: np.random.Generator, n: int) -> StepCommands:
    """A random mix of step commands, a fair share of them at the types' extremes."""
    def pick(low, high, edges, size):
        values = rng.integers(low, high, size=size, endpoint=True, dtype=np.int64)
        at_edge = rng.random(size) < 0.2
        values[at_edge] = rng.choice(np.array(edges, dtype=np.int64), size=int(at_edge.sum()))
        return values

    kind = np.where(rng.random(n) < 0.3, SET_NEXT_STEP_DIR, QUEUE_STEP).astype(np.int8)
    q = kind == QUEUE_STEP
    u32_edges = [v for v in VLQ_EDGES if 0 <= v < 1 << 32]
    return StepCommands(
        clock=np.sort(rng.integers(0, 1 << 40, size=n)),
        kind=kind,
        oid=pick(0, 255, [0, 95, 96, 127, 128, 255], n),
        interval=np.where(q, pick(0, (1 << 32) - 1, u32_edges, n), 0).astype(np.uint32),
        count=np.where(q, pick(1, 0xFFFF, [1, 95, 96, 12287, 12288, 0xFFFF], n),
                       0).astype(np.uint16),
        add=np.where(q, pick(-0x8000, 0x7FFF, [-0x8000, -4097, -4096, -33, -32, -1, 0,
                                                95, 96, 0x7FFF], n), 0).astype(np.int16),
        dir=np.where(q, 0, rng.integers(0, 1, size=n, endpoint=True)).astype(np.int8))


def _python_encode(codec: MessageCodec, cmds: StepCommands) -> list[bytes]:
    return [codec.encode(name, **params) for name, params in cmds.messages()]


# --------------------------------------------------------------------------- encoding

def test_every_vlq_size_boundary_matches_encode_vlq(codec):
    # allocate_oids has one %c parameter; the encoder itself checks 32-bit range only,
    # so each edge value can be encoded through one row with any message id.
    msgid = codec.dictionary.lookup("allocate_oids").msgid
    values = np.array(VLQ_EDGES, dtype=np.int64)
    enc = encode_messages(np.full(len(values), msgid), np.ones(len(values), np.int64),
                          values.reshape(-1, 1))
    expected = [encode_vlq(msgid) + encode_vlq(int(v)) for v in values]
    assert enc.data.tobytes() == b"".join(expected)
    assert enc.lengths.tolist() == [len(e) for e in expected]


@pytest.mark.parametrize("value", [-(1 << 31) - 1, 1 << 32, -(1 << 40)])
def test_values_beyond_32_bits_are_refused_like_encode_vlq(value):
    with pytest.raises(ProtocolError):
        encode_vlq(value)
    with pytest.raises(ProtocolError, match="message 1"):
        encode_messages(np.array([5, 5]), np.array([1, 1]), np.array([[1], [value]]))
    with pytest.raises(ProtocolError, match="message 0"):
        encode_messages(np.array([value]), np.array([0]), np.zeros((1, 0)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_step_command_mix_is_byte_identical(codec, seed):
    rng = np.random.default_rng(seed)
    cmds = _random_commands(rng, 5000)
    expected = _python_encode(codec, cmds)
    enc = encode_step_commands(codec.dictionary, cmds)
    assert enc.data.tobytes() == b"".join(expected)
    assert enc.lengths.tolist() == [len(e) for e in expected]
    seq = int(rng.integers(0, 1000))
    stream = MessageStream(codec, seq=seq)
    assert frame_messages(enc.data, enc.lengths, seq) == (stream.pack(expected),
                                                          stream.next_seq)


def test_generic_rows_with_unused_columns_and_both_message_kinds(codec):
    d = codec.dictionary
    qs, sd = d.lookup("queue_step"), d.lookup("set_next_step_dir")
    q = message_params(qs, {"add": np.array([-1, 7]), "oid": np.array([3, 200]),
                            "count": np.array([2, 40000]),
                            "interval": np.array([0xFFFFFFFF, 96])})
    s = message_params(sd, {"dir": np.array([1]), "oid": np.array([9])})
    assert q.shape == (2, MAX_PARAMS) and s[0].tolist() == [9, 1, 0, 0]
    # Garbage in columns past a row's parameter count must not reach the output.
    s[0, 2:] = 1 << 40
    enc = encode_messages([sd.msgid, qs.msgid, qs.msgid], [2, 4, 4], np.vstack([s, q]))
    assert enc.data.tobytes() == (
        codec.encode("set_next_step_dir", oid=9, dir=1)
        + codec.encode("queue_step", oid=3, interval=0xFFFFFFFF, count=2, add=-1)
        + codec.encode("queue_step", oid=200, interval=96, count=40000, add=7))


def test_ids_and_parameter_order_come_from_the_dictionary():
    # A build numbering these messages past 95 (ids the VLQ reads as negative, and a
    # two-byte id) and declaring queue_step's parameters in another order.
    fmt = "queue_step count=%hu add=%hi oid=%c interval=%u"
    d = DataDictionary({"commands": {fmt: msgid_for_index(300),
                                     SET_DIR_FMT: msgid_for_index(100)}})
    assert d.lookup("set_next_step_dir").msgid < 0
    codec = MessageCodec(d)
    cmds = _random_commands(np.random.default_rng(7), 2000)
    enc = encode_step_commands(d, cmds)
    assert enc.data.tobytes() == b"".join(_python_encode(codec, cmds))
    default = encode_step_commands(DataDictionary(sim_dictionary()), cmds)
    assert enc.data.tobytes() != default.data.tobytes()


@pytest.mark.parametrize("params", [
    {"oid": 256, "interval": 1, "count": 1, "add": 0},
    {"oid": 1, "interval": 1, "count": 0x10000, "add": 0},
    {"oid": 1, "interval": 1, "count": 1, "add": 0x8000},
    {"oid": 1, "interval": 1, "count": 1, "add": -0x8001},
    {"oid": 1, "interval": 1 << 32, "count": 1, "add": 0},
])
def test_out_of_range_values_are_refused_as_by_the_codec(codec, params):
    with pytest.raises(ProtocolError, match="out of range"):
        codec.encode("queue_step", **params)
    message = codec.dictionary.lookup("queue_step")
    with pytest.raises(ProtocolError, match="out of range"):
        message_params(message, {k: np.array([0, v]) for k, v in params.items()})


def test_values_the_codec_accepts_below_zero_encode_alike(codec):
    # Unsigned fields take the negative reading of the same bits, as in Klipper.
    message = codec.dictionary.lookup("queue_step")
    rows = message_params(message, {"oid": np.array([-128, -1]),
                                    "interval": np.array([-(1 << 31), -1]),
                                    "count": np.array([-0x8000, 5]), "add": np.array([0, 0])})
    enc = encode_messages(np.full(2, message.msgid), np.full(2, 4), rows)
    assert enc.data.tobytes() == (
        codec.encode("queue_step", oid=-128, interval=-(1 << 31), count=-0x8000, add=0)
        + codec.encode("queue_step", oid=-1, interval=-1, count=5, add=0))


def test_message_params_refuses_what_it_cannot_encode(codec):
    d = codec.dictionary
    qs = d.lookup("queue_step")
    good = {"oid": np.array([1]), "interval": np.array([2]), "count": np.array([3]),
            "add": np.array([4])}
    with pytest.raises(ProtocolError, match="missing parameter"):
        message_params(qs, {k: v for k, v in good.items() if k != "add"})
    with pytest.raises(ProtocolError, match="unknown parameter"):
        message_params(qs, {**good, "clock": np.array([0])})
    with pytest.raises(ProtocolError, match="must be integers"):
        message_params(qs, {**good, "interval": np.array([2.0])})
    with pytest.raises(ValueError, match="1-D array of 1"):
        message_params(qs, {**good, "count": np.array([3, 3])})
    with pytest.raises(ProtocolError, match="not a plain integer"):
        message_params(d.lookup("debug_ping"), {"data": np.array([1])})
    endstop = d.lookup("config_endstop")  # pin=%c takes the names of the pin enumeration
    with pytest.raises(ProtocolError, match="not a plain integer"):
        message_params(endstop, {k: np.array([0]) for k in endstop.param_names})
    stepper = d.lookup("config_stepper")
    with pytest.raises(ProtocolError, match="more than 4"):
        message_params(stepper, {k: np.array([0]) for k in stepper.param_names})
    assert message_params(d.lookup("get_clock"), {}, rows=3).shape == (3, MAX_PARAMS)


# --------------------------------------------------------------------------- framing

@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_framing_matches_message_stream(codec, seed):
    rng = np.random.default_rng(seed)
    # Lengths across the whole range, biased to the large ones that force boundaries.
    lengths = np.where(rng.random(3000) < 0.5, rng.integers(1, 12, 3000),
                       rng.integers(1, MESSAGE_PAYLOAD_MAX, 3000, endpoint=True))
    data = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    messages = [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(lengths))]
    seq = int(rng.integers(0, 1 << 20))
    stream = MessageStream(codec, seq=seq)
    blocks = stream.pack(messages)
    assert frame_messages(data, lengths, seq) == (blocks, stream.next_seq)
    assert frame_messages(data.tobytes(), lengths, seq)[0] == blocks


@pytest.mark.parametrize("seed", [15, 16])
def test_framing_in_pieces_gives_the_bytes_of_framing_at_once(seed):
    # Output written as it is made (printhost batch): every full block at once, the
    # last one's messages carried into the next piece, the rest framed at the end.
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(2000) < 0.7, rng.integers(1, 12, 2000),
                       rng.integers(1, MESSAGE_PAYLOAD_MAX, 2000, endpoint=True))
    data = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    whole = frame_messages(data, lengths, 5)
    cuts = np.sort(rng.choice(np.arange(1, 2000), 40, replace=False))
    out, seq = b"", 5
    carry_from = 0
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [2000]])):
        piece_lengths = lengths[carry_from:hi]
        blocks, seq, framed = frame_complete_blocks(
            data[offsets[carry_from]:offsets[hi]], piece_lengths, seq)
        assert 0 <= framed < len(piece_lengths)   # the last block always waits
        out += blocks
        carry_from += framed
    blocks, seq = frame_messages(data[offsets[carry_from]:], lengths[carry_from:], seq)
    assert (out + blocks, seq) == whole
    assert frame_complete_blocks(np.zeros(0, np.uint8), np.zeros(0, np.int64), 9) == (b"", 9, 0)


def test_exactly_full_blocks_and_one_byte_over(codec):
    sizes = [59, 30, 29, 30, 30, 1, 58, 1, 1]
    messages = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    stream = MessageStream(codec)
    blocks = stream.pack(messages)
    framed, next_seq = frame_messages(b"".join(messages), np.array(sizes))
    assert (framed, next_seq) == (blocks, stream.next_seq) and next_seq == 6


def test_framing_nothing_gives_nothing_and_keeps_the_sequence():
    assert frame_messages(np.zeros(0, np.uint8), np.zeros(0, np.int64), 17) == (b"", 17)


def test_framing_refuses_bad_lengths():
    with pytest.raises(ProtocolError, match="empty message"):
        frame_messages(b"ab", np.array([2, 0]))
    with pytest.raises(ProtocolError, match="does not fit"):
        frame_messages(bytes(60), np.array([60]))
    with pytest.raises(ValueError, match="add up"):
        frame_messages(b"abc", np.array([2]))
    with pytest.raises(ProtocolError):
        pack_encoded([b"a", b""])
    with pytest.raises(ProtocolError):
        pack_encoded([bytes(60)])


def test_python_encoded_and_array_encoded_messages_share_blocks(codec):
    config = [codec.encode_text("allocate_oids count=4"),
              codec.encode("finalize_config", crc=0xDEADBEEF)]
    cmds = _random_commands(np.random.default_rng(5), 50)
    steps = encode_step_commands(codec.dictionary, cmds)
    head = pack_encoded(config)
    data = np.concatenate([head.data, steps.data])
    lengths = np.concatenate([head.lengths, steps.lengths])
    stream = MessageStream(codec)
    assert frame_messages(data, lengths)[0] == stream.pack(config + _python_encode(codec, cmds))


# --------------------------------------------------------------------------- whole job

def test_cube_job_output_is_what_the_python_codec_writes(codec, tmp_path):
    """The batch output decodes, and the Python codec re-encodes it to the same bytes."""
    settings = load_settings("config/printhost.toml")
    out = tmp_path / "cube.out"
    result = run_batch(settings, "tests/data/cube.gcode", out)
    data = out.read_bytes()
    messages = MessageStream(codec).decode_stream(data)
    assert len(messages) == result.messages > 100_000
    names = [name for name, _ in messages]
    assert names.count("queue_step") == sum(s["queue_step"] for s in result.steppers.values())
    stream = MessageStream(codec)
    assert stream.pack(codec.encode(name, **params) for name, params in messages) == data
