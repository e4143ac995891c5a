"""Devices wired to the Pi itself (`[devices]`: PSU relay, status LED, e-stop, runout
sensor, fans) and the chamber (`[chamber]`): an I2C sensor and an optional heater."""

from __future__ import annotations

from dataclasses import dataclass

from printhost.config.fields import section, setting


_GPIO_DOC = "Pi GPIO pin, BCM name GPIO0..GPIO27; empty: not fitted"


@dataclass(frozen=True)
class PsuDeviceSettings:
    """A relay (or SSR) on a Pi GPIO switching the printer's power supply (M80/M81)."""
    pin: str = setting("", doc=_GPIO_DOC)
    active_high: bool = setting(True, doc="false for relay boards that switch on a low input")
    on_at_start: bool = setting(True, doc="switch the printer's power on when printhost starts")
    off_on_emergency: bool = setting(True, doc="cut the printer's power on an emergency stop "
                                               "(button or M112)")


@dataclass(frozen=True)
class StatusLedDeviceSettings:
    """A status LED on a Pi GPIO: steady when ready, slow blink while printing, fast
    blink after a fault."""
    pin: str = setting("", doc=_GPIO_DOC)
    active_high: bool = setting(True, doc="false when the LED is wired from 3.3 V to the pin")


@dataclass(frozen=True)
class EStopDeviceSettings:
    """An emergency-stop button on a Pi GPIO: pressing it shuts the printer down at once."""
    pin: str = setting("", doc=_GPIO_DOC)
    pull_up: bool = setting(True, doc="internal pull-up with the switch to GND; false: "
                                      "pull-down with the switch to 3.3 V")
    normally_closed: bool = setting(True, doc="the contact opens when pressed, so a cut wire "
                                              "also stops the printer")


@dataclass(frozen=True)
class RunoutDeviceSettings:
    """A filament runout switch on a Pi GPIO: losing filament pauses the print."""
    pin: str = setting("", doc=_GPIO_DOC)
    pull_up: bool = setting(True, doc="internal pull-up with the switch to GND; false: pull-down")
    present_when_closed: bool = setting(True, doc="the filament holds the contact closed; "
                                                  "false for switches that open with filament in")
    debounce_s: float = setting(0.1, min=0.001, max=5.0,
                                doc="the switch must be stable this long before it counts, s")


@dataclass(frozen=True)
class PiFanDeviceSettings:
    """A PWM fan on a Pi GPIO (through a MOSFET or the fan's PWM input)."""
    pin: str = setting("", doc=_GPIO_DOC)
    active_high: bool = setting(True, doc="false when the pin is low while the fan runs")
    pwm_frequency_hz: float = setting(100.0, min=1.0, max=10000.0, doc="PWM frequency, Hz")
    max_power: float = setting(1.0, min=0.01, max=1.0, doc="duty cycle at full speed")
    off_below: float = setting(0.0, min=0.0, max=1.0, doc="speeds below this turn the fan off")
    fan_speed: float = setting(1.0, min=0.0, max=1.0, doc="speed while the fan is on")


@dataclass(frozen=True)
class HotendFanDeviceSettings(PiFanDeviceSettings):
    """The hotend (heat-break) fan: on while the extruder is hot or has a target."""
    heater_temp: float = setting(50.0, min=0.0, max=200.0,
                                 doc="the fan runs while the extruder is above this, C")


@dataclass(frozen=True)
class ControllerFanDeviceSettings(PiFanDeviceSettings):
    """The electronics fan: on while the printer moves or heats, then for idle_timeout_s."""
    idle_timeout_s: float = setting(30.0, min=0.0, max=3600.0,
                                    doc="how long the fan keeps running after the last motion "
                                        "or heating, s")


@dataclass(frozen=True)
class LightDeviceSettings:
    """Enclosure or case lights on a Pi GPIO (through a MOSFET), dimmable by PWM;
    switched with `POST /api/v1/printer/outputs/light`."""
    pin: str = setting("", doc=_GPIO_DOC)
    active_high: bool = setting(True, doc="false when the pin is low while the light is on")
    pwm_frequency_hz: float = setting(1000.0, min=1.0, max=10000.0,
                                      doc="PWM frequency, Hz (high enough not to flicker)")
    brightness_at_start: float = setting(0.0, min=0.0, max=1.0,
                                         doc="brightness when printhost starts, 0..1")


@dataclass(frozen=True)
class DevicesSettings:
    """Devices wired to the Raspberry Pi itself (GPIO through gpiozero, I2C through smbus2)."""
    backend: str = setting("simulated", choices=("simulated", "pi"),
                           doc="simulated: gpiozero's mock pins and a simulated I2C bus, with a "
                               "control socket to press buttons and inject faults; pi: the "
                               "Pi's real pins (gpiozero's default pin factory) and /dev/i2c-N. "
                               "Required when control.backend = \"mcu\" and any device is "
                               "fitted: a real printer never falls back to simulated devices")
    i2c_bus: int = setting(1, min=0, max=31, doc="I2C bus number (/dev/i2c-N); 1 is the header's")
    psu: PsuDeviceSettings = section(PsuDeviceSettings)
    status_led: StatusLedDeviceSettings = section(StatusLedDeviceSettings)
    estop: EStopDeviceSettings = section(EStopDeviceSettings)
    runout: RunoutDeviceSettings = section(RunoutDeviceSettings)
    hotend_fan: HotendFanDeviceSettings = section(HotendFanDeviceSettings)
    controller_fan: ControllerFanDeviceSettings = section(ControllerFanDeviceSettings)
    light: LightDeviceSettings = section(LightDeviceSettings)


@dataclass(frozen=True)
class ChamberSettings:
    """Chamber sensor on the Pi's I2C bus, and an optional chamber heater on a Pi GPIO."""
    sensor: str = setting("none", choices=("none", "aht10", "aht20", "ads1115"),
                          doc="none; aht10/aht20: digital temperature and humidity sensor; "
                              "ads1115: a thermistor divider read by an ADS1115 ADC")
    i2c_address: int = setting(0, min=0, max=0x77,
                               doc="0: the chip's default (0x38 AHT10/AHT20, 0x48 ADS1115)")
    adc_channel: int = setting(0, min=0, max=3, doc="ads1115: input of the thermistor divider")
    sensor_type: str = setting("Generic 3950", doc="ads1115: thermistor preset (docs/devices.md)")
    pullup_resistor: float = setting(4700.0, min=1.0, max=10000000.0,
                                     doc="ads1115: pull-up of the divider, ohm")
    reference_v: float = setting(3.3, min=0.1, max=5.5,
                                 doc="ads1115: voltage at the top of the divider, V")
    poll_interval_s: float = setting(0.25, min=0.05, max=0.25,
                                     doc="time between sensor readings, s (the heater shuts down "
                                         "after 0.7 s without a good reading)")
    heater_pin: str = setting("", doc="Pi GPIO of the chamber heater's relay or SSR; empty: none")
    heater_active_high: bool = setting(True, doc="false for relays that switch on a low input")
    min_temp: float = setting(0.0, min=-40.0, max=100.0,
                              doc="a reading below this is a sensor fault: shutdown")
    max_temp: float = setting(70.0, min=1.0, max=120.0,
                              doc="a reading above this is a fault: shutdown; targets above are refused")
    max_delta: float = setting(1.0, min=0.1, max=20.0,
                               doc="the heater switches on below target - max_delta and off "
                                   "above target + max_delta, C")
    check_gain_time: float = setting(180.0, min=10.0, max=3600.0,
                                     doc="a rising target must gain 2 C within this time, s")
