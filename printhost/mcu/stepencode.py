"""Step command rows (`StepCommands`) as wire messages, and their stream digest.

One encoder for every path that puts steps on a wire: the live sender
(`printhost.mcu.steppers.StepSender`) and `printhost batch` both call
`encode_step_commands`, which runs the compiled encoder (`printhost.mcu.fastencode`)
over a whole batch of rows. Kept apart from the MCU connection so that a batch run
does not import the serial link.
"""

from __future__ import annotations

import numpy as np

from printhost.control.stepstream import KIND_NAMES, QUEUE_STEP, SET_NEXT_STEP_DIR, StepCommands
from printhost.mcu.dictionary import DataDictionary
from printhost.mcu.digest import step_rows_crc
from printhost.mcu.fastencode import MAX_PARAMS, EncodedMessages, encode_messages, message_params


def encode_step_commands(dictionary: DataDictionary, cmds: StepCommands) -> EncodedMessages:
    """Step command rows as wire messages, in row order, ids and layout from `dictionary`.

    Parameters are matched to the firmware's declared formats by name, so a build that
    numbers or orders them differently still gets the right bytes, and values outside
    a declared type are refused as `MessageCodec.encode` refuses them.
    """
    queue_step = dictionary.lookup(KIND_NAMES[QUEUE_STEP])
    set_dir = dictionary.lookup(KIND_NAMES[SET_NEXT_STEP_DIR])
    is_step = cmds.kind == QUEUE_STEP
    is_dir = ~is_step
    if np.any(cmds.kind[is_dir] != SET_NEXT_STEP_DIR):
        raise ValueError("step command kinds must be QUEUE_STEP or SET_NEXT_STEP_DIR")
    params = np.empty((len(cmds), MAX_PARAMS), dtype=np.int64)
    params[is_step] = message_params(queue_step, {
        "oid": cmds.oid[is_step], "interval": cmds.interval[is_step],
        "count": cmds.count[is_step], "add": cmds.add[is_step]})
    params[is_dir] = message_params(set_dir, {"oid": cmds.oid[is_dir],
                                              "dir": cmds.dir[is_dir]})
    msgids = np.where(is_step, queue_step.msgid, set_dir.msgid)
    nparams = np.where(is_step, len(queue_step.params), len(set_dir.params))
    return encode_messages(msgids, nparams, params)


def step_commands_crc(crc: int, cmds: StepCommands) -> int:
    """The step-stream digest (`printhost.mcu.digest`) after `cmds`, rows as sent."""
    step = cmds.kind == QUEUE_STEP
    a = np.where(step, cmds.interval, cmds.dir)
    b = np.where(step, cmds.count, 0)
    c = np.where(step, cmds.add, 0)
    return step_rows_crc(crc, cmds.kind, cmds.oid, a, b, c)
