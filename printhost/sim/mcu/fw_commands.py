"""Command handlers for the simulated MCU's configurable objects.

Each handler receives the parameters as `MessageCodec` decodes them (unsigned fields
as uint32, signed as int32, pins as names or numbers, `%*s` as bytes) and narrows them
to the C types the firmware's handler declares, because the firmware silently truncates
(`oid` is 8 bits, `count` 16, `add` a signed 16) and the host's encoder is allowed to
send anything the wire format carries. Clocks are read relative to the present.

The order of operations inside each handler follows the firmware where it shows:
which of two errors wins, whether an output pin is driven before the oid is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from printhost.sim.mcu.fw_adc import AnalogIn
from printhost.sim.mcu.fw_clock import FirmwareShutdown, extend32, s8, s16, signed32, u8, u16, u32
from printhost.sim.mcu.fw_gpio import DigitalOut, PwmOut
from printhost.sim.mcu.fw_steppers import Stepper
from printhost.sim.mcu.fw_triggers import Endstop, Trsync

if TYPE_CHECKING:  # pragma: no cover
    from printhost.sim.mcu.firmware import SimFirmware

Handler = Callable[["SimFirmware", Mapping[str, Any]], None]


def ints(params: Mapping[str, Any], *names: str) -> list[int]:
    """The named integer parameters, or the firmware's parser error if malformed."""
    try:
        return [int(params[name]) for name in names]
    except (KeyError, TypeError, ValueError):
        raise FirmwareShutdown("Command parser error") from None


def raw(params: Mapping[str, Any], name: str) -> Any:
    try:
        return params[name]
    except KeyError:
        raise FirmwareShutdown("Command parser error") from None


# --- steppers -------------------------------------------------------------------------


def config_stepper(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, invert, pulse = ints(p, "oid", "invert_step", "step_pulse_ticks")
    step_pin, dir_pin = raw(p, "step_pin"), raw(p, "dir_pin")
    stepper = Stepper(fw, u8(oid), "", "", s8(invert), u32(pulse))
    fw.alloc(u8(oid), stepper)
    stepper.step_pin = fw.pin(step_pin, "Not an output pin")
    stepper.dir_pin = fw.pin(dir_pin, "Not an output pin")


def queue_step(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, interval, count, add = ints(p, "oid", "interval", "count", "add")
    fw.lookup(oid, Stepper).queue_step(u32(interval), u16(count), s16(add))


def set_next_step_dir(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, direction = ints(p, "oid", "dir")
    fw.lookup(oid, Stepper).next_dir = 1 if u32(direction) else 0


def reset_step_clock(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock = ints(p, "oid", "clock")
    fw.lookup(oid, Stepper).reset_step_clock(extend32(clock, fw.now))


def stepper_get_position(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (oid,) = ints(p, "oid")
    stepper = fw.lookup(oid, Stepper)
    fw.send("stepper_position", {"oid": u8(oid), "pos": signed32(stepper.position(fw.now))})


def stepper_stop_on_trigger(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, trsync_oid = ints(p, "oid", "trsync_oid")
    stepper = fw.lookup(oid, Stepper)
    fw.lookup(trsync_oid, Trsync).add_signal(stepper)


# --- endstops and trsync --------------------------------------------------------------


def config_endstop(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, pull_up = ints(p, "oid", "pull_up")
    pin = raw(p, "pin")
    endstop = Endstop(fw, u8(oid), "", u8(pull_up))
    fw.alloc(u8(oid), endstop)
    endstop.pin = fw.pin(pin, "Not a valid input pin")


def endstop_home(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock, sample_ticks, count, rest, value, ts, reason = ints(
        p, "oid", "clock", "sample_ticks", "sample_count", "rest_ticks", "pin_value",
        "trsync_oid", "trigger_reason")
    fw.lookup(oid, Endstop).home(extend32(clock, fw.now), u32(sample_ticks), u8(count),
                                 u32(rest), u8(value), u8(ts), u8(reason))


def endstop_query_state(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (oid,) = ints(p, "oid")
    fw.lookup(oid, Endstop).query_state()


def config_trsync(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (oid,) = ints(p, "oid")
    fw.alloc(u8(oid), Trsync(fw, u8(oid)))


def trsync_start(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock, ticks, reason = ints(p, "oid", "report_clock", "report_ticks",
                                     "expire_reason")
    fw.lookup(oid, Trsync).start(extend32(clock, fw.now), u32(ticks), u8(reason))


def trsync_set_timeout(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock = ints(p, "oid", "clock")
    fw.lookup(oid, Trsync).set_timeout(extend32(clock, fw.now))


def trsync_trigger(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, reason = ints(p, "oid", "reason")
    fw.lookup(oid, Trsync).trigger_command(u8(reason))


# --- analog inputs --------------------------------------------------------------------


def config_analog_in(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (oid,) = ints(p, "oid")
    pin = fw.pin(raw(p, "pin"), "Not a valid ADC pin")
    fw.alloc(u8(oid), AnalogIn(fw, u8(oid), pin))


def query_analog_in(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock, sample_ticks, count, rest, nbytes, lo, hi, checks = ints(
        p, "oid", "clock", "sample_ticks", "sample_count", "rest_ticks",
        "bytes_per_report", "min_value", "max_value", "range_check_count")
    fw.lookup(oid, AnalogIn).query(extend32(clock, fw.now), u32(sample_ticks), u8(count),
                                   u32(rest), u8(nbytes), u16(lo), u16(hi), u8(checks))


# --- digital outputs and PWM ----------------------------------------------------------


def config_digital_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, value, default, max_duration = ints(p, "oid", "value", "default_value",
                                             "max_duration")
    pin = fw.pin(raw(p, "pin"), "Not an output pin")
    fw.set_output(pin, 1.0 if value else 0.0)  # the pin is driven before the oid check
    fw.alloc(u8(oid), DigitalOut(fw, u8(oid), pin, value, default, u32(max_duration)))


def set_digital_out_pwm_cycle(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, cycle = ints(p, "oid", "cycle_ticks")
    fw.lookup(oid, DigitalOut).set_cycle(u32(cycle))


def queue_digital_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock, on_ticks = ints(p, "oid", "clock", "on_ticks")
    fw.lookup(oid, DigitalOut).queue_value(extend32(clock, fw.now), u32(on_ticks))


def update_digital_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, value = ints(p, "oid", "value")
    fw.lookup(oid, DigitalOut).update(u8(value))


def set_digital_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (value,) = ints(p, "value")
    pin = fw.pin(raw(p, "pin"), "Not an output pin")
    fw.set_output(pin, 1.0 if value else 0.0)


def config_pwm_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, cycle, value, default, max_duration = ints(
        p, "oid", "cycle_ticks", "value", "default_value", "max_duration")
    pin = fw.pin(raw(p, "pin"), "Not a valid PWM pin")
    fw.set_output(pin, fw.pwm_duty(u16(value)))
    fw.alloc(u8(oid), PwmOut(fw, u8(oid), pin, u32(cycle), u16(value), u16(default),
                             u32(max_duration)))


def queue_pwm_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    oid, clock, value = ints(p, "oid", "clock", "value")
    fw.lookup(oid, PwmOut).queue_value(extend32(clock, fw.now), u16(value))


def set_pwm_out(fw: SimFirmware, p: Mapping[str, Any]) -> None:
    (value,) = ints(p, "value")
    pin = fw.pin(raw(p, "pin"), "Not a valid PWM pin")
    fw.set_output(pin, fw.pwm_duty(u16(value)))


OBJECT_COMMANDS: dict[str, Handler] = {
    fn.__name__: fn for fn in (
        config_stepper, queue_step, set_next_step_dir, reset_step_clock,
        stepper_get_position, stepper_stop_on_trigger,
        config_endstop, endstop_home, endstop_query_state,
        config_trsync, trsync_start, trsync_set_timeout, trsync_trigger,
        config_analog_in, query_analog_in,
        config_digital_out, set_digital_out_pwm_cycle, queue_digital_out,
        update_digital_out, set_digital_out, config_pwm_out, queue_pwm_out, set_pwm_out)
}
