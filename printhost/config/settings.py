"""The whole configuration: one `Settings` made of every section, and what is derived
from more than one section (the state directory, the Pi's fitted devices, every heater
by name)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from printhost.config.control import ControlSettings, SimulationSettings
from printhost.config.devices import ChamberSettings, DevicesSettings
from printhost.config.fields import section
from printhost.config.heaters import HeaterSettings, HeatersSettings
from printhost.config.printer import (ExtruderSettings, FanSettings, FilamentSettings,
                                      FirmwareRetractionSettings,
                                      GCodeSettings, InputShaperSettings, McuSettings,
                                      PauseSettings, PrinterSettings, SteppersSettings)
from printhost.config.server import (AuthSettings, DiscoverySettings, JobsSettings,
                                     ServerSettings)


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = section(ServerSettings)
    auth: AuthSettings = section(AuthSettings)
    discovery: DiscoverySettings = section(DiscoverySettings)
    jobs: JobsSettings = section(JobsSettings)
    control: ControlSettings = section(ControlSettings)
    simulation: SimulationSettings = section(SimulationSettings)
    printer: PrinterSettings = section(PrinterSettings)
    steppers: SteppersSettings = section(SteppersSettings)
    extruder: ExtruderSettings = section(ExtruderSettings)
    input_shaper: InputShaperSettings = section(InputShaperSettings)
    mcu: McuSettings = section(McuSettings)
    gcode: GCodeSettings = section(GCodeSettings)
    firmware_retraction: FirmwareRetractionSettings = section(FirmwareRetractionSettings)
    heaters: HeatersSettings = section(HeatersSettings)
    fan: FanSettings = section(FanSettings)
    pause: PauseSettings = section(PauseSettings)
    filament: FilamentSettings = section(FilamentSettings)
    devices: DevicesSettings = section(DevicesSettings)
    chamber: ChamberSettings = section(ChamberSettings)
    source: str = field(default="<defaults>", metadata={"internal": True})

    def state_path(self) -> Path:
        return Path(os.path.expanduser(self.server.state_dir))

    def pi_devices(self) -> list[str]:
        """The keys of the devices fitted to the Pi itself ([devices] pins, [chamber])."""
        d, c = self.devices, self.chamber
        fitted = [f"devices.{name}" for name in ("psu", "status_led", "estop", "runout",
                                                 "hotend_fan", "controller_fan", "light")
                  if getattr(d, name).pin]
        if c.sensor != "none":
            fitted.append("chamber.sensor")
        if c.heater_pin:
            fitted.append("chamber.heater_pin")
        return fitted

    def heater_settings(self) -> dict[str, HeaterSettings]:
        """Every heater by name: extruder, heater_bed and, when fitted, chamber."""
        heaters = {"extruder": self.heaters.extruder, "heater_bed": self.heaters.heater_bed}
        if self.chamber.heater_pin:
            heaters["chamber"] = chamber_heater_settings(self.chamber)
        return heaters


def chamber_heater_settings(c: ChamberSettings) -> HeaterSettings:
    """The chamber heater as a generic heater: watermark control (a relay must not be
    switched at PWM rates), on a Pi GPIO, limits from [chamber]."""
    return HeaterSettings(min_temp=c.min_temp, max_temp=c.max_temp, max_power=1.0,
                          control="watermark", max_delta=c.max_delta, heater_pin=c.heater_pin,
                          sensor_pin="", sensor_type=c.sensor_type,
                          pullup_resistor=c.pullup_resistor)
