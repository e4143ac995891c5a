"""The data dictionary of printhost's simulated Klipper MCU.

The host learns everything about an MCU from the dictionary it downloads with
`identify`, so the simulator must hand over one that looks exactly like the JSON a
Klipper firmware build writes to out/klipper.dict: the same top-level keys, the same
message format strings (copied from the firmware source modules the simulator imitates,
because the host checks them character for character), enumerations in the compact
ranged form, and ids numbered the way the build script numbers them. Only the
identifying strings (version, build_versions, MCU, app) are printhost's own, so logs
never mistake the simulator for a real board.

Clock: 72 MHz, the rate Klipper runs an STM32F103 at - the chip on many common printer
boards. Using a real board's rate means the host's timing code (microsecond step pulse
ticks, scheduling margins, the 32-bit clock wrapping every 2**32 / 72e6 ~= 59.65 s and
having to be extended to 64 bits) is exercised by every simulated session longer than
a minute, with the numbers it will see on hardware. A 16 MHz AVR would take 268 s to
wrap and would hide mistakes in that code from short tests.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from printhost.mcu.dictionary import BOOTSTRAP_MESSAGES, msgid_for_index

SIM_CLOCK_FREQ = 72_000_000
SIM_MCU_NAME = "printhost-sim"
SIM_VERSION = "printhost-sim-0.1.0"
SIM_BUILD_VERSIONS = "printhost simulated MCU (Python model, no toolchain)"

#: Commands the simulated MCU accepts, in the order the build numbers them. Format
#: strings match current Klipper firmware (src/basecmd.c, debugcmds.c, stepper.c,
#: endstop.c, trsync.c, adccmds.c, gpiocmds.c, pwmcmds.c, generic/armcm_reset.c).
SIM_COMMANDS: tuple[str, ...] = (
    # basecmd.c: configuration handshake, clocks, shutdown handling
    "allocate_oids count=%c",
    "get_config",
    "finalize_config crc=%u",
    "get_clock",
    "get_uptime",
    "emergency_stop",
    "clear_shutdown",
    # generic/armcm_reset.c: reboot, as on any Cortex-M board
    "reset",
    # debugcmds.c
    "debug_read order=%c addr=%u",
    "debug_write order=%c addr=%u val=%u",
    "debug_ping data=%*s",
    "debug_nop",
    # stepper.c
    "config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c step_pulse_ticks=%u",
    "queue_step oid=%c interval=%u count=%hu add=%hi",
    "set_next_step_dir oid=%c dir=%c",
    "reset_step_clock oid=%c clock=%u",
    "stepper_get_position oid=%c",
    "stepper_stop_on_trigger oid=%c trsync_oid=%c",
    # endstop.c
    "config_endstop oid=%c pin=%c pull_up=%c",
    "endstop_home oid=%c clock=%u sample_ticks=%u sample_count=%c rest_ticks=%u"
    " pin_value=%c trsync_oid=%c trigger_reason=%c",
    "endstop_query_state oid=%c",
    # trsync.c
    "config_trsync oid=%c",
    "trsync_start oid=%c report_clock=%u report_ticks=%u expire_reason=%c",
    "trsync_set_timeout oid=%c clock=%u",
    "trsync_trigger oid=%c reason=%c",
    # adccmds.c
    "config_analog_in oid=%c pin=%u",
    "query_analog_in oid=%c clock=%u sample_ticks=%u sample_count=%c rest_ticks=%u"
    " bytes_per_report=%c min_value=%hu max_value=%hu range_check_count=%c",
    # gpiocmds.c
    "config_digital_out oid=%c pin=%u value=%c default_value=%c max_duration=%u",
    "set_digital_out_pwm_cycle oid=%c cycle_ticks=%u",
    "queue_digital_out oid=%c clock=%u on_ticks=%u",
    "update_digital_out oid=%c value=%c",
    "set_digital_out pin=%u value=%c",
    # pwmcmds.c (hardware PWM)
    "config_pwm_out oid=%c pin=%u cycle_ticks=%u value=%hu default_value=%hu"
    " max_duration=%u",
    "queue_pwm_out oid=%c clock=%u value=%hu",
    "set_pwm_out pin=%u cycle_ticks=%u value=%hu",
)

#: Responses (sendf formats) the simulated MCU can send, numbered after the commands.
SIM_RESPONSES: tuple[str, ...] = (
    "config is_config=%c crc=%u is_shutdown=%c move_count=%hu",
    "clock clock=%u",
    "uptime high=%u clock=%u",
    "stats count=%u sum=%u sumsq=%u",
    "shutdown clock=%u static_string_id=%hu",
    "is_shutdown static_string_id=%hu",
    "starting",
    "debug_result val=%u",
    "pong data=%*s",
    "stepper_position oid=%c pos=%i",
    "endstop_state oid=%c homing=%c next_clock=%u pin_value=%c",
    "trsync_state oid=%c can_trigger=%c trigger_reason=%c clock=%u",
    "analog_in_state oid=%c next_clock=%u values=%*s",
)

#: Shutdown reasons, as the firmware's shutdown("...") calls in the same modules spell
#: them. The build numbers these from 2 (0 and 1 are never used) and the MCU reports
#: the number in `shutdown`/`is_shutdown`; the host turns it back into the text.
SIM_SHUTDOWN_REASONS: tuple[str, ...] = (
    "alloc_chunk failed",
    "alloc_chunks failed",
    "Move queue overflow",
    "Invalid move request size",
    "Already finalized",
    "Invalid oid type",
    "Can't assign oid",
    "oids already allocated",
    "Command request",
    "Command parser error",
    "Message encode error",
    "Invalid command",
    "sentinel timer called",
    "Timer too close",
    "Shutdown cleared when not shutdown",
    "Stepper too far in past",
    "Invalid count parameter",
    "Can't reset time when stepper active",
    "Can't add signal that is already active",
    "ADC out of range",
    "Invalid analog_in bytes_per_report",
    "Missed scheduling of next digital out event",
    "Scheduled digital out event will exceed max_duration",
    "Can not set soft pwm cycle ticks while updates pending",
    "update_digital_out not valid with active queue",
    "Missed scheduling of next hard pwm event",
    "Scheduled pwm event will exceed max_duration",
    # Pin checks of the board support code (a pin the chip cannot use that way).
    "Not an output pin",
    "Not a valid input pin",
    "Not a valid ADC pin",
    "Not a valid PWM pin",
)
_STATIC_STRING_FIRST_ID = 2

#: GPIO ports A-E, 16 pins each, numbered port * 16 + pin as Klipper's STM32 code does.
SIM_PIN_PORTS = "ABCDE"

#: Build constants, named and valued as an STM32F103 serial build declares them
#: (MCU excepted). PWM_MAX is the STM32 hardware PWM scale; RECEIVE_WINDOW is the size
#: of the firmware's serial receive buffer, which bounds the host's in-flight bytes.
SIM_CONFIG: dict[str, Any] = {
    "ADC_MAX": 4095,
    "CLOCK_FREQ": SIM_CLOCK_FREQ,
    "MCU": SIM_MCU_NAME,
    "PWM_MAX": 32768,
    "RECEIVE_WINDOW": 192,
    "RESERVE_PINS_serial": "PA10,PA9",
    "SERIAL_BAUD": 250000,
    "STATS_SUMSQ_BASE": 256,
    "STEPPER_STEP_BOTH_EDGE": 1,
}


def _number_messages() -> tuple[dict[str, int], dict[str, int]]:
    # The build script starts after the fixed identify pair, numbers every command,
    # then every response, and records each number in its VLQ-read form.
    commands = {fmt: msgid for fmt, msgid in BOOTSTRAP_MESSAGES.items()
                if fmt.startswith("identify ")}
    responses = {fmt: msgid for fmt, msgid in BOOTSTRAP_MESSAGES.items()
                 if fmt.startswith("identify_response ")}
    index = max(BOOTSTRAP_MESSAGES.values())
    for table, formats in ((commands, SIM_COMMANDS), (responses, SIM_RESPONSES)):
        for fmt in formats:
            index += 1
            table[fmt] = msgid_for_index(index)
    return commands, responses


def sim_dictionary() -> dict[str, Any]:
    """The simulated MCU's data dictionary as the decoded JSON object (a fresh copy)."""
    commands, responses = _number_messages()
    pins = {f"P{port}0": [i * 16, 16] for i, port in enumerate(SIM_PIN_PORTS)}
    reasons = {text: _STATIC_STRING_FIRST_ID + i
               for i, text in enumerate(SIM_SHUTDOWN_REASONS)}
    return {
        "app": SIM_MCU_NAME,
        "build_versions": SIM_BUILD_VERSIONS,
        "commands": commands,
        "config": dict(SIM_CONFIG),
        "enumerations": {"pin": pins, "static_string_id": reasons},
        "license": "GNU GPLv3",
        "responses": responses,
        "version": SIM_VERSION,
    }


def sim_dictionary_json() -> str:
    """The dictionary serialised as a firmware build writes it (compact, keys sorted)."""
    return json.dumps(sim_dictionary(), separators=(",", ":"), sort_keys=True)


def sim_dictionary_bytes() -> bytes:
    """The zlib-compressed JSON the simulated MCU serves through `identify`."""
    return zlib.compress(sim_dictionary_json().encode("utf-8"), 9)
