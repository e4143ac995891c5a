"""The machine: kinematics and axes, steppers, extruder, input shaping, the MCU link,
G-code dialect, firmware retraction, part fan and the pause sequence."""

from __future__ import annotations

from dataclasses import dataclass, field

from printhost.config.fields import setting


@dataclass(frozen=True)
class AxisSettings:
    """Travel range and homing of one linear axis (Klipper's [stepper_*] range keys)."""
    position_min: float = setting(0.0, min=-10000.0, max=10000.0, doc="lowest reachable position, mm")
    position_max: float = setting(235.0, min=-10000.0, max=10000.0, doc="highest reachable position, mm")
    position_endstop: float = setting(0.0, min=-10000.0, max=10000.0, doc="position after homing, mm")
    homing_speed: float = setting(50.0, min=0.1, max=1000.0, doc="homing speed, mm/s")


def _axis(maximum: float, speed: float = 50.0) -> AxisSettings:
    return AxisSettings(position_min=0.0, position_max=maximum, position_endstop=0.0,
                        homing_speed=speed)


@dataclass(frozen=True)
class AxesSettings:
    x: AxisSettings = field(default_factory=lambda: _axis(235.0))
    y: AxisSettings = field(default_factory=lambda: _axis(235.0))
    z: AxisSettings = field(default_factory=lambda: _axis(250.0, 10.0))


@dataclass(frozen=True)
class PrinterSettings:
    """Motion limits, with the meaning of Klipper's [printer] section."""
    kinematics: str = setting("cartesian", choices=("cartesian", "corexy"), doc="kinematics")
    max_velocity: float = setting(300.0, min=0.1, max=5000.0, doc="toolhead speed limit, mm/s")
    max_accel: float = setting(3000.0, min=1.0, max=1000000.0, doc="toolhead acceleration limit, mm/s^2")
    max_z_velocity: float = setting(15.0, min=0.1, max=5000.0, doc="Z speed limit, mm/s")
    max_z_accel: float = setting(100.0, min=1.0, max=1000000.0, doc="Z acceleration limit, mm/s^2")
    square_corner_velocity: float = setting(5.0, min=0.0, max=1000.0,
                                            doc="speed through a 90 degree corner, mm/s")
    minimum_cruise_ratio: float = setting(0.5, min=0.0, max=0.99,
                                          doc="share of each move that should cruise; limits the "
                                              "top speed of short zig-zag moves")
    max_extrude_only_velocity: float = setting(50.0, min=0.1, max=5000.0,
                                               doc="speed limit of moves that only extrude, mm/s")
    max_extrude_only_accel: float = setting(1500.0, min=1.0, max=1000000.0,
                                            doc="acceleration limit of moves that only extrude, mm/s^2")
    power_on_position: list = setting(
         [0.0, 0.0, 0.0],
         doc="where the host believes the toolhead is when it starts, before homing (x, y, z "
             "mm); as Klipper, 0 0 0. Only a belief: moves are refused until an axis is "
             "homed, and G28 moves 1.5 times the travel towards the endstop from here")
    axes: AxesSettings = field(default_factory=AxesSettings)


@dataclass(frozen=True)
class StepperSettings:
    """Step geometry of one stepper motor (Klipper's rotation_distance keys)."""
    rotation_distance: float = setting(40.0, min=1e-6, max=10000.0, exclusive_min=True,
                                       doc="distance moved per full motor rotation, mm")
    microsteps: int = setting(16, min=1, max=256, doc="driver microsteps per full step")
    full_steps_per_rotation: int = setting(200, min=1, max=10000, doc="full steps per rotation")
    gear_ratio: float = setting(1.0, min=1e-6, max=1000.0, exclusive_min=True,
                                doc="motor rotations per rotation of the driven pulley or gear")
    step_pin: str = setting("", doc="MCU pin of the driver's STEP input (Klipper pin syntax)")
    dir_pin: str = setting("", doc="MCU pin of the driver's DIR input; ! inverts the direction")
    enable_pin: str = setting("", doc="MCU pin of the driver's ENABLE input ('' if none); "
                                      "usually inverted (!)")
    endstop_pin: str = setting("", doc="MCU pin of the axis endstop ('' if none); ^ asks for the "
                                       "pull-up, ! inverts")

    @property
    def step_distance_mm(self) -> float:
        """Distance of one microstep; the stepper's smallest move."""
        return self.rotation_distance / (self.full_steps_per_rotation * self.microsteps
                                         * self.gear_ratio)


# Default pins: those of a common STM32F103 board (BigTreeTech SKR mini E3 V2), which the
# simulated MCU also uses, so the default configuration is a real board's.
def _stepper(rotation: float, step: str, direction: str, enable: str,
             endstop: str = "") -> StepperSettings:
    return StepperSettings(rotation_distance=rotation, step_pin=step, dir_pin=direction,
                           enable_pin=enable, endstop_pin=endstop)


@dataclass(frozen=True)
class SteppersSettings:
    """One stepper per axis (cartesian: x, y, z; corexy: x and y are the A and B motors)."""
    x: StepperSettings = field(default_factory=lambda: _stepper(40.0, "PB13", "!PB12", "!PB14",
                                                                "^PC0"))
    y: StepperSettings = field(default_factory=lambda: _stepper(40.0, "PB10", "!PB2", "!PB11",
                                                                "^PC1"))
    z: StepperSettings = field(default_factory=lambda: _stepper(8.0, "PB0", "PC5", "!PB1",
                                                                "^PC2"))
    extruder: StepperSettings = field(default_factory=lambda: _stepper(33.5, "PB3", "!PB4",
                                                                       "!PD2"))


@dataclass(frozen=True)
class ExtruderSettings:
    """Extrusion geometry and limits (the motion keys of Klipper's [extruder])."""
    nozzle_diameter: float = setting(0.4, min=0.01, max=5.0, doc="nozzle diameter, mm")
    filament_diameter: float = setting(1.75, min=0.1, max=10.0, doc="filament diameter, mm")
    max_extrude_cross_section: float = setting(
         0.0, min=0.0, max=1000.0,
         doc="largest extrusion cross-section, mm^2; 0 means 4 x nozzle_diameter^2")
    max_extrude_only_distance: float = setting(50.0, min=0.0, max=100000.0,
                                               doc="longest extrude-only move, mm")
    instantaneous_corner_velocity: float = setting(1.0, min=0.0, max=1000.0,
                                                   doc="largest instant change of extruder speed, mm/s")
    pressure_advance: float = setting(0.0, min=0.0, max=10.0, doc="pressure advance, seconds")
    pressure_advance_smooth_time: float = setting(0.040, min=0.0, max=0.2, exclusive_min=True,
                                                  doc="averaging window of pressure advance, s "
                                                      "(above 0)")
    min_extrude_temp: float = setting(170.0, min=0.0, max=1000.0,
                                      doc="below this hotend temperature the extruder does not move "
                                          "for pause retracts")

    @property
    def cross_section_limit_mm2(self) -> float:
        return self.max_extrude_cross_section or 4.0 * self.nozzle_diameter ** 2


SHAPER_TYPES = ("zv", "mzv", "zvd", "ei", "2hump_ei", "3hump_ei")
# The multi-hump shapers are only defined up to these damping ratios (Klipper's limits).
SHAPER_MAX_DAMPING = {"zv": 0.99, "mzv": 0.99, "zvd": 0.99, "ei": 0.4, "2hump_ei": 0.3,
                      "3hump_ei": 0.2}


@dataclass(frozen=True)
class InputShaperSettings:
    """Input shaping on X and Y (Klipper's [input_shaper] keys); frequency 0 disables an axis."""
    shaper_type_x: str = setting("mzv", choices=SHAPER_TYPES, doc="shaper on X")
    shaper_freq_x: float = setting(0.0, min=0.0, max=1000.0, doc="shaper frequency on X, Hz (0 = off)")
    damping_ratio_x: float = setting(0.1, min=0.0, max=0.99, doc="damping ratio on X")
    shaper_type_y: str = setting("mzv", choices=SHAPER_TYPES, doc="shaper on Y")
    shaper_freq_y: float = setting(0.0, min=0.0, max=1000.0, doc="shaper frequency on Y, Hz (0 = off)")
    damping_ratio_y: float = setting(0.1, min=0.0, max=0.99, doc="damping ratio on Y")


@dataclass(frozen=True)
class McuSettings:
    """The stepper MCU and the step stream sent to it."""
    max_stepper_error: float = setting(0.000025, min=0.0, max=0.01,
                                       doc="how early a compressed step may come, s (never late)")
    serial: str = setting("", doc="serial device of the board, e.g. /dev/serial/by-id/usb-Klipper_"
                                  "stm32f103xe_...-if00 (used by backend = \"mcu\"; the simulated "
                                  "printer makes its own pseudo-terminal)")
    baud: int = setting(250000, min=1200, max=4000000,
                        doc="UART baud rate (ignored by USB boards, which run at USB speed)")
    restart_method: str = setting("command", choices=("command", "none"),
                                  doc="how printhost restarts the firmware when the board holds "
                                      "another configuration or is shut down: command sends the "
                                      "firmware's reset command; none asks for a power cycle")


@dataclass(frozen=True)
class GCodeSettings:
    """G-code dialect options."""
    arc_resolution: float = setting(1.0, min=0.001, max=100.0,
                                    doc="G2/G3 arcs are split into segments of about this length (at least it, as Klipper does), mm")


@dataclass(frozen=True)
class FirmwareRetractionSettings:
    """G10/G11 firmware retraction (Klipper's [firmware_retraction] keys)."""
    retract_length: float = setting(0.0, min=0.0, max=100.0, doc="retract length, mm")
    retract_speed: float = setting(20.0, min=0.1, max=1000.0, doc="retract speed, mm/s")
    unretract_extra_length: float = setting(0.0, min=0.0, max=100.0,
                                            doc="extra filament pushed on unretract, mm")
    unretract_speed: float = setting(10.0, min=0.1, max=1000.0, doc="unretract speed, mm/s")


@dataclass(frozen=True)
class FanSettings:
    """The part-cooling fan (M106/M107), on an MCU pin."""
    pin: str = setting("PC6", doc="MCU pin of the part fan (soft PWM)")
    cycle_time: float = setting(0.010, min=0.0001, max=1.0, doc="PWM period, s")


@dataclass(frozen=True)
class PauseSettings:
    """What happens to the toolhead when a print is paused, resumed or cancelled."""
    retract_mm: float = setting(1.0, min=0.0, max=50.0, doc="filament retracted on pause, mm")
    retract_speed: float = setting(35.0, min=0.1, max=500.0, doc="retract/unretract speed, mm/s")
    lift_z_mm: float = setting(5.0, min=0.0, max=100.0,
                               doc="Z lift on pause (clamped to the Z travel range), mm")
    park: bool = setting(True, doc="move to park_x/park_y after lifting")
    park_x: float = setting(0.0, min=-10000.0, max=10000.0, doc="park position X, mm")
    park_y: float = setting(0.0, min=-10000.0, max=10000.0, doc="park position Y, mm")
    travel_speed: float = setting(100.0, min=0.1, max=5000.0, doc="speed of park and return moves, mm/s")
    z_speed: float = setting(10.0, min=0.1, max=5000.0, doc="speed of lift and lower moves, mm/s")
    park_on_cancel: bool = setting(True, doc="lift and park after a cancel")


@dataclass(frozen=True)
class FilamentSettings:
    """Load and unload sequences run by `POST /api/v1/printer/filament/load|unload`.

    Each is G-code, one command per line, run with relative extrusion (M83) whatever
    mode the printer is in (the mode is restored after). Only commands the printer
    executes are allowed, and each extrude-only move obeys
    `extruder.max_extrude_only_distance` (50 mm by default): a bowden printer splits a
    long load into several lines or raises that limit. The extruder must be at
    `extruder.min_extrude_temp` or above before either sequence starts."""
    load_gcode: str = setting("G1 E45 F600\nG1 E25 F150",
                              doc="G-code run to load filament (relative E), one command "
                                  "per line")
    unload_gcode: str = setting("G1 E5 F300\nG1 E-50 F1800",
                                doc="G-code run to unload filament (relative E): a short "
                                    "push to soften the tip, then a fast retract")

