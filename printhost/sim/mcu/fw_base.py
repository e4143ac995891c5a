"""Basic commands of the simulated MCU: identify, configuration, clocks, debug.

These are the firmware's housekeeping commands, the ones a host uses before any object
exists (to download the dictionary, allocate oids, check the configuration's CRC) and
after a shutdown (most of them are allowed while shut down, see
`firmware.IN_SHUTDOWN_COMMANDS`). Parameters are narrowed to the firmware's C types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from printhost.mcu.framing import MESSAGE_PAYLOAD_MAX
from printhost.mcu.vlq import vlq_size
from printhost.sim.mcu.fw_clock import low32, u8, u32
from printhost.sim.mcu.fw_commands import ints, raw

if TYPE_CHECKING:  # pragma: no cover
    from printhost.sim.mcu.firmware import SimFirmware


def _identify(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    offset, count = ints(p, "offset", "count")
    offset, count = u32(offset), u8(count)
    data = fw.identify_data[offset:offset + count]
    # A reply that does not fit in one block is dropped by the firmware's encoder.
    if 1 + vlq_size(offset) + 1 + len(data) <= MESSAGE_PAYLOAD_MAX:
        fw.send("identify_response", {"offset": offset, "data": bytes(data)})


def _allocate_oids(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (count,) = ints(p, "count")
    fw.allocate_oids(u8(count))


def _get_config(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    fw.send("config", {"is_config": int(fw.finalized), "crc": fw.config_crc,
                       "is_shutdown": int(fw.is_shutdown), "move_count": fw.move_count})


def _finalize_config(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (crc,) = ints(p, "crc")
    fw.finalize(u32(crc))


def _get_clock(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    # The clock when the query was read: a late-read query must not be answered with a
    # clock from before the host asked (it would fall outside the round trip).
    fw.send("clock", {"clock": low32(fw.latest_arrival())})


def _get_uptime(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    clock = fw.latest_arrival()
    fw.send("uptime", {"high": u32(clock >> 32), "clock": low32(clock)})


def _emergency_stop(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    fw.shutdown("Command request")


def _clear_shutdown(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    fw.clear_shutdown()


def _reset(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    fw.reset_command()


# debug_read/debug_write "order": 0 bytes, 1 halfwords, 2 words (anything else bytes).
_WIDTHS = {0: 1, 1: 2, 2: 4}


def _debug_read(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    order, addr = ints(p, "order", "addr")
    width = _WIDTHS.get(u8(order), 1)
    memory = fw.debug_memory
    value = sum(memory.get(u32(addr + i), 0) << (8 * i) for i in range(width))
    fw.send("debug_result", {"val": value})


def _debug_write(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    order, addr, val = ints(p, "order", "addr", "val")
    width = _WIDTHS.get(u8(order), 1)
    for i in range(width):
        fw.debug_memory[u32(addr + i)] = (u32(val) >> (8 * i)) & 0xFF


def _debug_ping(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    fw.send("pong", {"data": bytes(raw(p, "data"))})


def _debug_nop(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    pass


BASE_COMMANDS: dict[str, Callable[[SimFirmware, Mapping[str, Any]], None]] = {
    "identify": _identify, "allocate_oids": _allocate_oids, "get_config": _get_config,
    "finalize_config": _finalize_config, "get_clock": _get_clock,
    "get_uptime": _get_uptime, "emergency_stop": _emergency_stop,
    "clear_shutdown": _clear_shutdown, "reset": _reset, "debug_read": _debug_read,
    "debug_write": _debug_write, "debug_ping": _debug_ping, "debug_nop": _debug_nop,
}
