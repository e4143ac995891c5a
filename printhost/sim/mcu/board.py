"""The physical printer around the simulated MCU: heaters, thermistors, fan, endstops.

The simulated firmware only knows pins. This board wires them to a model of a printer
built from the same configuration the host reads: heater pins heat thermal models,
thermistor pins read those models through the configured sensor's divider (so the host
must convert ADC values correctly to see the right temperature), the fan pin cools the
hotend, and endstop pins close when the toolhead - computed from the steppers' positions
on the MCU through the kinematics - reaches the endstop.

The toolhead keeps its physical place when the MCU reboots (its step counters start
again at zero), as on a real printer. Faults of the hardware itself (a thermistor that
opens or shorts, a heater cartridge that dies, a thermistor that falls out of the block)
can be switched on for the fault tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from printhost.config import Settings
from printhost.mcu.pins import parse_pin
from printhost.sensors.adc import AdcTemperatureSensor
from printhost.sensors.thermistor import sensor as make_sensor
from printhost.sim.thermal import ThermalModel

# Thermal models are integrated in steps no longer than this (their exact integration
# is stable for any step; the limit keeps fan and duty changes well resolved).
MAX_THERMAL_STEP_S = 0.05


@dataclass
class BoardFaults:
    """Hardware faults, by heater name ("extruder", "heater_bed") or, for the endstops,
    by axis ("x", "y", "z")."""
    thermistor_open: set[str] = field(default_factory=set)
    thermistor_short: set[str] = field(default_factory=set)
    heater_dead: set[str] = field(default_factory=set)
    thermistor_loose: set[str] = field(default_factory=set)  # reads ambient
    endstop_broken: set[str] = field(default_factory=set)     # never reads triggered


@dataclass
class _Heater:
    name: str
    model: ThermalModel
    sensor: AdcTemperatureSensor
    duty: float = 0.0
    # The board clock at which the output last went from off to on (None while off):
    # what a logic analyser on the heater pin would show, for tests that time a
    # reaction from the pin switching on without their own polling in the figure.
    on_since_clock: int | None = None


@dataclass
class _Axis:
    name: str
    endstop_pin: str
    invert: bool
    trigger_at_min: bool
    position_endstop: float


class SimBoard:
    """A `BoardModel` for `SimFirmware`, built from printhost's settings."""

    def __init__(self, settings: Settings, clock_freq: float, adc_max: int) -> None:
        sim = settings.simulation
        self.clock_freq = float(clock_freq)
        self.adc_max = int(adc_max)
        self.ambient_c = sim.ambient_c
        self.faults = BoardFaults()
        self._heaters_by_output: dict[str, _Heater] = {}
        self._heaters_by_sensor: dict[str, _Heater] = {}
        self.heaters: dict[str, _Heater] = {}
        for name, body in (("extruder", sim.hotend), ("heater_bed", sim.bed)):
            hs = getattr(settings.heaters, name)
            heater = _Heater(name, ThermalModel(body, sim.ambient_c),
                             AdcTemperatureSensor(make_sensor(hs.sensor_type), hs.pullup_resistor))
            self.heaters[name] = heater
            self._heaters_by_output[parse_pin(hs.heater_pin).name] = heater
            self._heaters_by_sensor[parse_pin(hs.sensor_pin, can_pull=True).name] = heater
        self.fan_pin = parse_pin(settings.fan.pin).name if settings.fan.pin else ""
        self.fan = 0.0
        self.outputs: dict[str, float] = {}
        # Steppers: step pin -> (axis, mm per step with the direction pin's sign).
        self.kinematics = settings.printer.kinematics
        self._step_mm: dict[str, tuple[str, float]] = {}
        for name in ("x", "y", "z", "extruder"):
            st = getattr(settings.steppers, name)
            sign = -1.0 if parse_pin(st.dir_pin).invert else 1.0
            self._step_mm[parse_pin(st.step_pin).name] = (name, sign * st.step_distance_mm)
        start = [float(v) for v in sim.start_position]
        # Motor positions (mm along each motor's own axis) when the step counters were 0.
        self._origin_mm = self._motors_from_toolhead(start[0], start[1], start[2])
        self._origin_mm["extruder"] = 0.0
        self._axes: dict[str, _Axis] = {}
        for name in ("x", "y", "z"):
            st = getattr(settings.steppers, name)
            if not st.endstop_pin:
                continue
            pin = parse_pin(st.endstop_pin, can_pull=True)
            ax = getattr(settings.printer.axes, name)
            at_min = (ax.position_endstop - ax.position_min) <= (ax.position_max - ax.position_endstop)
            self._axes[pin.name] = _Axis(name, pin.name, pin.invert, at_min, ax.position_endstop)
        self._last_clock: int | None = None

    # ------------------------------------------------------------------ kinematics
    def _motors_from_toolhead(self, x: float, y: float, z: float) -> dict[str, float]:
        if self.kinematics == "corexy":
            return {"x": x + y, "y": x - y, "z": z}
        return {"x": x, "y": y, "z": z}

    def motor_mm(self, positions: Mapping[str, int]) -> dict[str, float]:
        """Each motor's position in mm from the MCU's step counters (by step pin)."""
        out = dict(self._origin_mm)
        for pin, steps in positions.items():
            if pin in self._step_mm:
                name, mm = self._step_mm[pin]
                out[name] = self._origin_mm[name] + steps * mm
        return out

    def toolhead(self, positions: Mapping[str, int]) -> tuple[float, float, float, float]:
        m = self.motor_mm(positions)
        if self.kinematics == "corexy":
            x, y = 0.5 * (m["x"] + m["y"]), 0.5 * (m["x"] - m["y"])
        else:
            x, y = m["x"], m["y"]
        return (x, y, m["z"], m["extruder"])

    def rebooted(self, positions: Mapping[str, int]) -> None:
        """The MCU restarted: its counters restart at 0, the motors stay where they are."""
        self._origin_mm = self.motor_mm(positions)

    # ------------------------------------------------------------------ BoardModel
    def _advance(self, clock: int) -> None:
        if self._last_clock is None:
            self._last_clock = clock
            return
        dt = (clock - self._last_clock) / self.clock_freq
        if dt <= 0.0:
            return
        self._last_clock = clock
        steps = max(1, math.ceil(dt / MAX_THERMAL_STEP_S))
        for heater in self.heaters.values():
            duty = 0.0 if heater.name in self.faults.heater_dead else heater.duty
            fan = self.fan if heater.name == "extruder" else 0.0
            for _ in range(steps):
                heater.model.step(dt / steps, duty, fan)

    def adc_sample(self, pin: str, clock: int) -> int:
        self._advance(clock)
        heater = self._heaters_by_sensor.get(pin)
        if heater is None:
            return 0
        if heater.name in self.faults.thermistor_open:
            return self.adc_max
        if heater.name in self.faults.thermistor_short:
            return 0
        temp = (self.ambient_c if heater.name in self.faults.thermistor_loose
                else heater.model.sensor_c)
        fraction = heater.sensor.fraction(temp)
        return min(self.adc_max, max(0, int(round(fraction * self.adc_max))))

    def set_output(self, pin: str, duty: float, clock: int) -> None:
        self._advance(clock)
        self.outputs[pin] = duty
        heater = self._heaters_by_output.get(pin)
        if heater is not None:
            if duty > 0.0 and heater.duty <= 0.0:
                heater.on_since_clock = clock
            elif duty <= 0.0:
                heater.on_since_clock = None
            heater.duty = duty
        if pin == self.fan_pin:
            self.fan = duty

    def endstop_gradient(self, pin: str) -> dict[str, float]:
        """How far the coordinate an endstop watches moves per step of each motor (by
        step pin); empty for a pin that is no endstop. Both kinematics here are linear
        in the motor positions, so one step from zero gives the exact coefficient."""
        axis = self._axes.get(pin)
        if axis is None:
            return {}
        index = "xyz".index(axis.name)
        zero = dict.fromkeys(self._step_mm, 0)
        base = self.toolhead(zero)[index]
        return {step_pin: self.toolhead({**zero, step_pin: 1})[index] - base
                for step_pin in self._step_mm}

    def endstop_level(self, pin: str, clock: int, positions: Mapping[str, int]) -> int:
        axis = self._axes.get(pin)
        if axis is None:
            return 0
        if axis.name in self.faults.endstop_broken:
            return int(axis.invert)          # a cut wire: the switch never closes
        index = "xyz".index(axis.name)
        pos = self.toolhead(positions)[index]
        hit = (pos <= axis.position_endstop + 1e-9 if axis.trigger_at_min
               else pos >= axis.position_endstop - 1e-9)
        return int(hit) ^ int(axis.invert)

    def snapshot(self) -> dict:
        return {
            "heaters": {name: {"temperature": h.model.block_c, "sensor": h.model.sensor_c,
                               "duty": h.duty, "on_since_clock": h.on_since_clock}
                        for name, h in self.heaters.items()},
            "fan": self.fan,
            "outputs": dict(self.outputs),
            "faults": {k: sorted(v) for k, v in vars(self.faults).items()},
        }
