"""Heaters (`[heaters.extruder]`, `[heaters.heater_bed]`): pins, sensors, control law
and the safety limits every heater is checked against."""

from __future__ import annotations

from dataclasses import dataclass, field

from printhost.config.fields import setting


@dataclass(frozen=True)
class HeaterSettings:
    """One heater: limits, control law and PID gains (Klipper's [extruder]/[heater_bed] keys)."""
    min_temp: float = setting(0.0, min=-273.0, max=1000.0,
                              doc="a reading below this is a sensor fault: shutdown")
    max_temp: float = setting(280.0, min=0.0, max=1000.0,
                              doc="a reading above this is a fault: shutdown; targets above are refused")
    max_power: float = setting(1.0, min=0.01, max=1.0, doc="largest heater duty cycle")
    control: str = setting("pid", choices=("pid", "watermark"),
                           doc="control law: pid, or watermark (bang-bang within +-max_delta)")
    pid_kp: float = setting(25.0, min=0.0, max=10000.0, doc="PID proportional gain (Klipper units)")
    pid_ki: float = setting(1.0, min=0.0, max=10000.0, doc="PID integral gain (Klipper units)")
    pid_kd: float = setting(115.0, min=0.0, max=100000.0, doc="PID derivative gain (Klipper units)")
    max_delta: float = setting(2.0, min=0.0, max=100.0,
                               doc="watermark control: heater on below target - max_delta, "
                                   "off above target + max_delta, C")
    heater_pin: str = setting("PC8", doc="MCU pin switching the heater (soft PWM)")
    sensor_pin: str = setting("PA0", doc="MCU ADC pin of the thermistor")
    sensor_type: str = setting("EPCOS 100K B57560G104F",
                               doc="sensor type: a preset name from docs/devices.md")
    pullup_resistor: float = setting(4700.0, min=1.0, max=10000000.0,
                                     doc="pull-up resistor of the thermistor divider, ohm")
    pwm_cycle_time: float = setting(0.1, min=0.001, max=1.0,
                                    doc="soft PWM period of the heater pin, s")


def _bed_heater() -> HeaterSettings:
    return HeaterSettings(min_temp=0.0, max_temp=130.0, max_power=1.0,
                          pid_kp=70.0, pid_ki=1.2, pid_kd=900.0,
                          heater_pin="PC9", sensor_pin="PC3", sensor_type="Generic 3950")


@dataclass(frozen=True)
class HeatersSettings:
    extruder: HeaterSettings = field(default_factory=HeaterSettings)
    heater_bed: HeaterSettings = field(default_factory=_bed_heater)
