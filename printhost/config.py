"""TOML configuration loaded into typed, validated settings.

Every section of the file maps onto one frozen dataclass below. The loader
(`printhost.config_loader`, re-exported here) walks the TOML document against those
dataclasses, so an unknown key, a wrong type or an
out-of-range value is reported with the file, the dotted key and the problem before
anything starts: a print host that guesses at a typo in `max_temp` is a fire risk.

Constraints live next to the field they constrain (`_field(min=..., max=...)`), so
the checks, the defaults and the documentation in `docs/config.md` have one source.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration file could not be loaded; the message names file, key and problem."""


def _field(default: Any, *, min: float | None = None, max: float | None = None,
           choices: tuple[str, ...] | None = None, doc: str = "",
           exclusive_min: bool = False) -> Any:
    meta = {"min": min, "max": max, "choices": choices, "doc": doc,
            "exclusive_min": exclusive_min}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"doc": cls.__doc__ or ""})


# --------------------------------------------------------------------------- server

@dataclass(frozen=True)
class ServerSettings:
    """HTTP API listener and where persistent state lives."""
    host: str = _field("0.0.0.0", doc="address the API listens on")
    port: int = _field(7130, min=1, max=65535, doc="TCP port of the API")
    state_dir: str = _field("~/.local/state/printhost",
                            doc="directory for the store, uploaded files and secrets")
    max_body_bytes: int = _field(65536, min=1024, max=16 * 1024 * 1024,
                                 doc="largest JSON request body accepted (413 above)")
    max_upload_bytes: int = _field(256 * 1024 * 1024, min=1024, max=8 * 1024 ** 3,
                                   doc="largest G-code upload accepted (413 above)")
    log_level: str = _field("info", choices=("debug", "info", "warning", "error"),
                            doc="log verbosity")
    max_json_depth: int = _field(16, min=2, max=256,
                                 doc="deepest nesting of arrays and objects accepted in a JSON "
                                     "request body (413 deeper)")
    rate_limit_per_min: float = _field(
        30.0, min=0.0, max=100000.0,
        doc="sustained requests per minute one client address may make to each expensive "
            "endpoint (upload, print start, PID tune start and save); 429 with Retry-After "
            "beyond it; 0 switches the limit off")
    rate_limit_burst: int = _field(10, min=1, max=100000,
                                   doc="requests a client may make to one expensive endpoint "
                                       "in a quick burst before rate_limit_per_min applies")
    cors_origins: list = _field([], doc="web origins (scheme://host[:port]) whose pages may "
                                        "call the API from a browser; empty: none")
    cors_max_age_s: int = _field(600, min=0, max=86400,
                                 doc="how long a browser may cache a CORS preflight answer")
    health_min_free_mb: int = _field(100, min=0, max=1024 * 1024,
                                     doc="free space in the state directory below which "
                                         "GET /api/v1/health reports the disk degraded")
    max_connections: int = _field(
        256, min=4, max=16384,
        doc="open client connections held at once; at the limit a new connection replaces "
            "the one that has waited longest without sending a request, or is refused with "
            "503 when every connection is busy (keep well below the unit's LimitNOFILE)")
    header_timeout_s: float = _field(
        10.0, min=0.1, max=600.0,
        doc="time a client has to send a complete request head (line and headers) after it "
            "connects or starts a request; the connection is closed after it (408 if it "
            "sent part of a head)")
    body_idle_timeout_s: float = _field(
        30.0, min=0.1, max=3600.0,
        doc="longest pause allowed between two pieces of a request body (an upload); the "
            "connection is closed after it")
    keep_alive_timeout_s: float = _field(
        5.0, min=0.1, max=600.0,
        doc="how long an idle connection is kept open after a response for the client's "
            "next request")
    access_log: str = _field("all", choices=("all", "errors", "off"),
                             doc="the JSON record logged per request (logger "
                                 "printhost.api.access): for every request, only for those "
                                 "answered with an error status (400 and above), or none")

    def __post_init__(self) -> None:
        # A web origin as browsers send it: scheme, host (name, IPv4 or [IPv6]), optional port.
        import re
        origin_re = re.compile(r"https?://(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"
                               r"(?::[0-9]{1,5})?", re.IGNORECASE)
        for origin in self.cors_origins:
            if not isinstance(origin, str) or not origin_re.fullmatch(origin):
                raise ConfigError(f"server.cors_origins: {origin!r} is not an origin "
                                  "like https://example.net or http://10.0.0.5:8080 "
                                  "(scheme, host and optional port; no path, no wildcard)")


@dataclass(frozen=True)
class AuthSettings:
    """Users, tokens, API keys and brute-force protection (docs/security.md)."""
    backend: str = _field("store", choices=("store", "file", "http"),
                          doc="where users and passwords come from: store (the users in the "
                              "state directory, managed with the API and `printhost user`), "
                              "file (the read-only TOML file users_file) or http (an external "
                              "service at http_url)")
    users_file: str = _field("", doc="TOML file of users for backend = \"file\" "
                                     "(docs/security.md has the format)")
    http_url: str = _field("", doc="http(s) URL that checks a user name and password, for "
                                   "backend = \"http\" (docs/security.md has the protocol)")
    http_timeout_s: float = _field(5.0, min=0.5, max=60.0,
                                   doc="how long a login waits for the http backend")
    http_token_file: str = _field("", doc="file holding a bearer token sent to http_url; "
                                          "empty sends none")
    token_ttl_s: int = _field(3600, min=60, max=30 * 86400,
                              doc="lifetime of an access token, s")
    refresh_ttl_s: int = _field(7 * 86400, min=300, max=90 * 86400,
                                doc="lifetime of a refresh token, s; also how long a rotated-out "
                                    "signing key is still accepted")
    issuer: str = _field("printhost", doc="JWT `iss` and `aud` claim")
    jwt_secret_file: str = _field(
        "", doc="file holding the token signing secret (further lines: earlier secrets still "
                "accepted); empty means <state_dir>/jwt_secret. The environment variable "
                "PRINTHOST_JWT_SECRET overrides both")
    password_scrypt_log2_n: int = _field(14, min=10, max=20,
                                         doc="scrypt cost: N = 2^this; memory per hash is "
                                             "128 * r * N bytes (16 MiB by default)")
    password_scrypt_r: int = _field(8, min=1, max=32, doc="scrypt block size r")
    password_scrypt_p: int = _field(1, min=1, max=16, doc="scrypt parallelism p")
    login_max_failures: int = _field(5, min=1, max=1000,
                                     doc="failed logins for one user name from one address "
                                         "before lockout (four times as many for a user name "
                                         "from anywhere, or for an address)")
    login_window_s: float = _field(300.0, min=1.0, max=86400.0,
                                   doc="window in which failed logins are counted")
    login_lockout_s: float = _field(60.0, min=1.0, max=86400.0,
                                    doc="first lockout; each further lockout of the same key "
                                        "doubles it")
    login_lockout_max_s: float = _field(3600.0, min=1.0, max=7 * 86400.0,
                                        doc="longest lockout; a key without failures for this "
                                            "long starts again from login_lockout_s")
    setup_code_ttl_s: int = _field(3600, min=60, max=7 * 86400,
                                   doc="how long a first-boot setup code is valid")
    api_key_ttl_days: int = _field(365, min=1, max=3650,
                                   doc="lifetime of an API key when its creator gives none")

    def __post_init__(self) -> None:
        if 128 * self.password_scrypt_r * 2 ** self.password_scrypt_log2_n > 256 * 1024 ** 2:
            raise ConfigError("auth.password_scrypt_r: 128 * r * 2^password_scrypt_log2_n "
                              "must not exceed 256 MiB")
        if self.login_lockout_max_s < self.login_lockout_s:
            raise ConfigError("auth.login_lockout_max_s: must not be below login_lockout_s")
        if self.backend == "file" and not self.users_file:
            raise ConfigError("auth.users_file: required with backend = \"file\"")
        if self.backend == "http" and not self.http_url.startswith(("http://", "https://")):
            raise ConfigError("auth.http_url: an http:// or https:// URL is required with "
                              "backend = \"http\"")


@dataclass(frozen=True)
class DiscoverySettings:
    """mDNS/DNS-SD advertisement on the LAN."""
    enabled: bool = _field(True, doc="advertise _printhost._tcp and _http._tcp")
    instance_name: str = _field("", doc="service instance name; empty means 'printhost on <hostname>'")

    def display_name(self) -> str:
        """The name announced over mDNS and shown on the home page."""
        return self.instance_name or f"printhost on {os.uname().nodename}"


# --------------------------------------------------------------------------- control

@dataclass(frozen=True)
class ControlSettings:
    """The control process and its link to the API."""
    backend: str = _field("simulated", choices=("simulated", "mcu"),
                          doc="simulated: printhost starts its simulated Klipper MCU on a "
                              "pseudo-terminal and drives it like a board; mcu: a real board "
                              "running Klipper firmware at [mcu] serial")
    status_hz: float = _field(25.0, min=20.0, max=200.0,
                              doc="rate at which the control process publishes status")
    command_timeout_s: float = _field(5.0, min=0.1, max=60.0,
                                      doc="how long the API waits for the control process to answer")
    buffer_time_s: float = _field(0.5, min=0.05, max=5.0,
                                  doc="motion queued ahead of the toolhead (seconds of print time); "
                                      "bounds how long moves keep running after pause or cancel")
    heartbeat_timeout_s: float = _field(1.0, min=0.2, max=10.0,
                                        doc="a status block older than this marks the control process frozen")


@dataclass(frozen=True)
class ThermalBodySettings:
    """One heated body of the simulated printer (a lumped thermal model)."""
    heater_power_w: float = _field(40.0, min=0.1, max=5000.0, doc="heater power at 100 % duty")
    heat_capacity_j_k: float = _field(12.0, min=0.01, max=100000.0, doc="heat capacity of the block")
    loss_w_k: float = _field(0.09, min=0.0001, max=1000.0, doc="heat loss to ambient per kelvin")
    fan_loss_w_k: float = _field(0.0, min=0.0, max=1000.0,
                                 doc="extra loss per kelvin at 100 % part fan")
    sensor_lag_s: float = _field(2.0, min=0.0, max=120.0, doc="time constant of the thermistor")


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
    time_factor: float = _field(1.0, min=0.1, max=1000.0,
                                doc="simulated seconds per wall-clock second (tests run faster)")
    ambient_c: float = _field(22.0, min=-20.0, max=60.0, doc="room temperature")
    start_position: list = _field([117.5, 117.5, 10.0],
                                  doc="where the simulated toolhead physically stands at "
                                      "power-on, before homing (x, y, z mm); the host's "
                                      "belief is printer.power_on_position")
    hotend: ThermalBodySettings = field(default_factory=_hotend_body)
    bed: ThermalBodySettings = field(default_factory=_bed_body)
    chamber: ThermalBodySettings = field(default_factory=_chamber_body)
    chamber_humidity_pct: float = _field(40.0, min=0.0, max=100.0,
                                         doc="relative humidity the simulated chamber sensor reports")


# --------------------------------------------------------------------------- printer

@dataclass(frozen=True)
class AxisSettings:
    """Travel range and homing of one linear axis (Klipper's [stepper_*] range keys)."""
    position_min: float = _field(0.0, min=-10000.0, max=10000.0, doc="lowest reachable position, mm")
    position_max: float = _field(235.0, min=-10000.0, max=10000.0, doc="highest reachable position, mm")
    position_endstop: float = _field(0.0, min=-10000.0, max=10000.0, doc="position after homing, mm")
    homing_speed: float = _field(50.0, min=0.1, max=1000.0, doc="homing speed, mm/s")


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
    kinematics: str = _field("cartesian", choices=("cartesian", "corexy"), doc="kinematics")
    max_velocity: float = _field(300.0, min=0.1, max=5000.0, doc="toolhead speed limit, mm/s")
    max_accel: float = _field(3000.0, min=1.0, max=1000000.0, doc="toolhead acceleration limit, mm/s^2")
    max_z_velocity: float = _field(15.0, min=0.1, max=5000.0, doc="Z speed limit, mm/s")
    max_z_accel: float = _field(100.0, min=1.0, max=1000000.0, doc="Z acceleration limit, mm/s^2")
    square_corner_velocity: float = _field(5.0, min=0.0, max=1000.0,
                                           doc="speed through a 90 degree corner, mm/s")
    minimum_cruise_ratio: float = _field(0.5, min=0.0, max=0.99,
                                         doc="share of each move that should cruise; limits the "
                                             "top speed of short zig-zag moves")
    max_extrude_only_velocity: float = _field(50.0, min=0.1, max=5000.0,
                                              doc="speed limit of moves that only extrude, mm/s")
    max_extrude_only_accel: float = _field(1500.0, min=1.0, max=1000000.0,
                                           doc="acceleration limit of moves that only extrude, mm/s^2")
    power_on_position: list = _field(
        [0.0, 0.0, 0.0],
        doc="where the host believes the toolhead is when it starts, before homing (x, y, z "
            "mm); as Klipper, 0 0 0. Only a belief: moves are refused until an axis is "
            "homed, and G28 moves 1.5 times the travel towards the endstop from here")
    axes: AxesSettings = field(default_factory=AxesSettings)


@dataclass(frozen=True)
class StepperSettings:
    """Step geometry of one stepper motor (Klipper's rotation_distance keys)."""
    rotation_distance: float = _field(40.0, min=1e-6, max=10000.0, exclusive_min=True,
                                      doc="distance moved per full motor rotation, mm")
    microsteps: int = _field(16, min=1, max=256, doc="driver microsteps per full step")
    full_steps_per_rotation: int = _field(200, min=1, max=10000, doc="full steps per rotation")
    gear_ratio: float = _field(1.0, min=1e-6, max=1000.0, exclusive_min=True,
                               doc="motor rotations per rotation of the driven pulley or gear")
    step_pin: str = _field("", doc="MCU pin of the driver's STEP input (Klipper pin syntax)")
    dir_pin: str = _field("", doc="MCU pin of the driver's DIR input; ! inverts the direction")
    enable_pin: str = _field("", doc="MCU pin of the driver's ENABLE input ('' if none); "
                                     "usually inverted (!)")
    endstop_pin: str = _field("", doc="MCU pin of the axis endstop ('' if none); ^ asks for the "
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
    nozzle_diameter: float = _field(0.4, min=0.01, max=5.0, doc="nozzle diameter, mm")
    filament_diameter: float = _field(1.75, min=0.1, max=10.0, doc="filament diameter, mm")
    max_extrude_cross_section: float = _field(
        0.0, min=0.0, max=1000.0,
        doc="largest extrusion cross-section, mm^2; 0 means 4 x nozzle_diameter^2")
    max_extrude_only_distance: float = _field(50.0, min=0.0, max=100000.0,
                                              doc="longest extrude-only move, mm")
    instantaneous_corner_velocity: float = _field(1.0, min=0.0, max=1000.0,
                                                  doc="largest instant change of extruder speed, mm/s")
    pressure_advance: float = _field(0.0, min=0.0, max=10.0, doc="pressure advance, seconds")
    pressure_advance_smooth_time: float = _field(0.040, min=0.0, max=0.2, exclusive_min=True,
                                                 doc="averaging window of pressure advance, s "
                                                     "(above 0)")
    min_extrude_temp: float = _field(170.0, min=0.0, max=1000.0,
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
    shaper_type_x: str = _field("mzv", choices=SHAPER_TYPES, doc="shaper on X")
    shaper_freq_x: float = _field(0.0, min=0.0, max=1000.0, doc="shaper frequency on X, Hz (0 = off)")
    damping_ratio_x: float = _field(0.1, min=0.0, max=0.99, doc="damping ratio on X")
    shaper_type_y: str = _field("mzv", choices=SHAPER_TYPES, doc="shaper on Y")
    shaper_freq_y: float = _field(0.0, min=0.0, max=1000.0, doc="shaper frequency on Y, Hz (0 = off)")
    damping_ratio_y: float = _field(0.1, min=0.0, max=0.99, doc="damping ratio on Y")


@dataclass(frozen=True)
class McuSettings:
    """The stepper MCU and the step stream sent to it."""
    max_stepper_error: float = _field(0.000025, min=0.0, max=0.01,
                                      doc="how early a compressed step may come, s (never late)")
    serial: str = _field("", doc="serial device of the board, e.g. /dev/serial/by-id/usb-Klipper_"
                                 "stm32f103xe_...-if00 (used by backend = \"mcu\"; the simulated "
                                 "printer makes its own pseudo-terminal)")
    baud: int = _field(250000, min=1200, max=4000000,
                       doc="UART baud rate (ignored by USB boards, which run at USB speed)")
    restart_method: str = _field("command", choices=("command", "none"),
                                 doc="how printhost restarts the firmware when the board holds "
                                     "another configuration or is shut down: command sends the "
                                     "firmware's reset command; none asks for a power cycle")


@dataclass(frozen=True)
class GCodeSettings:
    """G-code dialect options."""
    arc_resolution: float = _field(1.0, min=0.001, max=100.0,
                                   doc="G2/G3 arcs are split into segments of about this length (at least it, as Klipper does), mm")


@dataclass(frozen=True)
class FirmwareRetractionSettings:
    """G10/G11 firmware retraction (Klipper's [firmware_retraction] keys)."""
    retract_length: float = _field(0.0, min=0.0, max=100.0, doc="retract length, mm")
    retract_speed: float = _field(20.0, min=0.1, max=1000.0, doc="retract speed, mm/s")
    unretract_extra_length: float = _field(0.0, min=0.0, max=100.0,
                                           doc="extra filament pushed on unretract, mm")
    unretract_speed: float = _field(10.0, min=0.1, max=1000.0, doc="unretract speed, mm/s")


@dataclass(frozen=True)
class HeaterSettings:
    """One heater: limits, control law and PID gains (Klipper's [extruder]/[heater_bed] keys)."""
    min_temp: float = _field(0.0, min=-273.0, max=1000.0,
                             doc="a reading below this is a sensor fault: shutdown")
    max_temp: float = _field(280.0, min=0.0, max=1000.0,
                             doc="a reading above this is a fault: shutdown; targets above are refused")
    max_power: float = _field(1.0, min=0.01, max=1.0, doc="largest heater duty cycle")
    control: str = _field("pid", choices=("pid", "watermark"),
                          doc="control law: pid, or watermark (bang-bang within +-max_delta)")
    pid_kp: float = _field(25.0, min=0.0, max=10000.0, doc="PID proportional gain (Klipper units)")
    pid_ki: float = _field(1.0, min=0.0, max=10000.0, doc="PID integral gain (Klipper units)")
    pid_kd: float = _field(115.0, min=0.0, max=100000.0, doc="PID derivative gain (Klipper units)")
    max_delta: float = _field(2.0, min=0.0, max=100.0,
                              doc="watermark control: heater on below target - max_delta, "
                                  "off above target + max_delta, C")
    heater_pin: str = _field("PC8", doc="MCU pin switching the heater (soft PWM)")
    sensor_pin: str = _field("PA0", doc="MCU ADC pin of the thermistor")
    sensor_type: str = _field("EPCOS 100K B57560G104F",
                              doc="sensor type: a preset name from docs/devices.md")
    pullup_resistor: float = _field(4700.0, min=1.0, max=10000000.0,
                                    doc="pull-up resistor of the thermistor divider, ohm")
    pwm_cycle_time: float = _field(0.1, min=0.001, max=1.0,
                                   doc="soft PWM period of the heater pin, s")


def _bed_heater() -> HeaterSettings:
    return HeaterSettings(min_temp=0.0, max_temp=130.0, max_power=1.0,
                          pid_kp=70.0, pid_ki=1.2, pid_kd=900.0,
                          heater_pin="PC9", sensor_pin="PC3", sensor_type="Generic 3950")


@dataclass(frozen=True)
class HeatersSettings:
    extruder: HeaterSettings = field(default_factory=HeaterSettings)
    heater_bed: HeaterSettings = field(default_factory=_bed_heater)


@dataclass(frozen=True)
class FanSettings:
    """The part-cooling fan (M106/M107), on an MCU pin."""
    pin: str = _field("PC6", doc="MCU pin of the part fan (soft PWM)")
    cycle_time: float = _field(0.010, min=0.0001, max=1.0, doc="PWM period, s")


@dataclass(frozen=True)
class PauseSettings:
    """What happens to the toolhead when a print is paused, resumed or cancelled."""
    retract_mm: float = _field(1.0, min=0.0, max=50.0, doc="filament retracted on pause, mm")
    retract_speed: float = _field(35.0, min=0.1, max=500.0, doc="retract/unretract speed, mm/s")
    lift_z_mm: float = _field(5.0, min=0.0, max=100.0,
                              doc="Z lift on pause (clamped to the Z travel range), mm")
    park: bool = _field(True, doc="move to park_x/park_y after lifting")
    park_x: float = _field(0.0, min=-10000.0, max=10000.0, doc="park position X, mm")
    park_y: float = _field(0.0, min=-10000.0, max=10000.0, doc="park position Y, mm")
    travel_speed: float = _field(100.0, min=0.1, max=5000.0, doc="speed of park and return moves, mm/s")
    z_speed: float = _field(10.0, min=0.1, max=5000.0, doc="speed of lift and lower moves, mm/s")
    park_on_cancel: bool = _field(True, doc="lift and park after a cancel")


# --------------------------------------------------------------------------- Pi devices

_GPIO_DOC = "Pi GPIO pin, BCM name GPIO0..GPIO27; empty: not fitted"


@dataclass(frozen=True)
class PsuDeviceSettings:
    """A relay (or SSR) on a Pi GPIO switching the printer's power supply (M80/M81)."""
    pin: str = _field("", doc=_GPIO_DOC)
    active_high: bool = _field(True, doc="false for relay boards that switch on a low input")
    on_at_start: bool = _field(True, doc="switch the printer's power on when printhost starts")
    off_on_emergency: bool = _field(True, doc="cut the printer's power on an emergency stop "
                                              "(button or M112)")


@dataclass(frozen=True)
class StatusLedDeviceSettings:
    """A status LED on a Pi GPIO: steady when ready, slow blink while printing, fast
    blink after a fault."""
    pin: str = _field("", doc=_GPIO_DOC)
    active_high: bool = _field(True, doc="false when the LED is wired from 3.3 V to the pin")


@dataclass(frozen=True)
class EStopDeviceSettings:
    """An emergency-stop button on a Pi GPIO: pressing it shuts the printer down at once."""
    pin: str = _field("", doc=_GPIO_DOC)
    pull_up: bool = _field(True, doc="internal pull-up with the switch to GND; false: "
                                     "pull-down with the switch to 3.3 V")
    normally_closed: bool = _field(True, doc="the contact opens when pressed, so a cut wire "
                                             "also stops the printer")


@dataclass(frozen=True)
class RunoutDeviceSettings:
    """A filament runout switch on a Pi GPIO: losing filament pauses the print."""
    pin: str = _field("", doc=_GPIO_DOC)
    pull_up: bool = _field(True, doc="internal pull-up with the switch to GND; false: pull-down")
    present_when_closed: bool = _field(True, doc="the filament holds the contact closed; "
                                                 "false for switches that open with filament in")
    debounce_s: float = _field(0.1, min=0.001, max=5.0,
                               doc="the switch must be stable this long before it counts, s")


@dataclass(frozen=True)
class PiFanDeviceSettings:
    """A PWM fan on a Pi GPIO (through a MOSFET or the fan's PWM input)."""
    pin: str = _field("", doc=_GPIO_DOC)
    active_high: bool = _field(True, doc="false when the pin is low while the fan runs")
    pwm_frequency_hz: float = _field(100.0, min=1.0, max=10000.0, doc="PWM frequency, Hz")
    max_power: float = _field(1.0, min=0.01, max=1.0, doc="duty cycle at full speed")
    off_below: float = _field(0.0, min=0.0, max=1.0, doc="speeds below this turn the fan off")
    fan_speed: float = _field(1.0, min=0.0, max=1.0, doc="speed while the fan is on")


@dataclass(frozen=True)
class HotendFanDeviceSettings(PiFanDeviceSettings):
    """The hotend (heat-break) fan: on while the extruder is hot or has a target."""
    heater_temp: float = _field(50.0, min=0.0, max=200.0,
                                doc="the fan runs while the extruder is above this, C")


@dataclass(frozen=True)
class ControllerFanDeviceSettings(PiFanDeviceSettings):
    """The electronics fan: on while the printer moves or heats, then for idle_timeout_s."""
    idle_timeout_s: float = _field(30.0, min=0.0, max=3600.0,
                                   doc="how long the fan keeps running after the last motion "
                                       "or heating, s")


@dataclass(frozen=True)
class DevicesSettings:
    """Devices wired to the Raspberry Pi itself (GPIO through gpiozero, I2C through smbus2)."""
    backend: str = _field("simulated", choices=("simulated", "pi"),
                          doc="simulated: gpiozero's mock pins and a simulated I2C bus, with a "
                              "control socket to press buttons and inject faults; pi: the "
                              "Pi's real pins (gpiozero's default pin factory) and /dev/i2c-N. "
                              "Required when control.backend = \"mcu\" and any device is "
                              "fitted: a real printer never falls back to simulated devices")
    i2c_bus: int = _field(1, min=0, max=31, doc="I2C bus number (/dev/i2c-N); 1 is the header's")
    psu: PsuDeviceSettings = _section(PsuDeviceSettings)
    status_led: StatusLedDeviceSettings = _section(StatusLedDeviceSettings)
    estop: EStopDeviceSettings = _section(EStopDeviceSettings)
    runout: RunoutDeviceSettings = _section(RunoutDeviceSettings)
    hotend_fan: HotendFanDeviceSettings = _section(HotendFanDeviceSettings)
    controller_fan: ControllerFanDeviceSettings = _section(ControllerFanDeviceSettings)


@dataclass(frozen=True)
class ChamberSettings:
    """Chamber sensor on the Pi's I2C bus, and an optional chamber heater on a Pi GPIO."""
    sensor: str = _field("none", choices=("none", "aht10", "aht20", "ads1115"),
                         doc="none; aht10/aht20: digital temperature and humidity sensor; "
                             "ads1115: a thermistor divider read by an ADS1115 ADC")
    i2c_address: int = _field(0, min=0, max=0x77,
                              doc="0: the chip's default (0x38 AHT10/AHT20, 0x48 ADS1115)")
    adc_channel: int = _field(0, min=0, max=3, doc="ads1115: input of the thermistor divider")
    sensor_type: str = _field("Generic 3950", doc="ads1115: thermistor preset (docs/devices.md)")
    pullup_resistor: float = _field(4700.0, min=1.0, max=10000000.0,
                                    doc="ads1115: pull-up of the divider, ohm")
    reference_v: float = _field(3.3, min=0.1, max=5.5,
                                doc="ads1115: voltage at the top of the divider, V")
    poll_interval_s: float = _field(0.25, min=0.05, max=0.25,
                                    doc="time between sensor readings, s (the heater shuts down "
                                        "after 0.7 s without a good reading)")
    heater_pin: str = _field("", doc="Pi GPIO of the chamber heater's relay or SSR; empty: none")
    heater_active_high: bool = _field(True, doc="false for relays that switch on a low input")
    min_temp: float = _field(0.0, min=-40.0, max=100.0,
                             doc="a reading below this is a sensor fault: shutdown")
    max_temp: float = _field(70.0, min=1.0, max=120.0,
                             doc="a reading above this is a fault: shutdown; targets above are refused")
    max_delta: float = _field(1.0, min=0.1, max=20.0,
                              doc="the heater switches on below target - max_delta and off "
                                  "above target + max_delta, C")
    check_gain_time: float = _field(180.0, min=10.0, max=3600.0,
                                    doc="a rising target must gain 2 C within this time, s")


# --------------------------------------------------------------------------- top level

@dataclass(frozen=True)
class Settings:
    server: ServerSettings = _section(ServerSettings)
    auth: AuthSettings = _section(AuthSettings)
    discovery: DiscoverySettings = _section(DiscoverySettings)
    control: ControlSettings = _section(ControlSettings)
    simulation: SimulationSettings = _section(SimulationSettings)
    printer: PrinterSettings = _section(PrinterSettings)
    steppers: SteppersSettings = _section(SteppersSettings)
    extruder: ExtruderSettings = _section(ExtruderSettings)
    input_shaper: InputShaperSettings = _section(InputShaperSettings)
    mcu: McuSettings = _section(McuSettings)
    gcode: GCodeSettings = _section(GCodeSettings)
    firmware_retraction: FirmwareRetractionSettings = _section(FirmwareRetractionSettings)
    heaters: HeatersSettings = _section(HeatersSettings)
    fan: FanSettings = _section(FanSettings)
    pause: PauseSettings = _section(PauseSettings)
    devices: DevicesSettings = _section(DevicesSettings)
    chamber: ChamberSettings = _section(ChamberSettings)
    source: str = field(default="<defaults>", metadata={"internal": True})

    def state_path(self) -> Path:
        return Path(os.path.expanduser(self.server.state_dir))

    def pi_devices(self) -> list[str]:
        """The keys of the devices fitted to the Pi itself ([devices] pins, [chamber])."""
        d, c = self.devices, self.chamber
        fitted = [f"devices.{name}" for name in ("psu", "status_led", "estop", "runout",
                                                 "hotend_fan", "controller_fan")
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


# The loader needs the classes above; importing it last keeps `from printhost.config
# import parse_settings` working for every caller.
from printhost.config_loader import (describe, load_settings, parse_settings,  # noqa: E402,F401
                                     with_overrides)
