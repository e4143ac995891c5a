"""Klipper's binary host<->MCU protocol, reproduced byte for byte.

The firmware on the printer board is unmodified Klipper, so nothing here is a design
choice: every byte we put on the wire must be one the firmware's parser accepts, and
every byte it sends must be read the way Klipper's own host reads it.

This module is the protocol's documented entry point: it gathers the public API of the
layers, each of which lives in its own module, from single values up to whole blocks:

* `vlq`: integers as variable-length quantities (seven bits a byte, bits 5-6 of the
  first byte a sign, so -32..95 take one byte) and byte strings (`%s`, `%.*s`, `%*s`:
  one raw length byte, then the bytes);
* `dictionary`: the firmware build's zlib-compressed JSON data dictionary, which
  numbers every command and response (only `identify_response`, id 0, and `identify`,
  id 1, are fixed, so the host can download it) and gives each its typed parameters;
* `codec`: messages, a VLQ message id followed by each parameter in declaration
  order, encoded from and decoded to named parameters by `MessageCodec`, and
  `MessageStream`, which packs messages into consecutive blocks as Klipper's serial
  queue does;
* `framing`: blocks, `<length><0x10|seq><messages...><crc16 hi><crc16 lo><0x7e>`, at
  most 64 bytes, so at most 59 bytes of messages per block (`encode_block`,
  `BlockParser`);
* `errors`: `ProtocolError`, raised by every layer, and `UnknownMessageError`.
"""

from __future__ import annotations

from printhost.mcu.codec import MessageCodec, MessageStream
from printhost.mcu.dictionary import (BOOTSTRAP_MESSAGES, IDENTIFY_FORMAT,
                                      IDENTIFY_RESPONSE_FORMAT, PARAM_TYPES, DataDictionary,
                                      MessageFormat, Param, ParamType, expand_enumerations,
                                      msgid_for_index, parse_format, parse_output_format)
from printhost.mcu.errors import ProtocolError, UnknownMessageError
from printhost.mcu.framing import (MESSAGE_DEST, MESSAGE_HEADER_SIZE, MESSAGE_MAX, MESSAGE_MIN,
                                   MESSAGE_PAYLOAD_MAX, MESSAGE_SEQ_MASK, MESSAGE_SYNC,
                                   MESSAGE_TRAILER_SIZE, BlockParser, crc16_ccitt, encode_block)
from printhost.mcu.vlq import VLQ_MAX, VLQ_MIN, decode_vlq, encode_vlq, vlq_size

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
