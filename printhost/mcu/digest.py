"""A digest of the step stream, to prove it crossed the link intact.

The host keeps one over the step commands it sends and the simulated MCU one over
those it executes: equal values mean every command arrived exactly once and in order.
Both hash the same canonical form, five little-endian 64-bit integers per command
(`kind, oid, a, b, c`: `queue_step` is kind 0 with interval, count, add;
`set_next_step_dir` kind 1 with the direction as sent and two zeros), so the host can
digest a whole batch of rows with one CRC call while the board digests each command
as it handles it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_ROW = struct.Struct("<5q")
#: `kind` of each step command in the digest (the same numbers as StepCommands.kind).
DIGEST_KINDS = {"queue_step": 0, "set_next_step_dir": 1}


def step_command_crc(crc: int, name: str, oid: int, a: int, b: int = 0, c: int = 0) -> int:
    """The running digest after one more command."""
    return zlib.crc32(_ROW.pack(DIGEST_KINDS[name], oid, a, b, c), crc)


def step_rows_crc(crc: int, kind: np.ndarray, oid: np.ndarray, a: np.ndarray,
                  b: np.ndarray, c: np.ndarray) -> int:
    """The running digest after a batch of commands, one per array element."""
    rows = np.empty((len(kind), 5), dtype="<i8")
    for j, column in enumerate((kind, oid, a, b, c)):
        rows[:, j] = column
    return zlib.crc32(rows.tobytes(), crc)
