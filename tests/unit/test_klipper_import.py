"""Importing a Klipper printer.cfg: Klipper's file syntax, every mapping, what is left out."""

from __future__ import annotations

import os
import subprocess
import sys
from textwrap import dedent
import tomllib
from pathlib import Path

import pytest

import printhost
from printhost.config import ConfigError, HeaterSettings, load_settings, parse_settings
from printhost.klipper_import import (
    ImportResult,
    KlipperImportError,
    import_klipper,
    main_import,
    read_klipper_config,
)

REPO_ROOT = Path(printhost.__file__).resolve().parents[1]
DATA = REPO_ROOT / "tests" / "data" / "klipper"
PRINTER_CFG = DATA / "printer.cfg"
COREXY_CFG = DATA / "corexy.cfg"

SAVE_HEADER = ("#*# <---------------------- SAVE_CONFIG ---------------------->\n"
               "#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.\n"
               "#*#\n")

# A complete, small cartesian config; tests append or replace sections. Its pins are
# printhost's default ones, so the defaults kept for absent sections never collide.
MINIMAL = """\
[printer]
kinematics: cartesian
max_velocity: 300
max_accel: 3000

[stepper_x]
step_pin: PB13
dir_pin: !PB12
enable_pin: !PB14
endstop_pin: ^PC0
microsteps: 16
rotation_distance: 40
position_endstop: 0
position_max: 235

[stepper_y]
step_pin: PB10
dir_pin: !PB2
enable_pin: !PB11
endstop_pin: ^PC1
microsteps: 16
rotation_distance: 40
position_endstop: 0
position_max: 235

[stepper_z]
step_pin: PB0
dir_pin: PC5
enable_pin: !PB1
endstop_pin: ^PC2
microsteps: 16
rotation_distance: 8
position_endstop: 0
position_max: 250
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    return path


def convert(tmp_path: Path, text: str, **others: str) -> ImportResult:
    for name, body in others.items():
        write(tmp_path, name.replace("__", "/").replace("_cfg", ".cfg"), body)
    return import_klipper(write(tmp_path, "printer.cfg", text))


def values(result: ImportResult) -> dict:
    return tomllib.loads(result.toml)


def flat(result: ImportResult) -> dict[str, object]:
    out: dict[str, object] = {}

    def walk(table: dict, prefix: str) -> None:
        for key, value in table.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(value, path)
            else:
                out[path] = value
    walk(values(result), "")
    return out


def problems(result: ImportResult, prefix: str) -> list[str]:
    return [item for item in result.unconverted if item.startswith(prefix)]


def one_problem(result: ImportResult, prefix: str) -> str:
    found = problems(result, prefix)
    assert len(found) == 1, (prefix, result.unconverted)
    return found[0]


# =========================================================================== printer.cfg

@pytest.fixture(scope="module")
def printer() -> ImportResult:
    return import_klipper(PRINTER_CFG)


@pytest.fixture(scope="module")
def corexy() -> ImportResult:
    return import_klipper(COREXY_CFG)


def test_printer_cfg_motion_limits(printer):
    p = values(printer)["printer"]
    assert p["kinematics"] == "cartesian"
    assert p["max_velocity"] == 250.0
    assert p["max_accel"] == 2500.0
    assert p["max_z_velocity"] == 8.0
    assert p["max_z_accel"] == 120.0
    assert p["square_corner_velocity"] == 5.0
    assert p["minimum_cruise_ratio"] == 0.4


def test_printer_cfg_axes(printer):
    axes = values(printer)["printer"]["axes"]
    assert axes["x"] == {"position_min": -4.0, "position_max": 240.0,
                         "position_endstop": -4.0, "homing_speed": 60.0}
    assert axes["y"] == {"position_min": -10.0, "position_max": 235.0,
                         "position_endstop": -10.0, "homing_speed": 60.0}
    # Z homes on the BLTouch: Klipper's endstop position is the probe's z_offset,
    # which PROBE_CALIBRATE stored in the SAVE_CONFIG block.
    assert axes["z"] == {"position_min": -3.0, "position_max": 250.0,
                         "position_endstop": 1.925, "homing_speed": 8.0}


def test_printer_cfg_steppers(printer):
    steppers = values(printer)["steppers"]
    geometry = {"microsteps": 16, "full_steps_per_rotation": 200, "gear_ratio": 1.0}
    # All four steppers share the enable pin !PC3; printhost gives it to X only.
    assert steppers["x"] == {"rotation_distance": 40.0, **geometry, "step_pin": "PC2",
                             "dir_pin": "!PB9", "enable_pin": "!PC3", "endstop_pin": "^PA5"}
    assert steppers["y"] == {"rotation_distance": 40.0, **geometry, "step_pin": "PB8",
                             "dir_pin": "PB7", "enable_pin": "", "endstop_pin": "^PA6"}
    # Z homes on the BLTouch; printhost's default ^PC2 is X's step pin, so another
    # unused default input holds the place.
    assert steppers["z"] == {"rotation_distance": 8.0, **geometry, "step_pin": "PB6",
                             "dir_pin": "!PB5", "enable_pin": "", "endstop_pin": "^PC0"}
    assert steppers["extruder"] == {"rotation_distance": 22.452, "microsteps": 16,
                                    "full_steps_per_rotation": 200, "gear_ratio": 5.0,
                                    "step_pin": "PB4", "dir_pin": "PB3", "enable_pin": ""}
    assert printer.settings.fan.pin == "PA0"            # [fan] from extras.cfg
    assert values(printer)["fan"] == {"pin": "PA0", "cycle_time": 0.01}


def test_printer_cfg_extruder(printer):
    v = values(printer)
    assert v["extruder"] == {
        "nozzle_diameter": 0.4, "filament_diameter": 1.75, "max_extrude_cross_section": 0.8,
        "max_extrude_only_distance": 120.0, "instantaneous_corner_velocity": 1.0,
        "pressure_advance": 0.045, "pressure_advance_smooth_time": 0.04,
        "min_extrude_temp": 180.0,
    }
    # Not set in [extruder]: Klipper scales the toolhead limits by the extrusion ratio
    # of a cross-section of 4 x nozzle^2 over the filament area.
    ratio = 4 * 0.4 ** 2 / (3.141592653589793 * (1.75 / 2) ** 2)
    assert v["printer"]["max_extrude_only_velocity"] == pytest.approx(250 * ratio, rel=1e-11)
    assert v["printer"]["max_extrude_only_accel"] == pytest.approx(2500 * ratio, rel=1e-11)


def test_printer_cfg_heaters_take_the_saved_pid_gains(printer):
    heaters = values(printer)["heaters"]
    sensor = {"sensor_type": "EPCOS 100K B57560G104F", "pullup_resistor": 4700.0,
              "pwm_cycle_time": 0.1}
    assert heaters["extruder"] == {"min_temp": 0.0, "max_temp": 270.0, "max_power": 1.0,
                                   "control": "pid", "pid_kp": 26.213, "pid_ki": 1.304,
                                   "pid_kd": 131.721, "heater_pin": "PA1", "sensor_pin": "PC5",
                                   **sensor}
    assert heaters["heater_bed"] == {"min_temp": 0.0, "max_temp": 110.0, "max_power": 1.0,
                                     "control": "pid", "pid_kp": 72.412, "pid_ki": 1.113,
                                     "pid_kd": 1177.581, "heater_pin": "PA2",
                                     "sensor_pin": "PC4", **sensor}


def test_printer_cfg_input_shaper_from_the_saved_block(printer):
    assert values(printer)["input_shaper"] == {
        "shaper_type_x": "mzv", "shaper_freq_x": 52.4, "damping_ratio_x": 0.08,
        "shaper_type_y": "ei", "shaper_freq_y": 38.6, "damping_ratio_y": 0.1,
    }


def test_printer_cfg_arcs_and_retraction_from_sections_and_include(printer):
    v = values(printer)
    assert v["gcode"] == {"arc_resolution": 0.5}            # from extras.cfg
    assert v["firmware_retraction"] == {"retract_length": 0.8, "retract_speed": 35.0,
                                        "unretract_extra_length": 0.0, "unretract_speed": 30.0}
    assert v["mcu"] == {"serial": "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",
                        "baud": 250000, "restart_method": "command"}   # no max_stepper_error


def test_printer_cfg_every_unconverted_item_is_named(printer):
    shared = ("pin PC3 is already used by steppers.x.enable_pin ([stepper_x] enable_pin); "
              "printhost gives each pin to one key")
    expected = [
        "[bltouch]: section not supported (printhost does not probe); "
        "its z_offset was used as the Z endstop position",
        "[safe_z_home]: section not supported (printhost homes each axis at its own "
        "endstop position)",
        "[bed_mesh]: section not supported (printhost has no bed mesh compensation)",
        "[heater_fan hotend_fan]: section not supported (printhost drives only the "
        "part-cooling [fan])",
        "[temperature_sensor host]: section not supported (printhost reads only the sensors "
        "of its two heaters)",
        "[virtual_sdcard]: section not supported (printhost stores and runs uploaded "
        "files itself)",
        "[pause_resume]: section not supported",
        "[gcode_macro PRINT_START]: section not supported (printhost has no G-code macros)",
        "[gcode_macro PRINT_END]: section not supported (printhost has no G-code macros)",
        f"[stepper_y] enable_pin = !PC3: {shared}; steppers.y.enable_pin is left empty "
        "(no enable pin), so the shared pin is switched with steppers.x.enable_pin",
        "[stepper_z] second_homing_speed: printhost has no such setting, not imported",
        f"[stepper_z] enable_pin = !PC3: {shared}; steppers.z.enable_pin is left empty "
        "(no enable pin), so the shared pin is switched with steppers.x.enable_pin",
        "[stepper_z] endstop_pin: homes on the BLTouch (probe:z_virtual_endstop), which only "
        "triggers once its control_pin has deployed it; printhost does not probe, so the axis "
        "needs an endstop switch; printhost's default \"^PC2\" is already used by "
        "steppers.x.step_pin ([stepper_x] step_pin), so the unused \"^PC0\" holds its place: "
        "set the right pin before connecting a board",
        f"[extruder] enable_pin = !PC3: {shared}; steppers.extruder.enable_pin is left empty "
        "(no enable pin), so the shared pin is switched with steppers.x.enable_pin",
        "[bed_mesh default]: section not supported (printhost has no bed mesh compensation)",
    ]
    assert printer.unconverted == expected
    assert printer.notes == []


def test_printer_cfg_header_names_the_source_and_include(printer):
    head = printer.toml.split("\n\n")[0]
    assert str(PRINTER_CFG) in head
    assert "extras.cfg" in head
    assert "SAVE_CONFIG" in head
    assert printer.files == [str(PRINTER_CFG), "extras.cfg"]


def test_printer_cfg_values_name_their_klipper_origin(printer):
    lines = printer.toml.splitlines()
    assert "max_velocity = 250.0  # [printer] max_velocity" in lines
    assert "pid_kp = 26.213  # [extruder] pid_kp (SAVE_CONFIG)" in lines
    assert "gear_ratio = 5.0  # [extruder] gear_ratio = 45:9" in lines
    assert any(line.startswith("position_endstop = 1.925  # homes on the probe")
               and "[bltouch] z_offset (SAVE_CONFIG)" in line for line in lines)
    # The unconverted list is repeated at the end of the file as comments.
    assert "#   - [bltouch]: section not supported" in printer.toml


# =========================================================================== corexy.cfg

def test_corexy_legacy_step_distance(corexy):
    steppers = values(corexy)["steppers"]
    # step_distance x full steps x microsteps; microsteps from the TMC section, as
    # configs of that time kept them there.
    assert steppers["x"] == {"rotation_distance": 40.0, "microsteps": 16,
                             "full_steps_per_rotation": 200, "gear_ratio": 1.0,
                             "step_pin": "PE2", "dir_pin": "!PE3", "enable_pin": "!PD4",
                             "endstop_pin": "PA14"}
    assert steppers["y"] == {**steppers["x"], "step_pin": "PF12", "dir_pin": "!PF11",
                             "enable_pin": "!PB3", "endstop_pin": "PA15"}
    assert steppers["z"] == {"rotation_distance": 8.0, "microsteps": 32,
                             "full_steps_per_rotation": 200, "gear_ratio": 1.0,
                             "step_pin": "PD7", "dir_pin": "PD6", "enable_pin": "!PF10",
                             "endstop_pin": "PB1"}
    assert steppers["extruder"]["rotation_distance"] == 7.7088
    settings = corexy.settings
    assert settings.steppers.x.step_distance_mm == pytest.approx(0.0125)
    assert settings.steppers.z.step_distance_mm == pytest.approx(0.00125)
    assert settings.steppers.extruder.step_distance_mm == pytest.approx(0.002409)
    assert any(n.startswith("[stepper_x] step_distance = .0125: legacy key") and
               "rotation_distance = 40.0" in n and "[tmc2209 stepper_x]" in n
               for n in corexy.notes)


def test_corexy_max_accel_to_decel_becomes_minimum_cruise_ratio(corexy):
    p = values(corexy)["printer"]
    assert p["kinematics"] == "corexy"
    assert p["minimum_cruise_ratio"] == 0.25       # 1 - 3000 / 4000
    assert "max_accel_to_decel" in corexy.toml     # the comment says where it came from
    assert any(n.startswith("[printer] max_accel_to_decel = 3000: legacy key")
               for n in corexy.notes)


def test_corexy_klipper_defaults_where_printhost_differs(corexy):
    p = values(corexy)["printer"]
    assert p["max_z_velocity"] == 15.0
    assert p["max_z_accel"] == 4000.0              # Klipper: max_accel when not set
    ratio = 4 * 0.4 ** 2 / (3.141592653589793 * (1.75 / 2) ** 2)
    assert p["max_extrude_only_velocity"] == pytest.approx(400 * ratio, rel=1e-11)
    assert p["max_extrude_only_accel"] == pytest.approx(4000 * ratio, rel=1e-11)
    assert values(corexy)["extruder"]["min_extrude_temp"] == 170.0
    assert values(corexy)["extruder"]["max_extrude_cross_section"] == 0.0   # 4 x nozzle^2


def test_corexy_heaters_mcu_and_shaper(corexy):
    v = values(corexy)
    assert v["heaters"]["extruder"] == {
        "min_temp": 0.0, "max_temp": 290.0, "max_power": 1.0, "control": "pid",
        "pid_kp": 28.79, "pid_ki": 1.7, "pid_kd": 121.89, "heater_pin": "PB15",
        "sensor_pin": "PC1", "sensor_type": "ATC Semitec 104GT-2", "pullup_resistor": 4700.0,
        "pwm_cycle_time": 0.1}
    # A watermark bed; its sensor type is not one of printhost's, so neither it nor its
    # pin is imported (printhost's defaults stay, and the report says so).
    assert v["heaters"]["heater_bed"] == {"min_temp": 0.0, "max_temp": 120.0, "max_power": 1.0,
                                          "control": "watermark", "max_delta": 1.0,
                                          "heater_pin": "PA3", "pwm_cycle_time": 0.1}
    assert v["mcu"] == {"max_stepper_error": 0.00002, "serial": "/dev/ttyAMA0",
                        "baud": 250000, "restart_method": "command"}
    assert v["fan"] == {"pin": ""}                  # no [fan]: no part-cooling fan
    assert steppers_extruder_pins(v) == {"step_pin": "PC13", "dir_pin": "!PC14",
                                         "enable_pin": "!PC15"}
    assert v["input_shaper"]["shaper_type_x"] == v["input_shaper"]["shaper_type_y"] == "ei"
    assert v["input_shaper"]["shaper_freq_x"] == 61.2
    assert v["input_shaper"]["shaper_freq_y"] == 44.8


def steppers_extruder_pins(v: dict) -> dict:
    return {k: v["steppers"]["extruder"][k] for k in ("step_pin", "dir_pin", "enable_pin")}


def test_corexy_every_unconverted_item_is_named(corexy):
    none = "printhost has no such setting, not imported"
    tmc = ("section not supported (printhost does not set up stepper drivers over UART or "
           "SPI; its steppers use step, dir and enable pins only)")
    expected = []
    for axis in "xy":
        expected += [f"[stepper_{axis}] homing_retract_dist: {none}",
                     f"[stepper_{axis}] homing_positive_dir: {none}",
                     f"[tmc2209 stepper_{axis}]: {tmc}"]
    expected += [
        "[extruder] smooth_time: printhost always smooths over 1 s (Klipper's default); "
        "2.0 s is not imported",
        f"[tmc2209 extruder]: {tmc}",
        "[heater_bed] sensor_type = NTC 100K beta 3950: printhost has no such sensor (its "
        "presets: \"EPCOS 100K B57560G104F\", \"ATC Semitec 104GT-2\", \"Generic 3950\", "
        "\"NTC 100K MGB18-104F39050L32\", \"PT1000\"); printhost's default "
        "\"Generic 3950\" is used",
        "[heater_bed] sensor_pin = PC0: belongs to sensor_type NTC 100K beta 3950, which "
        "printhost cannot read; printhost's default \"PC3\" is used",
        "[verify_heater extruder]: section not supported (printhost applies Klipper's "
        "default heater checks)",
        "[idle_timeout]: section not supported",
    ]
    assert corexy.unconverted == expected
    assert any(n.startswith("[gcode_arcs]: not in the Klipper config") for n in corexy.notes)
    assert any(n.startswith("[fan]: not in the Klipper config") for n in corexy.notes)


# =========================================================================== output

@pytest.mark.parametrize("cfg", [PRINTER_CFG, COREXY_CFG], ids=["printer", "corexy"])
def test_output_passes_parse_settings_and_round_trips(cfg, tmp_path):
    first = import_klipper(cfg)
    second = import_klipper(cfg)
    assert first.toml == second.toml
    assert first.unconverted == second.unconverted
    settings = parse_settings(tomllib.loads(first.toml), "imported.toml")
    assert settings.printer == first.settings.printer
    assert settings.heaters == first.settings.heaters
    out = tmp_path / "printhost.toml"
    out.write_text(first.toml)
    assert load_settings(out).steppers == first.settings.steppers


def test_output_comments_are_plain_toml_comments(printer):
    for line in printer.toml.splitlines():
        assert not line or line.startswith(("#", "[")) or " = " in line
        assert "\t" not in line and "\r" not in line


# =========================================================================== Klipper syntax

def test_syntax_delimiters_comments_and_option_case(tmp_path):
    cfg = read_klipper_config(write(tmp_path, "printer.cfg", """\
        [mcu]
        serial = /dev/ttyUSB0   ; trailing comment
        baud: 250000#comment straight after the value
        restart_method:command;not a comment without a blank before it
        ; a whole-line comment
        # another one
        [extruder]
        PID_Kp: 22.5
        Max_Temp = 250
        [Extruder]
        max_temp: 1
        """))
    mcu = {k: v.value for k, v in cfg.sections["mcu"].items()}
    assert mcu == {"serial": "/dev/ttyUSB0", "baud": "250000",
                   "restart_method": "command;not a comment without a blank before it"}
    assert {k: v.value for k, v in cfg.sections["extruder"].items()} == {
        "pid_kp": "22.5", "max_temp": "250"}
    # Section names are case-sensitive; [Extruder] is another section.
    assert cfg.sections["Extruder"]["max_temp"].value == "1"


def test_syntax_continuation_lines_and_blank_lines(tmp_path):
    cfg = read_klipper_config(write(tmp_path, "printer.cfg", """\
        [gcode_macro START]
        gcode:
            G28
            # a comment line inside the value

            G1 Z5   ; lift
        description: after the value
        """))
    macro = cfg.sections["gcode_macro START"]
    assert macro["gcode"].value == "\nG28\n\n\nG1 Z5"
    assert macro["description"].value == "after the value"


def test_syntax_repeated_sections_merge_and_later_values_win(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [printer]
        max_velocity: 200
        [stepper_x]
        position_max: 220
        """))
    assert values(result)["printer"]["max_velocity"] == 200.0
    assert values(result)["printer"]["max_accel"] == 3000.0
    assert values(result)["printer"]["axes"]["x"]["position_max"] == 220.0


def test_syntax_errors_are_fatal_and_name_file_and_line(tmp_path):
    path = write(tmp_path, "printer.cfg", "[printer]\nkinematics: cartesian\nmax_velocity\n")
    with pytest.raises(KlipperImportError, match=r"printer\.cfg:3: cannot read 'max_velocity' "
                                                 r"in \[printer\]"):
        import_klipper(path)
    path.write_text("max_velocity: 5\n[printer]\n")
    with pytest.raises(KlipperImportError, match=r"printer\.cfg:1: 'max_velocity: 5' is not "
                                                 r"inside a \[section\]"):
        import_klipper(path)
    assert issubclass(KlipperImportError, ConfigError)


def test_missing_printer_section_is_fatal(tmp_path):
    path = write(tmp_path, "printer.cfg", "[stepper_x]\nmicrosteps: 16\n")
    with pytest.raises(KlipperImportError, match=r"printer\.cfg: no \[printer\] section"):
        import_klipper(path)


def test_files_that_are_not_klipper_configs_are_named_as_such(tmp_path):
    from printhost.klipper_import.errors import NotAKlipperConfig
    shipped = REPO_ROOT / "config" / "printhost.toml"
    with pytest.raises(NotAKlipperConfig, match=r"is not a Klipper config: it is a "
                                                r"printhost configuration \(TOML\)"):
        import_klipper(shipped)
    other_toml = write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n[tool.y]\nz = 1\n')
    with pytest.raises(NotAKlipperConfig, match=r"pyproject\.toml is not a Klipper config: "
                                                r"it is a TOML file"):
        import_klipper(other_toml)
    notes = write(tmp_path, "notes.cfg", "# my printer\nIt prints.\n[printer]\n")
    with pytest.raises(NotAKlipperConfig, match=r"line 2 \('It prints\.'\) is neither a "
                                                r"\[section\] header nor a 'key: value'"):
        import_klipper(notes)
    headerless = write(tmp_path, "headerless.cfg", "Note: this is a shopping list\nmilk: 2\n")
    with pytest.raises(NotAKlipperConfig, match="it has no \\[section\\] headers"):
        import_klipper(headerless)
    assert issubclass(NotAKlipperConfig, KlipperImportError)


def test_a_klipper_config_that_happens_to_be_valid_toml_is_not_refused(tmp_path):
    """Numbers only and `=` separators: valid TOML, but Klipper's format all the same."""
    from printhost.klipper_import.detect import not_klipper_reason
    text = "[printer]\nmax_velocity = 300\nmax_accel = 3000\n[stepper_x]\nmicrosteps = 16\n"
    tomllib.loads(text)
    assert not_klipper_reason(text) is None
    assert not_klipper_reason(MINIMAL) is None
    assert not_klipper_reason("") is None     # Klipper's own message: no [printer] section
    assert not_klipper_reason("max_velocity: 5\n[printer]\n") is None


def test_unreadable_files_are_fatal(tmp_path):
    with pytest.raises(KlipperImportError, match="file not found"):
        import_klipper(tmp_path / "absent.cfg")
    (tmp_path / "binary.cfg").write_bytes(b"[printer]\n\xff\xfe\n")
    with pytest.raises(KlipperImportError, match="not UTF-8"):
        import_klipper(tmp_path / "binary.cfg")


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "printer.cfg"
    text = MINIMAL + "\n" + SAVE_HEADER + "#*# [stepper_x]\n#*# position_min = -2\n"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    result = import_klipper(path)
    assert values(result)["printer"]["axes"]["x"]["position_min"] == -2.0
    assert result.unconverted == []


# =========================================================================== includes

def test_include_is_relative_to_the_including_file_and_ordered(tmp_path):
    result = convert(tmp_path, dedent("""\
        [printer]
        max_velocity: 100
        [include parts/motion.cfg]
        [printer]
        max_accel: 1234
        """) + MINIMAL.split("\n", 4)[4], parts__motion_cfg="""\
        [printer]
        kinematics: corexy
        max_velocity: 250
        max_accel: 999
        [include more/*.cfg]
        """, parts__more__b_cfg="[printer]\nsquare_corner_velocity: 7\n",
        parts__more__a_cfg="[printer]\nsquare_corner_velocity: 6\nmax_z_velocity: 9\n")
    p = values(result)["printer"]
    assert p["kinematics"] == "corexy"
    assert p["max_velocity"] == 250.0          # the include came after the first value
    assert p["max_accel"] == 1234.0            # the main file set it again after the include
    assert p["square_corner_velocity"] == 7.0  # glob matches are read in sorted order
    assert p["max_z_velocity"] == 9.0
    assert result.files == [str(tmp_path / "printer.cfg"), "parts/motion.cfg",
                            "parts/more/a.cfg", "parts/more/b.cfg"]
    assert "Included files read: parts/motion.cfg, parts/more/a.cfg, parts/more/b.cfg." \
        in result.toml


def test_include_errors(tmp_path):
    missing = write(tmp_path, "printer.cfg", MINIMAL + "[include nowhere.cfg]\n")
    with pytest.raises(KlipperImportError, match=r"printer\.cfg:\d+: \[include nowhere\.cfg\]: "
                                                 r"file .*nowhere\.cfg does not exist"):
        import_klipper(missing)
    # A wildcard that matches nothing is fine, as in Klipper.
    write(tmp_path, "printer.cfg", MINIMAL + "[include macros/*.cfg]\n")
    assert import_klipper(tmp_path / "printer.cfg").unconverted == []
    write(tmp_path, "loop.cfg", "[include printer.cfg]\n")
    write(tmp_path, "printer.cfg", MINIMAL + "[include loop.cfg]\n")
    with pytest.raises(KlipperImportError, match="recursive"):
        import_klipper(tmp_path / "printer.cfg")


def test_options_after_an_include_need_a_section_header(tmp_path):
    write(tmp_path, "extra.cfg", "[fan]\npin: PA0\n")
    path = write(tmp_path, "printer.cfg", MINIMAL + "[include extra.cfg]\nmax_accel: 5\n")
    with pytest.raises(KlipperImportError, match="after an \\[include\\] line"):
        import_klipper(path)


# =========================================================================== SAVE_CONFIG

def test_saved_block_fills_in_keys_and_is_marked(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [extruder]
        nozzle_diameter: 0.4
        filament_diameter: 1.75
        min_temp: 0
        max_temp: 250
        #control: pid
        #pid_Kp: 1

        """) + SAVE_HEADER + dedent("""\
        #*# [extruder]
        #*# control = pid
        #*# pid_kp = 21.5
        #*# pid_ki = 1.25
        #*# pid_kd = 95.0
        #*#
        #*# [input_shaper]
        #*# shaper_type_x = zvd
        #*# shaper_freq_x = 48.2
        """))
    v = values(result)
    assert v["heaters"]["extruder"]["pid_kp"] == 21.5
    assert v["heaters"]["extruder"]["pid_ki"] == 1.25
    assert v["heaters"]["extruder"]["pid_kd"] == 95.0
    assert v["input_shaper"]["shaper_type_x"] == "zvd"
    assert v["input_shaper"]["shaper_freq_x"] == 48.2
    assert "pid_kd = 95.0  # [extruder] pid_kd (SAVE_CONFIG)" in result.toml


def test_a_key_in_both_keeps_the_regular_value_as_klipper_does(tmp_path):
    # Klipper drops a saved value when the regular config (or an include) sets the same
    # key; SAVE_CONFIG normally comments the regular one out so this does not arise.
    result = convert(tmp_path, MINIMAL.replace("max_accel: 3000", "max_accel: 3000\n"
                                               "[include limits.cfg]\n[printer]") + "\n"
                     + SAVE_HEADER + "#*# [printer]\n#*# max_velocity = 500\n"
                     "#*# max_accel = 9999\n#*# square_corner_velocity = 6.5\n",
                     limits_cfg="[printer]\nmax_accel: 2000\n")
    p = values(result)["printer"]
    assert p["max_velocity"] == 300.0
    assert p["max_accel"] == 2000.0
    assert p["square_corner_velocity"] == 6.5
    assert result.notes[:2] == [
        f"[printer] max_velocity: set in {tmp_path / 'printer.cfg'}:3 (300) and in the "
        "SAVE_CONFIG block (500); Klipper keeps 300 and drops the saved value, and so does "
        "this import",
        "[printer] max_accel: set in limits.cfg:2 (2000) and in the SAVE_CONFIG block (9999); "
        "Klipper keeps 2000 and drops the saved value, and so does this import",
    ]


@pytest.mark.parametrize("block, reason", [
    (SAVE_HEADER + "#*# [printer]\n#*# max_velocity = 123\nmax_accel = 5\n",
     "does not start with '#*# '"),
    (SAVE_HEADER + "#*# [printer]\n#*#max_velocity = 123\n", "does not start with '#*# '"),
    (SAVE_HEADER + "#*# [printer]\n#*# max_velocity = 123\n\n" + SAVE_HEADER
     + "#*# [printer]\n#*# max_accel = 5\n", "header appears twice"),
])
def test_damaged_saved_block_is_ignored_like_klipper(tmp_path, block, reason):
    result = convert(tmp_path, MINIMAL + "\n" + block)
    assert values(result)["printer"]["max_velocity"] == 300.0
    item = one_problem(result, f"{tmp_path / 'printer.cfg'}: SAVE_CONFIG block:")
    assert reason in item and "Klipper ignores the whole block" in item


def test_saved_lines_above_the_header_damage_the_block(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("[stepper_x]", "#*# [printer]\n[stepper_x]")
                     + "\n" + SAVE_HEADER + "#*# [printer]\n#*# max_velocity = 123\n")
    assert values(result)["printer"]["max_velocity"] == 300.0
    assert "above the SAVE_CONFIG header" in result.unconverted[0]


def test_saved_lines_without_the_full_header_are_not_read(tmp_path):
    result = convert(tmp_path, MINIMAL + "\n#*# <---------------------- SAVE_CONFIG "
                     "---------------------->\n#*# [printer]\n#*# max_velocity = 123\n")
    assert values(result)["printer"]["max_velocity"] == 300.0
    assert "without Klipper's complete three-line SAVE_CONFIG header" in result.unconverted[0]


def test_saved_block_in_an_included_file_is_not_read(tmp_path):
    result = convert(tmp_path, MINIMAL + "[include tuned.cfg]\n",
                     tuned_cfg="[fan]\npin: PA0\n\n" + SAVE_HEADER
                     + "#*# [printer]\n#*# max_velocity = 123\n")
    assert values(result)["printer"]["max_velocity"] == 300.0
    assert result.unconverted[0].startswith("tuned.cfg: SAVE_CONFIG block: Klipper only reads "
                                            "it from the main config file")


# =========================================================================== [printer]

def test_printer_defaults_follow_klipper(tmp_path):
    p = values(convert(tmp_path, MINIMAL))["printer"]
    assert p["max_z_velocity"] == 300.0         # = max_velocity (printhost's default is 15)
    assert p["max_z_accel"] == 3000.0           # = max_accel (printhost's default is 100)
    assert p["square_corner_velocity"] == 5.0
    assert p["minimum_cruise_ratio"] == 0.5


@pytest.mark.parametrize("to_decel, ratio", [("1500", 0.5), ("2250", 0.25), ("6000", 0.0)])
def test_max_accel_to_decel(tmp_path, to_decel, ratio):
    result = convert(tmp_path, MINIMAL.replace("max_accel: 3000",
                                               f"max_accel: 3000\nmax_accel_to_decel: {to_decel}"))
    assert values(result)["printer"]["minimum_cruise_ratio"] == ratio
    assert result.unconverted == []


def test_max_accel_to_decel_with_an_unusable_max_accel(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("max_accel: 3000",
                                               "max_accel: 0\nmax_accel_to_decel: 1500"))
    assert one_problem(result, "[printer] max_accel").startswith(
        "[printer] max_accel: 0 is invalid: Klipper requires a value above 0")
    # Converted against the max_accel printhost will use (its default, 3000).
    assert values(result)["printer"]["minimum_cruise_ratio"] == 0.5


def test_minimum_cruise_ratio_wins_over_max_accel_to_decel(tmp_path):
    result = convert(tmp_path, MINIMAL.replace(
        "max_accel: 3000", "max_accel: 3000\nmax_accel_to_decel: 1000\nminimum_cruise_ratio: 0.3"))
    assert values(result)["printer"]["minimum_cruise_ratio"] == 0.3
    assert any(n.startswith("[printer] max_accel_to_decel: ignored") for n in result.notes)


@pytest.mark.parametrize("kinematics", ["delta", "corexz", "none"])
def test_unsupported_kinematics(tmp_path, kinematics):
    result = convert(tmp_path, f"""\
        [printer]
        kinematics: {kinematics}
        max_velocity: 300
        max_accel: 3000
        delta_radius: 100
        [stepper_a]
        arm_length: 217
        """)
    assert one_problem(result, "[printer] kinematics").startswith(
        f"[printer] kinematics = {kinematics}: not supported")
    assert one_problem(result, "[printer] delta_radius").endswith(
        "belongs to an unsupported kinematics, not imported")
    assert "[stepper_a]: section not supported" in result.unconverted
    assert not problems(result, "[stepper_x]")
    assert "kinematics" not in values(result)["printer"]


def test_missing_stepper_section(tmp_path):
    result = convert(tmp_path, MINIMAL.split("[stepper_z]")[0].replace(
        "max_accel: 3000", "max_accel: 3000\nmax_velocity_z: 5"))
    # Listed after the complaints about sections that are present.
    assert result.unconverted == [
        "[printer] max_velocity_z: printhost has no such setting, not imported",
        "[stepper_z]: section missing (Klipper requires it); printhost's defaults are used "
        "for this axis"]


def test_printer_max_stepper_error_is_not_klippers(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("max_accel: 3000",
                                               "max_accel: 3000\nmax_stepper_error: 0.00001"))
    assert one_problem(result, "[printer] max_stepper_error").endswith(
        "Klipper read max_stepper_error from [mcu], never from [printer], not imported")
    assert "mcu" not in values(result)


# =========================================================================== bad values

@pytest.mark.parametrize("line, message", [
    ("max_velocity: -5", "[printer] max_velocity: -5 is invalid: Klipper requires a value "
                         "above 0; printhost's default 300.0 is used"),
    ("max_velocity: fast", "[printer] max_velocity: 'fast' is not a number; printhost's "
                           "default 300.0 is used"),
    ("max_velocity: nan", "[printer] max_velocity: 'nan' is not a finite number; printhost's "
                          "default 300.0 is used"),
    ("max_velocity: 9000", "[printer] max_velocity = 9000: rejected by printhost "
                           "(printer.max_velocity: 9000.0 is above the maximum 5000.0); "
                           "printhost's default 300.0 is used"),
    ("minimum_cruise_ratio: 1", "[printer] minimum_cruise_ratio: 1 is invalid: Klipper "
                                "requires a value below 1; printhost's default 0.5 is used"),
    ("minimum_cruise_ratio: 0.995", "[printer] minimum_cruise_ratio = 0.995: rejected by "
                                    "printhost (printer.minimum_cruise_ratio: 0.995 is above "
                                    "the maximum 0.99); printhost's default 0.5 is used"),
])
def test_bad_numbers_are_reported_with_section_and_key(tmp_path, line, message):
    key = line.split(":")[0]
    text = MINIMAL.replace("max_velocity: 300\n", "") if key == "max_velocity" else MINIMAL
    result = convert(tmp_path, text.replace("max_accel: 3000", f"max_accel: 3000\n{line}"))
    assert one_problem(result, f"[printer] {key}") == message
    assert key not in values(result)["printer"]
    assert result.settings is not None


def test_derived_defaults_use_the_value_in_effect(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("max_velocity: 300", "max_velocity: 9000")
                     + "[extruder]\nnozzle_diameter: 0.4\nfilament_diameter: 1.75\n"
                       "min_temp: 0\nmax_temp: 250\ncontrol: pid\npid_kp: 1\npid_ki: 1\n"
                       "pid_kd: 1\n")
    p = values(result)["printer"]
    assert "max_velocity" not in p
    # Klipper would take max_z_velocity = max_velocity; printhost runs at its default
    # 300, so that is what the derived values follow.
    assert p["max_z_velocity"] == 300.0
    ratio = 4 * 0.4 ** 2 / (3.141592653589793 * (1.75 / 2) ** 2)
    assert p["max_extrude_only_velocity"] == pytest.approx(300 * ratio, rel=1e-11)


def test_klipper_cross_checks_use_klippers_own_values(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("max_velocity: 300",
                                               "max_velocity: 9000\nmax_z_velocity: 9500"))
    assert one_problem(result, "[printer] max_z_velocity") == (
        "[printer] max_z_velocity: 9500 is invalid: Klipper requires at most 9000; "
        "printhost's default 15.0 is used")


def test_values_printhost_rejects_only_together_drop_their_table(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [extruder]
        nozzle_diameter: 0.4
        filament_diameter: 1.75
        min_temp: 500
        max_temp: 2000
        min_extrude_temp: 600
        control: pid
        pid_kp: 1
        pid_ki: 2
        pid_kd: 3
        """))
    # max_temp 2000 is beyond printhost's limit; its default 280 is below min_temp 500,
    # so the whole heater keeps printhost's (consistent) defaults.
    assert "extruder" not in values(result).get("heaters", {})
    assert one_problem(result, "[extruder] max_temp").startswith(
        "[extruder] max_temp = 2000: rejected by printhost")
    assert one_problem(result, "[extruder] pid_kp").startswith(
        "[extruder] pid_kp: dropped with the rest of [heaters.extruder] because printhost "
        "rejects the combination (heaters.extruder.max_temp: must be greater than min_temp)")
    assert result.settings.heaters.extruder.pid_kp == HeaterSettings().pid_kp


def test_required_keys(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("microsteps: 16\nrotation_distance: 40\n"
                                               "position_endstop: 0\nposition_max: 235\n", "", 1)
                     .replace("max_accel: 3000\n", ""))
    assert result.unconverted == [
        "[printer] max_accel: required by Klipper but missing; printhost's default 3000.0 "
        "is used",
        "[stepper_x] rotation_distance: required by Klipper but missing; printhost's default "
        "40.0 is used",
        "[stepper_x] microsteps: required by Klipper but missing; printhost's default 16 "
        "is used",
        "[stepper_x] position_max: required by Klipper but missing; printhost's default "
        "235.0 is used",
        "[stepper_x] position_endstop: required by Klipper but missing; printhost's default "
        "0.0 is used",
    ]


# =========================================================================== steppers

@pytest.mark.parametrize("ratio, expected", [
    ("80:20, 16:48", 80 / 20 * 16 / 48),
    ("5:1", 5.0),
    ("57:11, 2:1,", 57 / 11 * 2),
    ("", 1.0),
])
def test_gear_ratio(tmp_path, ratio, expected):
    result = convert(tmp_path, MINIMAL.replace("rotation_distance: 8",
                                               f"rotation_distance: 8\ngear_ratio: {ratio}"))
    assert values(result)["steppers"]["z"]["gear_ratio"] == pytest.approx(expected, rel=1e-11)
    assert result.unconverted == []


@pytest.mark.parametrize("ratio", ["5", "5:1:2", "a:b", "3:0"])
def test_bad_gear_ratio(tmp_path, ratio):
    result = convert(tmp_path, MINIMAL.replace("rotation_distance: 8",
                                               f"rotation_distance: 8\ngear_ratio: {ratio}"))
    message = one_problem(result, "[stepper_z] gear_ratio")
    assert "is invalid" in message and message.endswith("printhost's default 1.0 is used")


def test_stepper_details(tmp_path):
    result = convert(tmp_path, MINIMAL.replace(
        "rotation_distance: 8", "rotation_distance: 8\nfull_steps_per_rotation: 400\n"
        "homing_retract_dist: 0\nstep_pulse_duration: 0.000002").replace(
        "position_endstop: 0\nposition_max: 235",
        "position_endstop: 0\nposition_max: 235\nfull_steps_per_rotation: 201", 1))
    v = values(result)
    assert v["steppers"]["z"]["full_steps_per_rotation"] == 400
    assert v["printer"]["axes"]["z"]["homing_speed"] == 5.0     # Klipper's default
    assert "full_steps_per_rotation" not in v["steppers"]["x"]
    assert one_problem(result, "[stepper_x] full_steps_per_rotation") == (
        "[stepper_x] full_steps_per_rotation: 201 is invalid: Klipper requires a multiple "
        "of 4; printhost's default 200 is used")
    assert one_problem(result, "[stepper_z] homing_retract_dist").endswith(
        "printhost has no such setting, not imported")
    assert one_problem(result, "[stepper_z] step_pulse_duration").endswith(
        "printhost sends the same step pulse duration for every stepper (2 us), not imported")


def test_position_checks_follow_klipper(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("position_endstop: 0\nposition_max: 235",
                                               "position_endstop: 240\nposition_max: 235", 1)
                     .replace("position_max: 250", "position_max: -1"))
    assert one_problem(result, "[stepper_x] position_endstop") == (
        "[stepper_x] position_endstop: 240 is invalid: Klipper requires at most 235; "
        "printhost's default 0.0 is used")
    assert one_problem(result, "[stepper_z] position_max") == (
        "[stepper_z] position_max: -1 is invalid: Klipper requires a value above 0; "
        "printhost's default 250.0 is used")


def test_legacy_step_distance_without_microsteps(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("microsteps: 16\nrotation_distance: 8",
                                               "step_distance: 0.0025\ngear_ratio: 3:1"))
    assert values(result)["steppers"]["z"] == {"rotation_distance": 8.0, "microsteps": 16,
                                               "full_steps_per_rotation": 200,
                                               "gear_ratio": 1.0, "step_pin": "PB0",
                                               "dir_pin": "PC5", "enable_pin": "!PB1",
                                               "endstop_pin": "^PC2"}
    assert result.unconverted == []
    assert any("assuming 16 microsteps" in n for n in result.notes)
    assert any(n.startswith("[stepper_z] gear_ratio: ignored") for n in result.notes)


def test_legacy_split_printhost_refuses_keeps_the_step_size(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("microsteps: 16\nrotation_distance: 8",
                                               "step_distance: 0.0001\nmicrosteps: 512"))
    assert result.unconverted == [
        "[stepper_z] microsteps = 512: rejected by printhost (steppers.z.microsteps: 512 is "
        "above the maximum 256); 16 is used and rotation_distance computed with it"]
    assert values(result)["steppers"]["z"]["microsteps"] == 16
    assert result.settings.steppers.z.step_distance_mm == pytest.approx(0.0001)


def test_rotation_distance_wins_over_step_distance(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("rotation_distance: 8",
                                               "rotation_distance: 8\nstep_distance: 0.01"))
    assert values(result)["steppers"]["z"]["rotation_distance"] == 8.0
    assert any(n.startswith("[stepper_z] step_distance: ignored") for n in result.notes)


def test_probe_endstop(tmp_path):
    z_probe = MINIMAL.replace("position_endstop: 0\nposition_max: 250",
                              "endstop_pin: probe:z_virtual_endstop\nposition_min: -2\n"
                              "position_max: 250")
    result = convert(tmp_path, z_probe + "[probe]\npin: PA1\nz_offset: 0.85\n")
    assert values(result)["printer"]["axes"]["z"]["position_endstop"] == 0.85
    assert "[probe]: section not supported (printhost does not probe); its z_offset and pin " \
           "were used as the Z endstop position and pin" in result.unconverted
    # A plain probe triggers without deploying: Klipper's virtual endstop reads its pin.
    assert values(result)["steppers"]["z"]["endstop_pin"] == "PA1"
    assert any(n.startswith("[stepper_z] endstop_pin = probe:z_virtual_endstop: printhost "
                            "does not probe; the axis homes on [probe] pin = PA1")
               for n in result.notes)

    result = convert(tmp_path, z_probe.replace("position_min: -2",
                                               "position_min: -2\nposition_endstop: 3"))
    assert one_problem(result, "[stepper_z] position_endstop: invalid").startswith(
        "[stepper_z] position_endstop: invalid: Klipper refuses position_endstop when the axis "
        "homes on the probe")
    assert one_problem(result, "[stepper_z] position_endstop: the axis homes").endswith(
        "no probe section was found; printhost's default 0.0 is used")

    result = convert(tmp_path, z_probe + "[bltouch]\nsensor_pin: PB1\nz_offset: -5\n")
    assert one_problem(result, "[bltouch] z_offset") == (
        "[bltouch] z_offset: -5 is invalid: Klipper requires at least -2; printhost's "
        "default 0.0 is used")


# =========================================================================== extruder, heaters

EXTRUDER_STEPPER = """\
step_pin: PB3
dir_pin: !PB4
enable_pin: !PD2
microsteps: 16
rotation_distance: 33.5
"""

EXTRUDER = """
[extruder]
""" + EXTRUDER_STEPPER + """\
nozzle_diameter: 0.6
filament_diameter: 1.75
heater_pin: PC8
sensor_type: EPCOS 100K B57560G104F
sensor_pin: PA0
min_temp: 0
max_temp: 300
control: pid
pid_Kp: 20
pid_Ki: 1
pid_Kd: 100
"""


def test_extruder_all_keys(tmp_path):
    result = convert(tmp_path, MINIMAL + EXTRUDER + dedent("""\
        max_extrude_cross_section: 1.5
        max_extrude_only_distance: 200
        max_extrude_only_velocity: 60
        max_extrude_only_accel: 800
        instantaneous_corner_velocity: 2.5
        pressure_advance: 0.1
        pressure_advance_smooth_time: 0.02
        min_extrude_temp: 190
        max_power: 0.8
        smooth_time: 1.0
        shared_heater: other
        """))
    v = values(result)
    assert v["extruder"] == {"nozzle_diameter": 0.6, "filament_diameter": 1.75,
                             "max_extrude_cross_section": 1.5, "max_extrude_only_distance": 200.0,
                             "instantaneous_corner_velocity": 2.5, "pressure_advance": 0.1,
                             "pressure_advance_smooth_time": 0.02, "min_extrude_temp": 190.0}
    assert v["printer"]["max_extrude_only_velocity"] == 60.0
    assert v["printer"]["max_extrude_only_accel"] == 800.0
    assert v["heaters"]["extruder"] == {
        "min_temp": 0.0, "max_temp": 300.0, "max_power": 0.8, "control": "pid",
        "pid_kp": 20.0, "pid_ki": 1.0, "pid_kd": 100.0, "heater_pin": "PC8",
        "sensor_pin": "PA0", "sensor_type": "EPCOS 100K B57560G104F",
        "pullup_resistor": 4700.0, "pwm_cycle_time": 0.1}
    assert v["steppers"]["extruder"]["rotation_distance"] == 33.5
    assert steppers_extruder_pins(v) == {"step_pin": "PB3", "dir_pin": "!PB4",
                                         "enable_pin": "!PD2"}
    assert result.unconverted == [
        "[extruder] smooth_time: printhost always smooths over 1 s (Klipper's default); "
        "the same value",
        "[extruder] shared_heater: printhost has no such setting, not imported",
    ]


@pytest.mark.parametrize("line, message", [
    ("filament_diameter: 0.5", "[extruder] filament_diameter: 0.5 is invalid: Klipper requires "
                               "at least 0.6; printhost's default 1.75 is used"),
    ("min_extrude_temp: 320", "[extruder] min_extrude_temp: 320 is invalid: Klipper requires "
                              "at most 300; printhost's default 170.0 is used"),
    ("pressure_advance_smooth_time: 0.3", "[extruder] pressure_advance_smooth_time: 0.3 is "
                                          "invalid: Klipper requires at most 0.2; printhost's "
                                          "default 0.04 is used"),
    ("max_power: 0", "[extruder] max_power: 0 is invalid: Klipper requires a value above 0; "
                     "printhost's default 1.0 is used"),
    ("min_temp: -300", "[extruder] min_temp: -300 is invalid: Klipper requires at least "
                       "-273.15; printhost's default 0.0 is used"),
])
def test_extruder_bad_values(tmp_path, line, message):
    key = line.split(":")[0]
    text = "\n".join(x for x in EXTRUDER.splitlines() if not x.startswith(key + ":"))
    result = convert(tmp_path, MINIMAL + text + "\n" + line + "\n")
    assert one_problem(result, f"[extruder] {key}") == message


def test_extruder_without_a_stepper(tmp_path):
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace(EXTRUDER_STEPPER, ""))
    assert "extruder" not in values(result)["steppers"]
    assert any(n.startswith("[extruder]: has no stepper in Klipper") for n in result.notes)


def test_heater_control(tmp_path):
    defaults = HeaterSettings()
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace("control: pid", "control: watermark")
                     + "max_delta: 3.5\n")
    heater = values(result)["heaters"]["extruder"]
    assert heater["control"] == "watermark" and heater["max_delta"] == 3.5
    assert not {"pid_kp", "pid_ki", "pid_kd"} & set(heater)
    assert result.settings.heaters.extruder.pid_kp == defaults.pid_kp
    assert result.unconverted == [
        f"[extruder] pid_{k}: not used with control = watermark, not imported"
        for k in ("kp", "ki", "kd")]
    # Klipper's default max_delta when not set.
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace("control: pid", "control: watermark"))
    assert values(result)["heaters"]["extruder"]["max_delta"] == 2.0
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace("control: pid", "control: watermark")
                     + "max_delta: 0\n")
    assert one_problem(result, "[extruder] max_delta") == (
        "[extruder] max_delta: 0 is invalid: Klipper requires a value above 0; printhost's "
        f"default {defaults.max_delta!r} is used")
    # pid ignores max_delta, as Klipper does.
    result = convert(tmp_path, MINIMAL + EXTRUDER + "max_delta: 2\n")
    assert result.unconverted == ["[extruder] max_delta: not used with control = pid, "
                                  "not imported"]
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace("control: pid", "control: bang"))
    assert result.unconverted[0] == (
        "[extruder] control = bang: not supported (Klipper accepts only pid or watermark); "
        "printhost's default control \"pid\" with its default gains is used")
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace("control: pid\n", ""))
    assert result.unconverted[0] == ("[extruder] control: required by Klipper but missing; "
                                     "printhost's default control \"pid\" with its default "
                                     "gains is used")
    assert "[extruder] pid_kp: not imported because control is missing" in result.unconverted
    result = convert(tmp_path, MINIMAL + EXTRUDER.replace("pid_Kd: 100\n", ""))
    assert result.unconverted == ["[extruder] pid_kd: required by Klipper but missing; "
                                  f"printhost's default {defaults.pid_kd!r} is used"]


def test_heater_bed(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [heater_bed]
        heater_pin: PA2
        sensor_type: Generic 3950
        sensor_pin: PC4
        pullup_resistor: 2200
        pwm_cycle_time: 0.02
        control: pid
        pid_kp: 70
        pid_ki: 1.5
        pid_kd: 800
        min_temp: 0
        max_temp: 120
        max_power: 0.6
        min_extrude_temp: 0
        inline_resistor: 0
        """))
    assert values(result)["heaters"]["heater_bed"] == {
        "min_temp": 0.0, "max_temp": 120.0, "max_power": 0.6, "control": "pid",
        "pid_kp": 70.0, "pid_ki": 1.5, "pid_kd": 800.0, "heater_pin": "PA2",
        "sensor_pin": "PC4", "sensor_type": "Generic 3950", "pullup_resistor": 2200.0,
        "pwm_cycle_time": 0.02}
    assert result.unconverted == [
        "[heater_bed] min_extrude_temp: only meaningful for an extruder, not imported",
        "[heater_bed] inline_resistor: printhost's thermistor reading has no such setting, "
        "not imported",
    ]


@pytest.mark.parametrize("lines, message", [
    ("sensor_type: MAX31865\npullup_resistor: 4700",
     "[heater_bed] sensor_type = MAX31865: printhost has no such sensor"),
    ("sensor_type: PT1000\npwm_cycle_time: 0.5",
     "[heater_bed] pwm_cycle_time: 0.5 is invalid: Klipper requires at most 0.3; printhost's "
     "default 0.1 is used"),
    ("sensor_type: PT1000\npullup_resistor: 0",
     "[heater_bed] pullup_resistor: 0 is invalid: Klipper requires a value above 0; "
     "printhost's default 4700.0 is used"),
])
def test_heater_sensor_problems(tmp_path, lines, message):
    result = convert(tmp_path, MINIMAL + "[heater_bed]\nheater_pin: PA2\nsensor_pin: PC4\n"
                     "control: pid\npid_kp: 1\npid_ki: 1\npid_kd: 1\nmin_temp: 0\n"
                     "max_temp: 100\n" + lines + "\n")
    assert result.unconverted[0].startswith(message)
    if "MAX31865" in lines:
        # The pin and resistor of a sensor printhost cannot read are not taken either.
        assert result.unconverted[1:] == [
            "[heater_bed] pullup_resistor: belongs to sensor_type MAX31865, which printhost "
            "cannot read, not imported; printhost's default 4700.0 is used",
            "[heater_bed] sensor_pin = PC4: belongs to sensor_type MAX31865, which printhost "
            "cannot read; printhost's default \"PC3\" is used"]
        assert "sensor_pin" not in values(result)["heaters"]["heater_bed"]


def test_missing_heater_sections_keep_printhost_defaults(tmp_path):
    result = convert(tmp_path, MINIMAL)
    assert "heaters" not in values(result)
    assert any(n.startswith("[heater_bed]: not in the Klipper config") for n in result.notes)
    assert any(n.startswith("[extruder]: not in the Klipper config") for n in result.notes)


# =========================================================================== other sections

def test_input_shaper(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [input_shaper]
        shaper_type: 2HUMP_EI
        shaper_type_y: zv
        shaper_freq_x: 40
        shaper_freq_y: 55.5
        damping_ratio_x: 0.2
        shaper_freq_z: 30
        """))
    assert values(result)["input_shaper"] == {
        "shaper_type_x": "2hump_ei", "shaper_freq_x": 40.0, "damping_ratio_x": 0.2,
        "shaper_type_y": "zv", "shaper_freq_y": 55.5, "damping_ratio_y": 0.1}
    assert result.unconverted == ["[input_shaper] shaper_freq_z: printhost shapes X and Y "
                                  "only, not imported"]
    assert any("written as '2hump_ei'" in n for n in result.notes)


@pytest.mark.parametrize("lines, message", [
    ("shaper_type_x: mzv(n=4)", "[input_shaper] shaper_type_x = mzv(n=4): shaper parameters "
                                "are not supported; printhost's default \"mzv\" is used"),
    ("shaper_type_x: smooth", "[input_shaper] shaper_type_x = smooth: unknown shaper type"),
    ("shaper_type_x: ei\ndamping_ratio_x: 0.5", "[input_shaper] damping_ratio_x: 0.5 is "
                                                "invalid: Klipper requires at most 0.4"),
    ("shaper_freq_x: -1", "[input_shaper] shaper_freq_x: -1 is invalid: Klipper requires at "
                          "least 0"),
])
def test_input_shaper_bad_values(tmp_path, lines, message):
    result = convert(tmp_path, MINIMAL + "[input_shaper]\n" + lines + "\n")
    assert len(result.unconverted) == 1 and result.unconverted[0].startswith(message)


def test_mcu_arcs_and_retraction(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [mcu]
        serial: /dev/ttyACM0
        baud: 115200
        canbus_uuid: 11aa22bb33cc
        max_stepper_error: 0.00004
        is_non_critical: false
        [gcode_arcs]
        resolution: 0.1
        [firmware_retraction]
        retract_length: 1.5
        unretract_extra_length: 0.1
        """))
    v = values(result)
    assert v["mcu"] == {"serial": "/dev/ttyACM0", "baud": 115200,
                        "max_stepper_error": 0.00004}
    assert v["gcode"] == {"arc_resolution": 0.1}
    assert v["firmware_retraction"] == {"retract_length": 1.5, "retract_speed": 20.0,
                                        "unretract_extra_length": 0.1, "unretract_speed": 10.0}
    assert result.unconverted == [
        "[mcu] canbus_uuid: printhost uses the serial device, not imported",
        "[mcu] is_non_critical: printhost has no such setting, not imported",
    ]


@pytest.mark.parametrize("method, expected, message", [
    ("command", "command", None),
    ("arduino", None, "[mcu] restart_method = arduino: not supported (printhost restarts the "
                      "firmware with its reset command, or with none asks for a power cycle; "
                      "it cannot reset the board the arduino way); printhost's default "
                      "\"command\" is used"),
    ("cheetah", None, "[mcu] restart_method = cheetah: not supported"),
    ("rpi_usb", None, "[mcu] restart_method = rpi_usb: not supported"),
    ("Command", None, "[mcu] restart_method = Command: invalid (Klipper accepts arduino, "
                      "cheetah, command, rpi_usb); printhost's default \"command\" is used"),
])
def test_mcu_restart_method(tmp_path, method, expected, message):
    result = convert(tmp_path, MINIMAL + f"[mcu]\nserial: /dev/ttyACM0\n"
                                         f"restart_method: {method}\n")
    assert values(result)["mcu"].get("restart_method") == expected
    assert values(result)["mcu"]["baud"] == 250000          # Klipper's default
    if message is None:
        assert result.unconverted == []
    else:
        assert len(result.unconverted) == 1 and result.unconverted[0].startswith(message)


def test_mcu_over_can_bus_only(tmp_path):
    result = convert(tmp_path, MINIMAL + "[mcu]\ncanbus_uuid: 11aa22bb33cc\n")
    assert "mcu" not in values(result)
    assert result.unconverted == ["[mcu] canbus_uuid: printhost reaches the MCU over a serial "
                                  "device only (no CAN bus), not imported"]


def test_fan(tmp_path):
    result = convert(tmp_path, MINIMAL + "[fan]\npin: !PA8\ncycle_time: 0.002\n"
                                         "kick_start_time: 0.5\n")
    assert values(result)["fan"] == {"pin": "!PA8", "cycle_time": 0.002}
    assert result.unconverted == ["[fan] kick_start_time: printhost has no such setting, "
                                  "not imported"]
    result = convert(tmp_path, MINIMAL)
    assert values(result)["fan"] == {"pin": ""}
    assert result.settings.fan.pin == ""


# =========================================================================== pins

def test_pins_in_klipper_syntax(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("step_pin: PB13", "step_pin: mcu:PB13")
                     .replace("endstop_pin: ^PC0", "endstop_pin: ^ ! PC0")
                     .replace("endstop_pin: ^PC1", "endstop_pin: ~PC1"))
    steppers = values(result)["steppers"]
    assert steppers["x"]["step_pin"] == "PB13"
    assert steppers["x"]["endstop_pin"] == "^!PC0"
    assert steppers["y"]["endstop_pin"] == "~PC1"
    assert result.unconverted == []


@pytest.mark.parametrize("old, new, message", [
    ("step_pin: PB13", "step_pin: ^PB13",
     "[stepper_x] step_pin = ^PB13: pin '^PB13': pull-up/pull-down (^ or ~) only applies to "
     "inputs; printhost's default \"PB13\" is used"),
    ("step_pin: PB13", "step_pin: toolboard:PB13",
     "[stepper_x] step_pin = toolboard:PB13: 'toolboard:PB13' is on the chip 'toolboard', "
     "not on the MCU printhost drives; printhost's default \"PB13\" is used"),
    ("dir_pin: !PB12", "dir_pin: P-12",
     "[stepper_x] dir_pin = P-12: 'P-12' is not a pin name (expected e.g. PC8, !PB12 or "
     "^PC0); printhost's default \"!PB12\" is used"),
    ("enable_pin: !PB14", "enable_pin: !!PB14",
     "[stepper_x] enable_pin = !!PB14: pin '!!PB14' repeats a modifier; "
     "steppers.x.enable_pin is left empty (no enable pin)"),
    ("endstop_pin: ^PC0", "endstop_pin: tmc2209_stepper_x:virtual_endstop",
     "[stepper_x] endstop_pin = tmc2209_stepper_x:virtual_endstop: "
     "'tmc2209_stepper_x:virtual_endstop' is on the chip 'tmc2209_stepper_x', not on the MCU "
     "printhost drives; printhost's default \"^PC0\" is used"),
])
def test_pins_printhost_cannot_take(tmp_path, old, new, message):
    result = convert(tmp_path, MINIMAL.replace(old, new, 1))
    assert result.unconverted == [message]
    assert result.settings is not None


def test_duplicate_pins(tmp_path):
    result = convert(tmp_path, MINIMAL.replace("endstop_pin: ^PC1", "endstop_pin: ^PC0")
                     + "[fan]\npin: PB13\n")
    assert values(result)["fan"]["pin"] == ""
    assert result.unconverted == [
        "[stepper_y] endstop_pin = ^PC0: pin PC0 is already used by steppers.x.endstop_pin "
        "([stepper_x] endstop_pin); printhost gives each pin to one key; printhost's default "
        "\"^PC1\" is used",
        "[fan] pin = PB13: pin PB13 is already used by steppers.x.step_pin ([stepper_x] "
        "step_pin); printhost gives each pin to one key; fan.pin is left empty (no part fan)",
    ]


def test_missing_pins_keep_or_replace_printhost_defaults(tmp_path):
    # No enable pin in Klipper: none in printhost either (not printhost's default).
    result = convert(tmp_path, MINIMAL.replace("enable_pin: !PB14\n", ""))
    assert values(result)["steppers"]["x"]["enable_pin"] == ""
    assert result.unconverted == []
    # A required pin that is missing keeps printhost's default; when an imported pin
    # already holds that default, an unused default pin holds the place.
    result = convert(tmp_path, MINIMAL.replace("step_pin: PB13\n", "")
                     .replace("step_pin: PB10", "step_pin: PB13"))
    assert values(result)["steppers"]["y"]["step_pin"] == "PB13"
    placeholder = values(result)["steppers"]["x"]["step_pin"]
    assert placeholder not in ("PB13", "")
    assert one_problem(result, "[stepper_x] step_pin") == (
        "[stepper_x] step_pin: required by Klipper but missing; printhost's default "
        "\"PB13\" is already used by steppers.y.step_pin ([stepper_y] step_pin), so the "
        f"unused \"{placeholder}\" holds its place: set the right pin before connecting a board")
    # Defaults of absent sections move aside for imported pins too.
    result = convert(tmp_path, MINIMAL + "[fan]\npin: PC8\n")
    assert values(result)["fan"]["pin"] == "PC8"
    moved = values(result)["heaters"]["extruder"]["heater_pin"]
    assert moved != "PC8"
    assert one_problem(result, "heaters.extruder.heater_pin").startswith(
        "heaters.extruder.heater_pin: printhost's default \"PC8\" is already used by fan.pin")


@pytest.mark.parametrize("text, message", [
    ("[gcode_arcs]\nresolution: 0", "[gcode_arcs] resolution: 0 is invalid: Klipper requires "
                                    "a value above 0; printhost's default 1.0 is used"),
    ("[firmware_retraction]\nretract_speed: 0.5", "[firmware_retraction] retract_speed: 0.5 is "
                                                  "invalid: Klipper requires at least 1; "
                                                  "printhost's default 20.0 is used"),
    ("[mcu]\nserial: /dev/ttyACM0\nmax_stepper_error: 0.5", "[mcu] max_stepper_error = 0.5: rejected by printhost "
                                      "(mcu.max_stepper_error: 0.5 is above the maximum 0.01); "
                                      "printhost's default 2.5e-05 is used"),
])
def test_other_bad_values(tmp_path, text, message):
    assert convert(tmp_path, MINIMAL + text + "\n").unconverted == [message]


def test_unsupported_sections_are_each_listed(tmp_path):
    result = convert(tmp_path, MINIMAL + dedent("""
        [stepper_z1]
        step_pin: PA1
        [extruder1]
        [tmc5160 stepper_x]
        [mcu toolboard]
        [neopixel lights]
        """))
    assert result.unconverted == [
        "[stepper_z1]: section not supported (printhost drives one motor per axis)",
        "[extruder1]: section not supported (printhost drives one extruder)",
        "[tmc5160 stepper_x]: section not supported (printhost does not set up stepper "
        "drivers over UART or SPI; its steppers use step, dir and enable pins only)",
        "[mcu toolboard]: section not supported (printhost drives a single MCU)",
        "[neopixel lights]: section not supported",
    ]


# =========================================================================== main_import

def test_main_import_to_stdout(capsys):
    assert main_import(str(COREXY_CFG), None) == 0
    out, err = capsys.readouterr()
    assert out == import_klipper(COREXY_CFG).toml
    assert "12 item(s) not converted:" in err
    assert "  - [idle_timeout]: section not supported" in err
    assert "note: [printer] max_accel_to_decel = 3000: legacy key" in err


def test_main_import_to_file(tmp_path, capsys):
    out = tmp_path / "printhost.toml"
    out.write_text("old contents\n")
    assert main_import(str(PRINTER_CFG), str(out)) == 0
    stdout, err = capsys.readouterr()
    assert stdout == ""
    assert out.read_text() == import_klipper(PRINTER_CFG).toml
    assert f"wrote {out} from {PRINTER_CFG}" in err
    assert "  - [bltouch]: section not supported" in err
    assert [p.name for p in tmp_path.iterdir()] == ["printhost.toml"]


def test_main_import_file_permissions(tmp_path, capsys):
    kept = tmp_path / "kept.toml"
    kept.write_text("")
    kept.chmod(0o640)
    assert main_import(str(PRINTER_CFG), str(kept)) == 0
    assert kept.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "fresh.toml"
    old_umask = os.umask(0o022)
    try:
        assert main_import(str(PRINTER_CFG), str(fresh)) == 0
    finally:
        os.umask(old_umask)
    assert fresh.stat().st_mode & 0o777 == 0o644     # a config, not a secret


def test_main_import_fatal_errors(tmp_path, capsys):
    path = write(tmp_path, "printer.cfg", "[stepper_x]\nmicrosteps: 16\n")
    assert main_import(str(path), None) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("printhost: cannot import Klipper config: ")
    assert "no [printer] section" in err
    assert main_import(str(tmp_path / "absent.cfg"), str(tmp_path / "x.toml")) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


def test_main_import_refuses_to_overwrite_its_input(tmp_path, capsys):
    path = write(tmp_path, "printer.cfg", MINIMAL)
    assert main_import(str(path), str(path)) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_text() == MINIMAL


def test_main_import_unwritable_output(tmp_path, capsys):
    assert main_import(str(PRINTER_CFG), str(tmp_path / "no" / "such" / "dir.toml")) == 2
    assert "cannot write" in capsys.readouterr().err


def test_imported_file_passes_printhost_config_check(tmp_path):
    out = tmp_path / "printhost.toml"
    assert main_import(str(PRINTER_CFG), str(out)) == 0
    env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "printhost", "config", "check", str(out)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{out}: OK (cartesian, backend simulated)"
