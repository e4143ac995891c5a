"""The TOML loader: defaults, the shipped file, unknown keys, types, ranges and cross checks."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

import printhost
from printhost.config import (
    AxisSettings,
    ConfigError,
    HeaterSettings,
    Settings,
    ThermalBodySettings,
    describe,
    load_settings,
    parse_settings,
    with_overrides,
)

REPO_ROOT = Path(printhost.__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "config" / "printhost.toml"


def parse(text: str, source: str = "test.toml") -> Settings:
    return parse_settings(tomllib.loads(text), source)


def error_of(text: str, source: str = "test.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return str(info.value)


def leaf_paths(instance, prefix: str = "") -> set[str]:
    """Every leaf key, found independently of `describe` by walking the dataclasses."""
    out: set[str] = set()
    for f in dataclasses.fields(instance):
        if f.metadata.get("internal"):
            continue
        value = getattr(instance, f.name)
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            out |= leaf_paths(value, path)
        else:
            out.add(path)
    return out


# --------------------------------------------------------------------------- defaults


def test_defaults_pass_validation_and_cross_checks():
    settings = parse("", "<empty>")
    assert settings == dataclasses.replace(Settings(), source="<empty>")
    assert Settings().source == "<defaults>"
    assert Settings().server.port == 7130


def test_defaults_survive_a_round_trip_through_their_own_values():
    # Feeding every default back in as explicit data must be accepted unchanged.
    data: dict = {}
    for path, value, _doc in describe():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    assert parse_settings(data, "<defaults>") == Settings()


def test_shipped_file_equals_the_defaults():
    loaded = load_settings(SHIPPED)
    assert loaded.source == str(SHIPPED)
    assert dataclasses.replace(loaded, source=Settings().source) == Settings()


def test_shipped_file_sets_every_key_explicitly():
    # Otherwise the file could omit a key and still "equal" the defaults.
    data = tomllib.loads(SHIPPED.read_text())
    present: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(value, path)
            else:
                present.add(path)

    walk(data, "")
    assert present == leaf_paths(Settings())


def test_section_defaults_differ_between_hotend_and_bed():
    s = Settings()
    assert s.simulation.hotend.heater_power_w == 40.0
    assert s.simulation.bed.heater_power_w == 220.0
    assert s.heaters.extruder.max_temp == 280.0
    assert s.heaters.heater_bed.max_temp == 130.0
    assert s.printer.axes.z.position_max == 250.0
    assert s.printer.axes.z.homing_speed == 10.0


def test_mutable_default_is_not_shared_between_instances():
    a, b = Settings(), Settings()
    assert a.simulation.start_position == b.simulation.start_position
    assert a.simulation.start_position is not b.simulation.start_position


def test_state_path_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings().state_path() == tmp_path / ".local/state/printhost"


# --------------------------------------------------------------------------- nested overlay


def test_setting_one_bed_key_keeps_the_bed_specific_defaults():
    s = parse("[simulation.bed]\nsensor_lag_s = 7.5\n")
    assert s.simulation.bed == dataclasses.replace(Settings().simulation.bed, sensor_lag_s=7.5)
    assert s.simulation.bed.heater_power_w == 220.0
    assert s.simulation.bed.heat_capacity_j_k == 450.0
    assert s.simulation.hotend == Settings().simulation.hotend
    # and not the plain class default
    assert s.simulation.bed.heater_power_w != ThermalBodySettings().heater_power_w


def test_setting_one_heater_key_keeps_that_heaters_defaults():
    s = parse("[heaters.heater_bed]\nmax_temp = 110.0\n")
    assert s.heaters.heater_bed.max_temp == 110.0
    assert s.heaters.heater_bed.pid_kp == 70.0
    assert s.heaters.heater_bed.pid_kd == 900.0
    assert HeaterSettings().pid_kp != 70.0
    assert s.heaters.extruder == Settings().heaters.extruder


def test_setting_one_axis_key_keeps_that_axis_defaults():
    s = parse("[printer.axes.z]\nposition_max = 300.0\n")
    assert s.printer.axes.z.position_max == 300.0
    assert s.printer.axes.z.homing_speed == 10.0
    assert AxisSettings().homing_speed == 50.0
    assert s.printer.axes.x == Settings().printer.axes.x


def test_values_are_applied_and_ints_widen_to_float():
    s = parse("""
[server]
port = 8080
log_level = "debug"
[control]
status_hz = 50
[discovery]
enabled = false
[printer]
kinematics = "corexy"
""")
    assert s.server.port == 8080 and s.server.log_level == "debug"
    assert s.control.status_hz == 50.0 and isinstance(s.control.status_hz, float)
    assert s.discovery.enabled is False
    assert s.printer.kinematics == "corexy"


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("text, key, where", [
    ("colour = 1\n", "colour", "top level"),
    ("[server]\nprot = 1\n", "server.prot", "[server]"),
    ("[printer.axes.q]\nposition_min = 0.0\n", "printer.axes.q", "[printer.axes]"),
    ("[printer.axes.x]\nposition_mni = 0.0\n", "printer.axes.x.position_mni", "[printer.axes.x]"),
    ("[simulation.hotend]\nfoo = 1.0\n", "simulation.hotend.foo", "[simulation.hotend]"),
    ("[heaters.chamber]\nmax_temp = 60.0\n", "heaters.chamber", "[heaters]"),
    ("source = \"x\"\n", "source", "top level"),
])
def test_unknown_key_names_file_and_dotted_key(text, key, where):
    msg = error_of(text, "/etc/printhost/printhost.toml")
    assert msg.startswith(f"/etc/printhost/printhost.toml: {key}: unknown key in {where}")


def test_unknown_key_message_lists_the_known_keys():
    msg = error_of("[pause]\npark_z = 1.0\n")
    assert "known:" in msg and "park_x" in msg and "lift_z_mm" in msg


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize("text, key, expected", [
    ('[server]\nport = "7130"\n', "server.port", "an integer"),
    ("[server]\nport = 7130.0\n", "server.port", "an integer"),
    ("[server]\nport = true\n", "server.port", "an integer"),
    ('[printer]\nmax_velocity = "fast"\n', "printer.max_velocity", "a number"),
    ("[printer]\nmax_velocity = true\n", "printer.max_velocity", "a number"),
    ("[discovery]\nenabled = 1\n", "discovery.enabled", "a boolean"),
    ('[discovery]\nenabled = "yes"\n', "discovery.enabled", "a boolean"),
    ("[server]\nhost = 127\n", "server.host", "a string"),
    ("[simulation]\nstart_position = 1.0\n", "simulation.start_position", "a list"),
    ("[server]\nport = [7130]\n", "server.port", "an integer"),
])
def test_wrong_type_names_key_and_expected_type(text, key, expected):
    msg = error_of(text)
    assert msg.startswith(f"test.toml: {key}: expected {expected}, got ")


@pytest.mark.parametrize("text, key", [
    ("server = 5\n", "server"),
    ('[printer]\naxes = "xyz"\n', "printer.axes"),
    ("[printer.axes]\nx = 235.0\n", "printer.axes.x"),
    ("[simulation]\nbed = 1\n", "simulation.bed"),
])
def test_scalar_where_a_table_is_expected(text, key):
    msg = error_of(text)
    assert msg.startswith(f"test.toml: {key}: expected a table [{key}]")


# --------------------------------------------------------------------------- ranges and choices


@pytest.mark.parametrize("text, key, word, bound", [
    ("[server]\nport = 0\n", "server.port", "below the minimum", "1"),
    ("[server]\nport = 70000\n", "server.port", "above the maximum", "65535"),
    ("[control]\nstatus_hz = 3.9\n", "control.status_hz", "below the minimum", "4.0"),
    ("[heaters.extruder]\nmax_power = 1.5\n", "heaters.extruder.max_power", "above the maximum",
     "1.0"),
    ("[heaters.extruder]\nmin_temp = -300.0\n", "heaters.extruder.min_temp", "below the minimum",
     "-273.0"),
    ("[simulation.bed]\nsensor_lag_s = -1.0\n", "simulation.bed.sensor_lag_s", "below the minimum",
     "0.0"),
    ("[auth]\nlogin_max_failures = 0\n", "auth.login_max_failures", "below the minimum", "1"),
])
def test_out_of_range_values(text, key, word, bound):
    msg = error_of(text)
    assert msg.startswith(f"test.toml: {key}: ")
    assert word in msg and msg.endswith(bound)


@pytest.mark.parametrize("text", [
    "[server]\nport = 1\n",
    "[server]\nport = 65535\n",
    "[control]\nstatus_hz = 4.0\n",
    "[control]\nstatus_hz = 200\n",
    "[heaters.extruder]\nmax_power = 1.0\n",
    "[simulation.bed]\nsensor_lag_s = 0.0\n",
])
def test_bounds_are_inclusive(text):
    parse(text)


@pytest.mark.parametrize("text, key, value", [
    ('[server]\nlog_level = "verbose"\n', "server.log_level", "'verbose'"),
    ('[server]\nlog_level = "INFO"\n', "server.log_level", "'INFO'"),
    ('[printer]\nkinematics = "delta"\n', "printer.kinematics", "'delta'"),
    ('[control]\nbackend = "klipper"\n', "control.backend", "'klipper'"),
])
def test_choices(text, key, value):
    msg = error_of(text)
    assert msg.startswith(f"test.toml: {key}: {value} is not one of ")


@pytest.mark.parametrize("literal", ["nan", "+nan", "-nan", "inf", "+inf", "-inf"])
@pytest.mark.parametrize("key", ["printer.max_velocity", "simulation.ambient_c",
                                 "pause.park_x", "heaters.extruder.pid_kp"])
def test_nan_and_infinity_are_rejected(literal, key):
    section, name = key.rsplit(".", 1)
    msg = error_of(f"[{section}]\n{name} = {literal}\n")
    assert msg.startswith(f"test.toml: {key}: must be a finite number")


def test_nan_for_an_integer_key_is_a_type_error():
    assert "server.port: expected an integer" in error_of("[server]\nport = nan\n")


# --------------------------------------------------------------------------- cross checks


@pytest.mark.parametrize("text, key", [
    ("[printer.axes.x]\nposition_min = 10.0\nposition_max = 10.0\nposition_endstop = 10.0\n",
     "printer.axes.x.position_max"),
    ("[printer.axes.y]\nposition_min = 100.0\nposition_max = 50.0\nposition_endstop = 60.0\n",
     "printer.axes.y.position_max"),
    ("[printer.axes.z]\nposition_endstop = 251.0\n", "printer.axes.z.position_endstop"),
    ("[printer.axes.x]\nposition_endstop = -0.5\n", "printer.axes.x.position_endstop"),
    ("[heaters.extruder]\nmin_temp = 280.0\n", "heaters.extruder.max_temp"),
    ("[heaters.heater_bed]\nmin_temp = 50.0\nmax_temp = 40.0\n", "heaters.heater_bed.max_temp"),
    ("[simulation]\nstart_position = [1.0, 2.0]\n", "simulation.start_position"),
    ("[simulation]\nstart_position = [1.0, 2.0, 3.0, 4.0]\n", "simulation.start_position"),
    ('[simulation]\nstart_position = [1.0, 2.0, "3"]\n', "simulation.start_position"),
    ("[simulation]\nstart_position = [1.0, 2.0, true]\n", "simulation.start_position"),
    ("[server]\nmax_body_bytes = 4096\nmax_upload_bytes = 2048\n", "server.max_body_bytes"),
    ("[control]\nstatus_hz = 5.0\nheartbeat_timeout_s = 0.5\n", "control.heartbeat_timeout_s"),
    ("[control]\nheartbeat_timeout_s = 0.2\n", "control.heartbeat_timeout_s"),
])
def test_cross_checks(text, key):
    assert error_of(text).startswith(f"test.toml: {key}: ")


def test_heartbeat_must_span_four_status_snapshots_and_the_error_says_how_long():
    assert error_of("[control]\nstatus_hz = 5.0\nheartbeat_timeout_s = 0.5\n") == (
        "test.toml: control.heartbeat_timeout_s: 0.5 s spans 2.5 status snapshots at "
        "status_hz 5.0; it must span at least 4 (raise it to 0.8 or more)")
    parse("[control]\nstatus_hz = 5.0\nheartbeat_timeout_s = 0.8\n")
    parse("[control]\nstatus_hz = 20.0\nheartbeat_timeout_s = 0.2\n")


def test_cross_checks_accept_consistent_values():
    s = parse("""
[printer.axes.x]
position_min = -5.0
position_max = 300.0
position_endstop = 300.0
[heaters.extruder]
min_temp = -10.0
max_temp = 0.5
[simulation]
start_position = [0, 1, 2.5]
""")
    assert s.printer.axes.x.position_endstop == 300.0
    assert s.simulation.start_position == [0, 1, 2.5]


# --------------------------------------------------------------------------- files


def test_load_settings_reads_a_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[server]\nport = 9000\n")
    s = load_settings(path)
    assert s.server.port == 9000 and s.source == str(path)


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[server]\nport = -1\n")
    with pytest.raises(ConfigError, match=r"^" + str(path) + r": server\.port: -1 is below"):
        load_settings(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")


def test_duplicate_key_is_invalid_toml(tmp_path):
    path = tmp_path / "dup.toml"
    path.write_text("[server]\nport = 1\nport = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(path)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[server]\nhost = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=f"^{path}: not UTF-8 text$"):
        load_settings(path)


# --------------------------------------------------------------------------- helpers


def test_with_overrides_replaces_only_the_given_keys():
    base = parse("[server]\nhost = \"10.0.0.1\"\n[pause]\npark_x = 5.0\n", "base.toml")
    new = with_overrides(base, server={"port": 8000, "state_dir": "/srv/ph"})
    assert new.server.port == 8000
    assert new.server.state_dir == "/srv/ph"
    assert new.server.host == "10.0.0.1"
    assert new.pause == base.pause
    assert new.source == "base.toml"
    assert base.server.port == 7130  # the original is untouched
    assert with_overrides(base) == base


def test_with_overrides_refuses_unknown_keys():
    with pytest.raises(TypeError):
        with_overrides(Settings(), server={"prot": 1})


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().server.port = 1  # type: ignore[misc]


def test_describe_lists_every_leaf_key_once_with_docs():
    rows = describe()
    keys = [key for key, _value, _doc in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == leaf_paths(Settings())
    assert "source" not in keys
    for key in ("simulation.bed.sensor_lag_s", "printer.axes.z.homing_speed",
                "heaters.heater_bed.pid_kd", "simulation.start_position", "server.port"):
        assert key in keys
    docs = {key: doc for key, _value, doc in rows}
    # every scalar key is documented (docs/config.md is generated from these)
    assert [k for k, d in docs.items() if not d] == []


def test_describe_reports_the_values_of_the_given_instance():
    s = parse("[simulation.bed]\nsensor_lag_s = 9.0\n[server]\nport = 1234\n")
    values = {key: value for key, value, _doc in describe(s)}
    assert values["simulation.bed.sensor_lag_s"] == 9.0
    assert values["simulation.bed.heater_power_w"] == 220.0
    assert values["server.port"] == 1234


@pytest.mark.parametrize("text,key", [
    ("[simulation]\nstart_position = [nan, 1.0, 2.0]\n", "simulation.start_position"),
    ("[simulation]\nstart_position = [1.0, inf, 2.0]\n", "simulation.start_position"),
    ("[printer]\nmax_velocity = 1" + "0" * 400 + "\n", "printer.max_velocity"),
])
def test_non_finite_and_huge_numbers_are_config_errors(tmp_path, text, key):
    from printhost.config import ConfigError, load_settings
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    assert str(f) in str(info.value) and key in str(info.value)


@pytest.mark.parametrize("text,key", [
    ("[extruder]\npressure_advance_smooth_time = 0.0\n", "extruder.pressure_advance_smooth_time"),
    ("[input_shaper]\nshaper_type_x = \"3hump_ei\"\ndamping_ratio_x = 0.25\n",
     "input_shaper.damping_ratio_x"),
    ("[input_shaper]\nshaper_type_y = \"ei\"\ndamping_ratio_y = 0.5\n", "input_shaper.damping_ratio_y"),
])
def test_motion_limits_klipper_refuses_are_config_errors(tmp_path, text, key):
    from printhost.config import ConfigError, load_settings
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    assert key in str(info.value)


# --------------------------------------------------------------------------- devices.backend

@pytest.mark.parametrize("devices_text, fitted", [
    ('[devices.estop]\npin = "GPIO22"\n', "devices.estop"),
    ('[devices.psu]\npin = "GPIO17"\n[devices.hotend_fan]\npin = "GPIO18"\n',
     "devices.psu, devices.hotend_fan"),
    ('[chamber]\nsensor = "aht10"\nheater_pin = "GPIO5"\n', "chamber.sensor, chamber.heater_pin"),
])
def test_real_printer_with_pi_devices_must_choose_their_backend(devices_text, fitted):
    text = '[control]\nbackend = "mcu"\n' + devices_text
    msg = error_of(text, "/etc/printhost/printhost.toml")
    assert msg.startswith("/etc/printhost/printhost.toml: devices.backend: must be set with "
                          f'control.backend = "mcu" and devices on the Pi ({fitted}); hint: ')
    assert 'backend = "pi"' in msg and 'backend = "simulated"' in msg
    for backend in ("pi", "simulated"):
        s = parse_settings(tomllib.loads(text + f'[devices]\nbackend = "{backend}"\n'))
        assert s.devices.backend == backend


def test_devices_backend_may_stay_implicit_without_devices_or_on_the_simulated_printer():
    assert parse_settings({"control": {"backend": "mcu"}}).devices.backend == "simulated"
    simulated = parse_settings({"devices": {"estop": {"pin": "GPIO22"}}})
    assert simulated.devices.backend == "simulated"


def test_shipped_examples_for_real_boards_choose_the_devices_backend():
    examples = sorted((REPO_ROOT / "config" / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        data = tomllib.loads(path.read_text())
        assert data["control"]["backend"] == "mcu", path
        assert data["devices"]["backend"] == "pi", path
        load_settings(path)


def test_pi_devices_lists_what_is_fitted():
    assert Settings().pi_devices() == []
    s = parse_settings({"devices": {"runout": {"pin": "GPIO23"}},
                        "chamber": {"sensor": "ads1115"}})
    assert s.pi_devices() == ["devices.runout", "chamber.sensor"]


@pytest.mark.parametrize("value", ["[1.0, 2.0]", "[0.0, nan, 0.0]", '[0.0, 0.0, "0"]'])
def test_power_on_position_is_three_finite_numbers(value):
    msg = error_of(f"[printer]\npower_on_position = {value}\n")
    assert "printer.power_on_position: expected a list of three finite numbers" in msg
