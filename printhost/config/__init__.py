"""TOML configuration loaded into typed, validated settings.

Every section of the file maps onto one frozen dataclass, grouped by the part of the
system it configures:

- `server`: the API listener and its limits, authentication, mDNS discovery;
- `control`: the control process and the simulated printer;
- `printer`: kinematics, steppers, extruder, input shaping, MCU link, G-code dialect,
  part fan, pause sequence;
- `heaters`: every heater's pins, control law and safety limits;
- `devices`: the Pi's own devices and the chamber;
- `settings`: `Settings`, the whole file, and what is derived from several sections.

`loader` walks a TOML document against those dataclasses, so an unknown key, a wrong
type or an out-of-range value is reported with the file, the dotted key and the
problem before anything starts: a print host that guesses at a typo in `max_temp` is a
fire risk. Constraints live next to the field they constrain (`fields.setting(min=...,
max=...)`), so the checks, the defaults and the documentation in `docs/config.md` have
one source.

Everything public is re-exported here: callers import from `printhost.config`.
"""

from printhost.config.control import (ControlSettings, SimulationSettings,
                                      ThermalBodySettings)
from printhost.config.devices import (ChamberSettings, ControllerFanDeviceSettings,
                                      DevicesSettings, EStopDeviceSettings,
                                      HotendFanDeviceSettings, PiFanDeviceSettings,
                                      PsuDeviceSettings, RunoutDeviceSettings,
                                      StatusLedDeviceSettings)
from printhost.config.fields import ConfigError
from printhost.config.heaters import HeaterSettings, HeatersSettings
from printhost.config.printer import (SHAPER_MAX_DAMPING, SHAPER_TYPES,
                                      AxesSettings, AxisSettings, ExtruderSettings,
                                      FanSettings, FirmwareRetractionSettings, GCodeSettings,
                                      InputShaperSettings, McuSettings, PauseSettings,
                                      PrinterSettings, StepperSettings, SteppersSettings)
from printhost.config.server import (AuthSettings, DiscoverySettings,
                                     ServerSettings)
from printhost.config.settings import Settings, chamber_heater_settings
from printhost.config.loader import (describe, load_settings, parse_settings,
                                     with_overrides)

__all__ = [
    "AuthSettings",
    "AxesSettings",
    "AxisSettings",
    "ChamberSettings",
    "ConfigError",
    "ControlSettings",
    "ControllerFanDeviceSettings",
    "DevicesSettings",
    "DiscoverySettings",
    "EStopDeviceSettings",
    "ExtruderSettings",
    "FanSettings",
    "FirmwareRetractionSettings",
    "GCodeSettings",
    "HeaterSettings",
    "HeatersSettings",
    "HotendFanDeviceSettings",
    "InputShaperSettings",
    "McuSettings",
    "PauseSettings",
    "PiFanDeviceSettings",
    "PrinterSettings",
    "PsuDeviceSettings",
    "RunoutDeviceSettings",
    "SHAPER_MAX_DAMPING",
    "SHAPER_TYPES",
    "ServerSettings",
    "Settings",
    "SimulationSettings",
    "StatusLedDeviceSettings",
    "StepperSettings",
    "SteppersSettings",
    "ThermalBodySettings",
    "chamber_heater_settings",
    "describe",
    "load_settings",
    "parse_settings",
    "with_overrides",
]
