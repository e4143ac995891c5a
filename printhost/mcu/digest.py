"""A digest of the step stream, to prove it crossed the link intact."""

from __future__ import annotations

import zlib


def step_stream_crc(crc: int, name: str, *values: int) -> int:
    """Running CRC-32 of step commands in a canonical text form. The host keeps one over
    what it sends and the simulated MCU one over what it executes: equal values mean
    every command arrived exactly once and in order."""
    line = " ".join([name, *(str(v) for v in values)]) + "\n"
    return zlib.crc32(line.encode(), crc)
