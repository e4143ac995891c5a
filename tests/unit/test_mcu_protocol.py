"""Klipper's wire protocol must come out byte for byte, or stock firmware will not talk to us.

Expected bytes here are worked out by hand from the encoding rules (and the working is
shown), CRCs are checked against an independent bit-by-bit implementation and the
published check value, and the sim dictionary's messages are round-tripped with random
values drawn from a seeded generator so failures are reproducible.
"""

from __future__ import annotations

import json
import random
import zlib

import pytest

from printhost.mcu.protocol import (
    BOOTSTRAP_MESSAGES,
    MESSAGE_MAX,
    MESSAGE_PAYLOAD_MAX,
    MESSAGE_SYNC,
    BlockParser,
    DataDictionary,
    MessageCodec,
    MessageStream,
    ProtocolError,
    UnknownMessageError,
    crc16_ccitt,
    decode_vlq,
    encode_block,
    encode_vlq,
    expand_enumerations,
    msgid_for_index,
    parse_format,
    parse_output_format,
    vlq_size,
)
from printhost.mcu.sim_dictionary import (
    SIM_CLOCK_FREQ,
    SIM_COMMANDS,
    SIM_RESPONSES,
    SIM_SHUTDOWN_REASONS,
    sim_dictionary,
    sim_dictionary_bytes,
    sim_dictionary_json,
)

U32 = 1 << 32


@pytest.fixture(scope="module")
def dictionary() -> DataDictionary:
    return DataDictionary(sim_dictionary())


@pytest.fixture(scope="module")
def codec(dictionary: DataDictionary) -> MessageCodec:
    return MessageCodec(dictionary)


# --- VLQ -------------------------------------------------------------------------------

# Each byte carries 7 bits, most significant group first, 0x80 on all but the last.
# Bits 5 and 6 of the first byte both set mark a negative number.
KNOWN_HOST_ENCODINGS = [
    (0, "00"),
    (1, "01"),
    (95, "5f"),  # largest one-byte value: 0x5f has bit 6 set but not bit 5
    (96, "8060"),  # 0x60 alone would read as negative, so 96 needs a leading 0x80
    (-32, "60"),  # -32 & 0x7f = 0x60: both sign bits set, low bits 0
    (-33, "ff5f"),  # (-33 >> 7) & 0x7f = 0x7f -> 0xff, then -33 & 0x7f = 0x5f
    (12287, "df7f"),  # 0x2fff: 0x5f | 0x80, 0x7f
    (12288, "80e000"),  # 0x3000: groups 0x00 0x60 0x00; a bare 0xe0 would read negative
    (-4096, "e000"),  # (-4096 >> 7) & 0x7f = 0x60 -> 0xe0, then 0x00
    (-4097, "ff df 7f"),
    (0x7FFFFFFF, "87ffffff7f"),  # 0x07 | 0x80, three 0xff groups, 0x7f
    (0xFFFFFFFF, "8fffffff7f"),  # the host sizes the value as given: five bytes
    (-(1 << 31), "f880808000"),  # (-2**31 >> 28) & 0x7f = 0x78 -> 0xf8
]


@pytest.mark.parametrize("value,expected", KNOWN_HOST_ENCODINGS)
def test_vlq_known_host_encodings(value: int, expected: str) -> None:
    assert encode_vlq(value) == bytes.fromhex(expected)
    signed = value < (1 << 31)
    decoded, end = decode_vlq(bytes.fromhex(expected), signed=signed)
    assert (decoded, end) == (value, len(bytes.fromhex(expected)))


@pytest.mark.parametrize("value,expected", [
    (0xFFFFFFFF, "7f"),  # the firmware sizes by the int32 reading: -1
    (-1, "7f"),
    (-(1 << 31), "8880808000"),  # uint32 0x80000000 >> 28 = 0x08 -> 0x88
    (0x80000000, "8880808000"),
    (0xFFFFFFE0, "60"),  # -32
    (0xFFFFFFDF, "ff5f"),  # -33
    (95, "5f"),
    (0x7FFFFFFF, "87ffffff7f"),
])
def test_vlq_known_mcu_encodings(value: int, expected: str) -> None:
    assert encode_vlq(value, mcu_form=True) == bytes.fromhex(expected)


def test_vlq_sizes_match_protocol_table() -> None:
    # Protocol.md: -32..95 one byte, -4096..12287 two, -524288..1572863 three,
    # -67108864..201326591 four, everything else five.
    table = [(-32, 95, 1), (-4096, 12287, 2), (-524288, 1572863, 3),
             (-67108864, 201326591, 4), (-(1 << 31), U32 - 1, 5)]
    for low, high, size in table:
        assert vlq_size(low) == size and vlq_size(high) == size
        assert len(encode_vlq(low)) == size and len(encode_vlq(high)) == size
        if size < 5:
            assert vlq_size(low - 1) == size + 1
            assert vlq_size(high + 1) == size + 1


def test_vlq_round_trip_random_values() -> None:
    rng = random.Random(20240601)
    edges = [b + d for b in (0, 95, 12287, 1572863, 201326591, 1 << 31, -32, -4096,
                              -524288, -67108864) for d in (-1, 0, 1)]
    values = edges + [rng.randrange(-(1 << 31), U32) for _ in range(20000)]
    # Also plenty of small magnitudes, where the short forms live.
    values += [rng.randrange(-(1 << k), 1 << k) for k in range(1, 32) for _ in range(200)]
    for value in values:
        if not -(1 << 31) <= value < U32:
            continue
        host = encode_vlq(value)
        mcu = encode_vlq(value, mcu_form=True)
        assert len(host) == vlq_size(value)
        int32 = value - U32 if value >= 1 << 31 else value
        assert len(mcu) == vlq_size(int32) <= len(host)
        for data in (host, mcu):
            assert decode_vlq(data, signed=False) == (value % U32, len(data))
            assert decode_vlq(data, signed=True) == (int32, len(data))
        # Decoding must stop at the end of the integer, whatever follows.
        assert decode_vlq(host + b"\xff\x00", signed=False) == (value % U32, len(host))


@pytest.mark.parametrize("value", [U32, -(1 << 31) - 1, 1 << 40])
def test_vlq_rejects_values_beyond_32_bits(value: int) -> None:
    with pytest.raises(ProtocolError):
        encode_vlq(value)


@pytest.mark.parametrize("data", ["", "80", "ffff", "8080808080", "808080808000"])
def test_vlq_rejects_truncated_or_overlong_input(data: str) -> None:
    with pytest.raises(ProtocolError):
        decode_vlq(bytes.fromhex(data))


def test_msgid_for_index_gives_the_vlq_reading_of_the_build_numbering() -> None:
    assert [msgid_for_index(i) for i in (0, 1, 95)] == [0, 1, 95]
    assert msgid_for_index(96) == -32  # byte 0x60 reads as negative
    assert msgid_for_index(127) == -1
    assert msgid_for_index(128) == 128  # bytes 0x81 0x00
    assert msgid_for_index(0x3000) == -4096  # bytes 0xe0 0x00
    for index in range(0x3FE0):
        raw = bytes((index,)) if index < 0x80 else bytes(((index >> 7) | 0x80, index & 0x7F))
        assert encode_vlq(msgid_for_index(index)) == raw
    # 0x3fe0.. would be bytes ff 60.. which read as -32.., the ids of numbers 96..
    for index in (0x3FE0, 0x3FFF, 1 << 14, -1):
        with pytest.raises(ProtocolError):
            msgid_for_index(index)


# --- CRC -------------------------------------------------------------------------------


def reference_crc(data: bytes) -> int:
    """CRC-16 polynomial 0x1021, init 0xffff, input and output bit-reflected, computed
    MSB-first on bit-reversed bytes - a different route to the same function."""
    def reverse(value: int, bits: int) -> int:
        return int(f"{value:0{bits}b}"[::-1], 2)
    crc = 0xFFFF
    for byte in data:
        crc ^= reverse(byte, 8) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return reverse(crc, 16)


def avr_style_crc(data: bytes) -> int:
    """The nibble-folding update used by small-MCU code (and Klipper)."""
    crc = 0xFFFF
    for byte in data:
        byte ^= crc & 0xFF
        byte ^= (byte << 4) & 0xFF
        crc = ((byte << 8) | (crc >> 8)) ^ (byte >> 4) ^ (byte << 3)
    return crc


def test_crc_check_value_and_references() -> None:
    # 0x6F91 is the catalogued check value of CRC-16/MCRF4XX for "123456789".
    assert crc16_ccitt(b"123456789") == 0x6F91 == reference_crc(b"123456789")
    assert crc16_ccitt(b"") == 0xFFFF
    rng = random.Random(7)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 70)))
        assert crc16_ccitt(data) == reference_crc(data) == avr_style_crc(data)


# --- Blocks ----------------------------------------------------------------------------


def test_block_layout() -> None:
    block = encode_block(0x23, b"\x05\x06")
    crc = reference_crc(bytes((7, 0x13, 5, 6)))
    assert block == bytes((7, 0x13, 5, 6, crc >> 8, crc & 0xFF, 0x7E))
    # The empty block (the firmware's ack/nak) for sequence 0.
    ack_crc = reference_crc(b"\x05\x10")
    assert encode_block(0, b"") == bytes((5, 0x10, ack_crc >> 8, ack_crc & 0xFF, 0x7E))
    assert len(encode_block(15, bytes(MESSAGE_PAYLOAD_MAX))) == MESSAGE_MAX
    with pytest.raises(ProtocolError):
        encode_block(0, bytes(MESSAGE_PAYLOAD_MAX + 1))


def test_parser_round_trip_byte_by_byte() -> None:
    rng = random.Random(11)
    blocks = [(i % 16, bytes(rng.randrange(256) for _ in range(rng.randrange(60))))
              for i in range(200)]
    stream = b"".join(encode_block(seq, payload) for seq, payload in blocks)
    parser = BlockParser()
    got = []
    for byte in stream:
        got += parser.feed(bytes((byte,)))
    assert got == blocks
    assert parser.errors == 0 and parser.pending == 0


def test_parser_holds_a_partial_block_until_complete() -> None:
    block = encode_block(3, b"abc")
    parser = BlockParser()
    assert parser.feed(block[:-1]) == []
    assert parser.pending == len(block) - 1
    assert parser.feed(block[-1:]) == [(3, b"abc")]


def test_parser_resyncs_through_garbage_and_drops_damaged_blocks() -> None:
    rng = random.Random(1234)
    expected = []
    stream = bytearray()
    damaged = 0
    for i in range(600):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        block = bytearray(encode_block(i, payload))
        roll = rng.random()
        if roll < 0.2:
            # Flip one bit of the CRC or content: the block must be dropped.
            block[rng.randrange(2, len(block) - 1)] ^= 1 << rng.randrange(8)
            damaged += 1
        else:
            expected.append((i % 16, payload))
        stream += block
        if rng.random() < 0.2:
            # Line noise between blocks, always ending in a sync byte so the next good
            # block is the first thing after it (noise that swallows a block's start
            # would legitimately cost that block too).
            stream += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
            stream.append(MESSAGE_SYNC)
    parser = BlockParser()
    got = []
    pos = 0
    while pos < len(stream):
        step = rng.randrange(1, 100)
        got += parser.feed(stream[pos:pos + step])
        pos += step
    assert got == expected
    assert parser.errors >= damaged


def test_parser_ignores_leading_sync_bytes_without_counting_errors() -> None:
    parser = BlockParser()
    data = b"\x7e\x7e" + encode_block(1, b"x") + b"\x7e" + encode_block(2, b"y")
    assert parser.feed(data) == [(1, b"x"), (2, b"y")]
    assert parser.errors == 0


@pytest.mark.parametrize("junk", [
    b"\x00",  # length below the 5-byte minimum
    b"\x41",  # length 65, above the 64-byte maximum
    b"\x07\x20",  # sequence byte without the 0x10 marker
    b"\x06\x10\x01\x02\x03\x04",  # right shape, wrong sync byte position
])
def test_parser_rejects_bad_headers(junk: bytes) -> None:
    parser = BlockParser()
    got = parser.feed(junk + b"\x7e" + encode_block(4, b"ok"))
    assert got == [(4, b"ok")]
    assert parser.errors >= 1


# --- Format strings and the dictionary -------------------------------------------------


def test_parse_format() -> None:
    name, params = parse_format("queue_step oid=%c interval=%u count=%hu add=%hi")
    assert name == "queue_step"
    assert [(p, t.code, t.bits, t.signed) for p, t in params] == [
        ("oid", "%c", 8, False), ("interval", "%u", 32, False),
        ("count", "%hu", 16, False), ("add", "%hi", 16, True)]
    assert parse_format("get_clock") == ("get_clock", ())
    _, params = parse_format("x a=%i b=%s c=%.*s d=%*s")
    assert [t.code for _, t in params] == ["%i", "%s", "%.*s", "%*s"]
    assert not any(t.is_int for _, t in params[1:])
    for bad in ("", "x a=%d", "x a", "x =%u", "x a=%u a=%c"):
        with pytest.raises(ProtocolError):
            parse_format(bad)


def test_parse_output_format() -> None:
    types = parse_output_format("at %u: %hi/%c %% of %s, %.*s or %*s (%i %hu)")
    assert [t.code for t in types] == ["%u", "%hi", "%c", "%s", "%.*s", "%*s", "%i", "%hu"]
    with pytest.raises(ProtocolError):
        parse_output_format("broken %d")


def test_expand_enumerations() -> None:
    expanded = expand_enumerations({
        "pin": {"PA0": [0, 3], "PC3": [35, 2], "LED": 99},
        "bus": {"spi": [10, 2]},
    })
    assert expanded == {
        "pin": {"PA0": 0, "PA1": 1, "PA2": 2, "PC3": 35, "PC4": 36, "LED": 99},
        "bus": {"spi0": 10, "spi1": 11},
    }
    with pytest.raises(ProtocolError):
        expand_enumerations({"pin": {"PA0": "zero"}})


def test_sim_dictionary_has_the_shape_of_a_firmware_build(dictionary: DataDictionary) -> None:
    raw = json.loads(sim_dictionary_json())
    assert set(raw) == {"app", "build_versions", "commands", "config", "enumerations",
                        "license", "responses", "version"}
    assert sim_dictionary_json() == json.dumps(raw, separators=(",", ":"), sort_keys=True)
    # The build numbers identify_response 0, identify 1, then commands, then responses.
    assert raw["responses"]["identify_response offset=%u data=%.*s"] == 0
    assert raw["commands"]["identify offset=%u count=%c"] == 1
    numbered = list(SIM_COMMANDS) + list(SIM_RESPONSES)
    for index, fmt in enumerate(numbered, start=2):
        table = raw["commands"] if fmt in SIM_COMMANDS else raw["responses"]
        assert table[fmt] == msgid_for_index(index)
    ids = list(raw["commands"].values()) + list(raw["responses"].values())
    assert len(ids) == len(set(ids))
    assert raw["enumerations"]["pin"]["PB0"] == [16, 16]  # ranged form, as builds emit
    assert dictionary.constant_int("CLOCK_FREQ") == SIM_CLOCK_FREQ == 72_000_000
    assert dictionary.constant("MCU") == "printhost-sim"
    assert dictionary.version and dictionary.build_versions
    assert dictionary.constant("NOT_THERE", None) is None
    with pytest.raises(ProtocolError):
        dictionary.constant("NOT_THERE")


def test_sim_dictionary_carries_current_klipper_formats(dictionary: DataDictionary) -> None:
    # The host looks these up by exact format; a typo would only show on real hardware.
    for fmt in (
        "config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c step_pulse_ticks=%u",
        "queue_step oid=%c interval=%u count=%hu add=%hi",
        "endstop_home oid=%c clock=%u sample_ticks=%u sample_count=%c rest_ticks=%u"
        " pin_value=%c trsync_oid=%c trigger_reason=%c",
        "trsync_state oid=%c can_trigger=%c trigger_reason=%c clock=%u",
        "analog_in_state oid=%c next_clock=%u values=%*s",
        "shutdown clock=%u static_string_id=%hu",
    ):
        assert dictionary.lookup_format(fmt).format == fmt
    with pytest.raises(ProtocolError, match="mismatch"):
        dictionary.lookup_format("queue_step oid=%c interval=%u count=%hu")


def test_dictionary_accepts_json_text_and_compressed_bytes(dictionary: DataDictionary) -> None:
    compressed = sim_dictionary_bytes()
    assert zlib.decompress(compressed).decode() == sim_dictionary_json()
    for source in (compressed, sim_dictionary_json(), sim_dictionary_json().encode()):
        other = DataDictionary(source)
        assert other.commands == dictionary.commands
        assert other.responses == dictionary.responses
        assert other.enumerations == dictionary.enumerations
        assert other.config == dictionary.config
        assert (other.version, other.build_versions) == (dictionary.version,
                                                         dictionary.build_versions)


def test_dictionary_enumerations(dictionary: DataDictionary) -> None:
    pins = dictionary.enumerations["pin"]
    assert len(pins) == 5 * 16
    assert pins["PA0"] == 0 and pins["PA15"] == 15 and pins["PB3"] == 19
    assert pins["PE15"] == 79 and "PE16" not in pins
    reasons = dictionary.enumerations["static_string_id"]
    assert [reasons[r] for r in SIM_SHUTDOWN_REASONS] == list(
        range(2, 2 + len(SIM_SHUTDOWN_REASONS)))
    stepper = dictionary.lookup("config_stepper")
    assert {p.name: p.enumeration for p in stepper.params} == {
        "oid": None, "step_pin": "pin", "dir_pin": "pin", "invert_step": None,
        "step_pulse_ticks": None}
    assert dictionary.lookup("stepper_stop_on_trigger").params[1].enumeration is None


@pytest.mark.parametrize("source", [
    b"not json and not zlib",
    zlib.compress(b"[1, 2]"),
    {"commands": {"a": 2, "b": 2}},  # duplicate id
    {"commands": {"a x=%u": 2}, "responses": {"a y=%u": 3}},  # duplicate name
    {"commands": {"a x=%f": 2}},
    {"commands": {"a": "2"}},
    {"commands": ["a"]},
])
def test_dictionary_rejects_malformed_input(source: object) -> None:
    with pytest.raises(ProtocolError):
        DataDictionary(source)  # type: ignore[arg-type]


# --- Codec -----------------------------------------------------------------------------


def test_encode_exact_bytes(codec: MessageCodec, dictionary: DataDictionary) -> None:
    msgid = encode_vlq(dictionary.commands["queue_step oid=%c interval=%u count=%hu add=%hi"])
    # oid 3 -> 03, interval 100 -> 80 64, count 5 -> 05, add -3 -> 7d
    assert codec.encode("queue_step", oid=3, interval=100, count=5, add=-3) == (
        msgid + bytes.fromhex("03 8064 05 7d"))
    ping = encode_vlq(dictionary.commands["debug_ping data=%*s"])
    assert codec.encode("debug_ping", data=b"\x7e\x00") == ping + b"\x02\x7e\x00"
    assert codec.encode("get_clock") == encode_vlq(dictionary.commands["get_clock"])


def test_encode_text_matches_encode(codec: MessageCodec) -> None:
    assert codec.encode_text("queue_step oid=3 interval=100 count=5 add=0") == codec.encode(
        "queue_step", oid=3, interval=100, count=5, add=0)
    assert codec.encode_text("  queue_step add=0 count=5 interval=0x64 oid=3 ") == (
        codec.encode("queue_step", oid=3, interval=100, count=5, add=0))
    assert codec.encode_text("config_endstop oid=1 pin=PC7 pull_up=1") == codec.encode(
        "config_endstop", oid=1, pin="PC7", pull_up=1)
    assert codec.encode_text("debug_ping data=7e0001") == codec.encode(
        "debug_ping", data=b"\x7e\x00\x01")
    for bad in ("", "nope", "get_clock x=1", "queue_step oid=3", "queue_step oid=x interval=1"
                " count=1 add=0", "debug_ping data=zz", "queue_step oid=1 oid=2",
                "queue_step oid"):
        with pytest.raises(ProtocolError):
            codec.encode_text(bad)


def random_params(rng: random.Random, message, enumerations) -> dict:
    params = {}
    for p in message.params:
        if p.enumeration is not None:
            params[p.name] = rng.choice(sorted(enumerations[p.enumeration]))
        elif p.type.is_int:
            low = p.type.min_value if p.type.signed else 0
            params[p.name] = rng.choice(
                [low, p.type.max_value, rng.randint(low, p.type.max_value)])
        else:
            params[p.name] = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))
    return params


def test_every_sim_message_round_trips(codec: MessageCodec, dictionary: DataDictionary) -> None:
    rng = random.Random(42)
    messages = [m for m in dictionary.messages if m.kind != "output"]
    assert {m.format for m in messages} == (set(SIM_COMMANDS) | set(SIM_RESPONSES)
                                            | set(BOOTSTRAP_MESSAGES))
    mcu_codec = MessageCodec(dictionary, mcu_form=True)
    for _ in range(60):
        payload = bytearray()
        sent = []
        for message in messages:
            params = random_params(rng, message, dictionary.enumerations)
            encoded = codec.encode(message.name, **params)
            assert codec.decode(encoded) == [(message.name, params)]
            assert mcu_codec.decode(mcu_codec.encode(message.name, **params)) == [
                (message.name, params)]
            text = codec.format_text(message.name, params)
            if len(text.split()) == len(params) + 1:  # shutdown reasons contain spaces
                assert codec.encode_text(text) == encoded
            if len(payload) + len(encoded) <= MESSAGE_PAYLOAD_MAX:
                payload += encoded
                sent.append((message.name, params))
        # Several messages in one block payload decode in order.
        assert codec.decode(payload) == sent


def test_range_errors(codec: MessageCodec) -> None:
    good = dict(oid=1, interval=100, count=5, add=0)
    for name, value in [("count", 70000), ("count", -32769), ("add", 32768),
                        ("add", -32769), ("oid", 256), ("oid", -129),
                        ("interval", U32), ("interval", -(1 << 31) - 1)]:
        with pytest.raises(ProtocolError, match=f"{name}={value} out of range"):
            codec.encode("queue_step", **{**good, name: value})
    for value in (1.5, "5", None, b"\x01"):
        with pytest.raises(ProtocolError, match="must be an integer"):
            codec.encode("queue_step", **{**good, "count": value})
    with pytest.raises(ProtocolError, match="missing"):
        codec.encode("queue_step", oid=1)
    with pytest.raises(ProtocolError, match="unknown parameter"):
        codec.encode("queue_step", **good, speed=3)
    with pytest.raises(UnknownMessageError):
        codec.encode("warp_drive")
    with pytest.raises(ProtocolError, match="at most"):
        codec.encode("debug_ping", data=bytes(MESSAGE_PAYLOAD_MAX + 1))
    with pytest.raises(ProtocolError, match="more than one block"):
        codec.encode("debug_ping", data=bytes(MESSAGE_PAYLOAD_MAX - 1))
    with pytest.raises(ProtocolError, match="must be bytes"):
        codec.encode("debug_ping", data=3.0)


def test_negative_values_in_unsigned_fields_follow_klipper(codec: MessageCodec) -> None:
    # Klipper's host sends invert_step=-1 (a %c field) to ask for step-on-both-edges;
    # the value travels as the 32-bit pattern and reads back unsigned, as Klipper's does.
    encoded = codec.encode("config_stepper", oid=0, step_pin="PA1", dir_pin="PA2",
                           invert_step=-1, step_pulse_ticks=0)
    assert encoded.endswith(b"\x7f\x00")
    (_, params), = codec.decode(encoded)
    assert params["invert_step"] == U32 - 1
    assert codec.decode(codec.encode("stepper_position", oid=0, pos=-5)) == [
        ("stepper_position", {"oid": 0, "pos": -5})]


def test_enumerated_pins_both_ways(codec: MessageCodec, dictionary: DataDictionary) -> None:
    encoded = codec.encode("config_endstop", oid=2, pin="PB3", pull_up=1)
    msgid = encode_vlq(dictionary.commands["config_endstop oid=%c pin=%c pull_up=%c"])
    assert encoded == msgid + bytes((2, 19, 1))  # PB3 = port B (16) + 3
    assert codec.decode(encoded) == [("config_endstop", {"oid": 2, "pin": "PB3", "pull_up": 1})]
    for bad in ("PZ9", "PA16", 3):
        with pytest.raises(ProtocolError, match="enumeration 'pin'"):
            codec.encode("config_endstop", oid=2, pin=bad, pull_up=1)
    # A number the enumeration does not list decodes as Klipper shows it, "?<n>".
    raw = msgid + bytes((2, 90, 1))
    assert codec.decode(raw)[0][1]["pin"] == "?90"
    shutdown = codec.encode("shutdown", clock=12345, static_string_id="Timer too close")
    assert codec.decode(shutdown) == [
        ("shutdown", {"clock": 12345, "static_string_id": "Timer too close"})]


def test_decode_rejects_bad_payloads(codec: MessageCodec) -> None:
    encoded = codec.encode("queue_step", oid=3, interval=100, count=5, add=0)
    with pytest.raises(ProtocolError):
        codec.decode(encoded[:-1])
    with pytest.raises(UnknownMessageError) as info:
        codec.decode(encode_vlq(90))
    assert info.value.msgid == 90
    ping = codec.encode("pong", data=b"abcd")
    with pytest.raises(ProtocolError, match="past end"):
        codec.decode(ping[:-1])


def test_mcu_form_output_is_what_the_host_reads(dictionary: DataDictionary) -> None:
    host = MessageCodec(dictionary)
    mcu = MessageCodec(dictionary, mcu_form=True)
    clock = 0xFFFFFFF0  # shortly before the 32-bit clock wraps
    from_mcu = mcu.encode("clock", clock=clock)
    from_host = host.encode("clock", clock=clock)
    assert len(from_mcu) == len(from_host) - 4  # -16 fits one byte in the MCU's form
    assert host.decode(from_mcu) == host.decode(from_host) == [("clock", {"clock": clock})]


def test_bootstrap_identify_exchange() -> None:
    # Before the dictionary is known only identify/identify_response exist, at ids 1/0.
    boot = MessageCodec()
    assert boot.encode("identify", offset=0, count=40) == bytes((1, 0, 40))
    assert boot.encode("identify", offset=200, count=40) == bytes((1, 0x81, 0x48, 40))
    blob = sim_dictionary_bytes()
    mcu = MessageCodec(sim_dictionary(), mcu_form=True)
    received = b""
    while True:
        request = boot.decode(boot.encode("identify", offset=len(received), count=40))
        offset = request[0][1]["offset"]
        reply = mcu.encode("identify_response", offset=offset, data=blob[offset:offset + 40])
        (name, params), = boot.decode(reply)
        assert name == "identify_response" and params["offset"] == len(received)
        if not params["data"]:
            break
        received += params["data"]
    assert received == blob
    assert DataDictionary(received).commands == DataDictionary(sim_dictionary()).commands


def test_negative_and_two_byte_message_ids() -> None:
    # Real builds have well over 96 messages, so some ids are negative or two bytes.
    commands = {f"cmd{i} value=%hi": msgid_for_index(i) for i in range(2, 400)}
    codec = MessageCodec({"commands": commands})
    for index in (2, 95, 96, 127, 128, 399):
        encoded = codec.encode(f"cmd{index}", value=-7)
        raw_id = bytes((index,)) if index < 0x80 else bytes(((index >> 7) | 0x80, index & 0x7F))
        assert encoded == raw_id + b"\x79"
        assert codec.decode(encoded) == [(f"cmd{index}", {"value": -7})]


def test_output_messages_are_rendered() -> None:
    codec = MessageCodec({"output": {"Load %u%% at %s (%hi)": 2}})
    payload = bytes((2, 50)) + b"\x03abc" + encode_vlq(-4)
    assert codec.decode(payload) == [("#output", {"#msg": "Load 50% at b'abc' (-4)"})]


# --- Streams ---------------------------------------------------------------------------


def test_stream_packs_greedily_with_incrementing_sequence(codec: MessageCodec) -> None:
    stream = MessageStream(codec, seq=14)
    assert stream.flush() == b""
    sent = []
    rng = random.Random(5)
    for i in range(300):
        params = dict(oid=i % 8, interval=rng.randrange(1, 1 << 24),
                      count=rng.randrange(1, 1000), add=rng.randrange(-500, 500))
        stream.queue("queue_step", **params)
        sent.append(("queue_step", params))
    stream.queue_text("get_clock")
    sent.append(("get_clock", {}))
    data = stream.flush()
    blocks = BlockParser().feed(data)
    assert [seq for seq, _ in blocks] == [(14 + i) % 16 for i in range(len(blocks))]
    assert stream.next_seq == 14 + len(blocks)
    sizes = [len(p) for _, p in blocks]
    assert all(s <= MESSAGE_PAYLOAD_MAX for s in sizes)
    # Greedy: the first message of each block would not have fitted in the one before.
    messages = [codec.encode(n, **p) for n, p in sent]
    expected_sizes, current = [], 0
    for m in messages:
        if current + len(m) > MESSAGE_PAYLOAD_MAX:
            expected_sizes.append(current)
            current = 0
        current += len(m)
    expected_sizes.append(current)
    assert sizes == expected_sizes
    assert stream.decode_stream(data) == sent
    assert stream.queued == 0


def test_stream_decode_is_strict_about_damage(codec: MessageCodec) -> None:
    stream = MessageStream(codec)
    data = bytearray(stream.pack([codec.encode("get_clock"), codec.encode("get_uptime")]))
    assert stream.decode_stream(bytes(data)) == [("get_clock", {}), ("get_uptime", {})]
    data[2] ^= 0xFF
    with pytest.raises(ProtocolError):
        stream.decode_stream(bytes(data))
    assert stream.decode_stream(bytes(data), strict=False) == []
    with pytest.raises(ProtocolError):
        stream.decode_stream(encode_block(0, codec.encode("get_clock"))[:-2])
    with pytest.raises(ProtocolError):
        stream.queue_encoded(bytes(MESSAGE_PAYLOAD_MAX + 1))
