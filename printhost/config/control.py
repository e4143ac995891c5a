"""The control process (`[control]`) and the simulated printer it drives when no board is
attached (`[simulation]`, with the thermal bodies of its heaters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from printhost.config.fields import setting


@dataclass(frozen=True)
class ControlSettings:
    """The control process and its link to the API."""
    backend: str = setting("simulated", choices=("simulated", "mcu"),
                           doc="simulated: printhost starts its simulated Klipper MCU on a "
                               "pseudo-terminal and drives it like a board; mcu: a real board "
                               "running Klipper firmware at [mcu] serial")
    status_hz: float = setting(10.0, min=4.0, max=200.0,
                               doc="rate at which the control process publishes status (and "
                                   "after every command); heartbeat_timeout_s must span at "
                                   "least 4 snapshots")
    command_timeout_s: float = setting(5.0, min=0.1, max=60.0,
                                       doc="how long the API waits for the control process to answer")
    buffer_time_s: float = setting(0.5, min=0.05, max=5.0,
                                   doc="motion queued ahead of the toolhead (seconds of print time); "
                                       "bounds how long moves keep running after pause or cancel")
    heartbeat_timeout_s: float = setting(1.0, min=0.2, max=10.0,
                                         doc="a status block older than this marks the control process frozen")


@dataclass(frozen=True)
class ThermalBodySettings:
    """One heated body of the simulated printer (a lumped thermal model)."""
    heater_power_w: float = setting(40.0, min=0.1, max=5000.0, doc="heater power at 100 % duty")
    heat_capacity_j_k: float = setting(12.0, min=0.01, max=100000.0, doc="heat capacity of the block")
    loss_w_k: float = setting(0.09, min=0.0001, max=1000.0, doc="heat loss to ambient per kelvin")
    fan_loss_w_k: float = setting(0.0, min=0.0, max=1000.0,
                                  doc="extra loss per kelvin at 100 % part fan")
    sensor_lag_s: float = setting(2.0, min=0.0, max=120.0, doc="time constant of the thermistor")


def _hotend_body() -> ThermalBodySettings:
    return ThermalBodySettings(heater_power_w=40.0, heat_capacity_j_k=12.0, loss_w_k=0.09,
                               fan_loss_w_k=0.04, sensor_lag_s=2.0)


def _chamber_body() -> ThermalBodySettings:
    return ThermalBodySettings(heater_power_w=200.0, heat_capacity_j_k=8000.0, loss_w_k=5.0,
                               fan_loss_w_k=0.0, sensor_lag_s=10.0)


def _bed_body() -> ThermalBodySettings:
    return ThermalBodySettings(heater_power_w=220.0, heat_capacity_j_k=450.0, loss_w_k=1.6,
                               fan_loss_w_k=0.0, sensor_lag_s=4.0)


@dataclass(frozen=True)
class SimulationSettings:
    """The simulated printer used when no hardware is attached."""
    time_factor: float = setting(1.0, min=0.1, max=1000.0,
                                 doc="simulated seconds per wall-clock second (tests run faster)")
    ambient_c: float = setting(22.0, min=-20.0, max=60.0, doc="room temperature")
    start_position: list = setting([117.5, 117.5, 10.0],
                                   doc="where the simulated toolhead physically stands at "
                                       "power-on, before homing (x, y, z mm); the host's "
                                       "belief is printer.power_on_position")
    hotend: ThermalBodySettings = field(default_factory=_hotend_body)
    bed: ThermalBodySettings = field(default_factory=_bed_body)
    chamber: ThermalBodySettings = field(default_factory=_chamber_body)
    chamber_humidity_pct: float = setting(40.0, min=0.0, max=100.0,
                                          doc="relative humidity the simulated chamber sensor reports")
