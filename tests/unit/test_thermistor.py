"""Thermistor and PT1000 math, and the pull-up divider in front of them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from printhost.sensors.adc import AdcTemperatureSensor
from printhost.sensors.thermistor import PRESETS, PT1000, Thermistor, sensor

NTC_PRESETS = ["EPCOS 100K B57560G104F", "ATC Semitec 104GT-2", "Generic 3950",
               "NTC 100K MGB18-104F39050L32"]
ALL_PRESETS = NTC_PRESETS + ["PT1000"]

# The datasheet points each preset is defined by (Klipper's temperature_sensors.cfg).
DEFINING_POINTS = {
    "EPCOS 100K B57560G104F": [(25.0, 100000.0), (150.0, 1641.9), (250.0, 226.15)],
    "ATC Semitec 104GT-2": [(20.0, 126800.0), (150.0, 1360.0), (300.0, 80.65)],
    "Generic 3950": [(25.0, 100000.0), (150.0, 1770.0), (250.0, 230.0)],
}

# IEC 60751 table values for a PT1000 (ohm), rounded to 0.1 ohm in the standard.
PT1000_TABLE = {-200: 185.2, -100: 602.6, -50: 803.1, -20: 921.6, 0: 1000.0, 25: 1097.3,
                100: 1385.1, 200: 1758.6, 300: 2120.5, 400: 2470.9, 850: 3904.8}

TEMPS_C = [t / 2.0 for t in range(-40, 701)]      # -20 .. 350 C in 0.5 C steps


def test_presets_are_exactly_the_required_names():
    assert set(PRESETS) == set(ALL_PRESETS)
    assert isinstance(PRESETS["PT1000"], PT1000)
    assert PRESETS["PT1000"].r0_ohm == 1000.0


@pytest.mark.parametrize("name", sorted(DEFINING_POINTS))
def test_three_point_presets_pass_through_their_points(name):
    th = sensor(name)
    for temp_c, ohm in DEFINING_POINTS[name]:
        assert th.resistance_ohm(temp_c) == pytest.approx(ohm, rel=1e-9)
        assert th.temp_c(ohm) == pytest.approx(temp_c, abs=1e-9)


@pytest.mark.parametrize("name", sorted(DEFINING_POINTS))
def test_steinhart_hart_matches_an_independent_linear_solve(name):
    pts = DEFINING_POINTS[name]
    a = np.array([[1.0, math.log(r), math.log(r) ** 3] for _, r in pts])
    b = np.array([1.0 / (t + 273.15) for t, _ in pts])
    c1, c2, c3 = np.linalg.solve(a, b)
    th = sensor(name)
    assert c3 > 0.0                        # all three presets are genuine 3-point curves
    assert (th.c1, th.c2, th.c3) == pytest.approx((c1, c2, c3), rel=1e-9)


def test_beta_preset_follows_the_beta_equation():
    th = sensor("NTC 100K MGB18-104F39050L32")
    assert th.c3 == 0.0
    assert th.beta == pytest.approx(4100.0, rel=1e-12)
    for t in (-20.0, 25.0, 100.0, 200.0, 300.0):
        expected = 100000.0 * math.exp(4100.0 * (1.0 / (t + 273.15) - 1.0 / 298.15))
        assert th.resistance_ohm(t) == pytest.approx(expected, rel=1e-12)


def test_from_beta_with_another_reference_temperature():
    th = Thermistor.from_beta(10000.0, 3435.0, t25_c=0.0)
    assert th.resistance_ohm(0.0) == pytest.approx(10000.0, rel=1e-12)
    assert th.temp_c(10000.0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("temp_c, ohm", sorted(PT1000_TABLE.items()))
def test_pt1000_against_the_iec_table(temp_c, ohm):
    pt = PRESETS["PT1000"]
    assert pt.resistance_ohm(temp_c) == pytest.approx(ohm, abs=0.05)
    assert pt.temp_c(ohm) == pytest.approx(temp_c, abs=0.02)


def test_pt1000_exact_points():
    pt = PT1000()
    assert pt.resistance_ohm(0.0) == 1000.0
    assert pt.resistance_ohm(100.0) == pytest.approx(1385.055, abs=1e-9)
    assert pt.temp_c(1000.0) == 0.0
    assert PT1000(100.0).resistance_ohm(100.0) == pytest.approx(138.5055, abs=1e-9)  # a PT100


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_resistance_round_trip(name):
    s = sensor(name)
    for t in TEMPS_C:
        assert s.temp_c(s.resistance_ohm(t)) == pytest.approx(t, abs=1e-6)


@pytest.mark.parametrize("name", ALL_PRESETS)
@pytest.mark.parametrize("pullup, inline", [(4700.0, 0.0), (4700.0, 150.0), (1000.0, 0.0)])
def test_fraction_round_trip_within_a_hundredth_of_a_degree(name, pullup, inline):
    adc = AdcTemperatureSensor(sensor(name), pullup_ohm=pullup, inline_ohm=inline)
    for t in TEMPS_C:
        f = adc.fraction(t)
        assert 0.0 < f < 1.0
        assert adc.temp_c(f) == pytest.approx(t, abs=0.01)


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_monotonic(name):
    s = sensor(name)
    adc = AdcTemperatureSensor(s)
    temps = [t / 2.0 for t in range(-100, 901)]    # -50 .. 450 C
    r = [s.resistance_ohm(t) for t in temps]
    f = [adc.fraction(t) for t in temps]
    ntc = name != "PT1000"
    pairs = list(zip(r, r[1:])) + list(zip(f, f[1:]))
    assert all((b < a) if ntc else (b > a) for a, b in pairs)


def test_fraction_is_klippers_divider():
    adc = AdcTemperatureSensor(sensor("EPCOS 100K B57560G104F"))
    assert adc.fraction(25.0) == pytest.approx(100000.0 / 104700.0, rel=1e-12)
    with_inline = AdcTemperatureSensor(sensor("EPCOS 100K B57560G104F"), 4700.0, 200.0)
    r = 1641.9 + 200.0
    assert with_inline.fraction(150.0) == pytest.approx(r / (4700.0 + r), rel=1e-9)
    assert with_inline.resistance_ohm(r / (4700.0 + r)) == pytest.approx(1641.9, rel=1e-9)


@pytest.mark.parametrize("name", NTC_PRESETS)
def test_ntc_rails_are_infinite(name):
    adc = AdcTemperatureSensor(sensor(name))
    assert adc.temp_c(1.0) == -math.inf          # open: the pull-up wins
    assert adc.temp_c(1.2) == -math.inf
    assert adc.temp_c(0.0) == math.inf           # short to ground
    assert adc.temp_c(-0.1) == math.inf
    assert math.isnan(adc.temp_c(math.nan))
    assert math.isfinite(adc.temp_c(0.999))      # near the rail is still a (cold) number
    assert adc.temp_c(0.999) < -20.0


def test_pt1000_rails_are_infinite_the_other_way_round():
    adc = AdcTemperatureSensor(PT1000(), pullup_ohm=4700.0)
    assert adc.temp_c(1.0) == math.inf
    assert adc.temp_c(0.0) == -math.inf
    assert math.isnan(adc.temp_c(math.nan))


def test_reading_below_the_inline_resistor_is_a_short():
    adc = AdcTemperatureSensor(sensor("Generic 3950"), 4700.0, inline_ohm=100.0)
    below = 50.0 / 4750.0                         # 50 ohm total: less than the inline part
    assert adc.resistance_ohm(below) == 0.0
    assert adc.temp_c(below) == math.inf


def test_sensor_models_at_their_limits():
    th = sensor("EPCOS 100K B57560G104F")
    assert th.temp_c(0.0) == math.inf
    assert th.temp_c(math.inf) == -math.inf
    assert th.resistance_ohm(-273.15) == math.inf
    assert math.isnan(th.resistance_ohm(math.nan))
    assert th.resistance_ohm(math.inf) < 1.0       # ohms at an infinite temperature
    pt = PT1000()
    assert pt.temp_c(0.0) == -math.inf
    assert pt.temp_c(math.inf) == math.inf
    assert pt.resistance_ohm(5000.0) == math.inf   # beyond where the formula turns over
    assert pt.resistance_ohm(-273.15) == 0.0
    assert AdcTemperatureSensor(th).fraction(-273.15) == 1.0


def test_fraction_range_brackets_the_allowed_band():
    adc = AdcTemperatureSensor(sensor("ATC Semitec 104GT-2"))
    lo, hi = adc.fraction_range(0.0, 280.0)
    assert lo == pytest.approx(adc.fraction(280.0))
    assert hi == pytest.approx(adc.fraction(0.0))
    assert adc.temp_c(lo) == pytest.approx(280.0, abs=1e-6)
    assert adc.temp_c(hi) == pytest.approx(0.0, abs=1e-6)
    for f in (lo + 1e-6, (lo + hi) / 2, hi - 1e-6):
        assert 0.0 <= adc.temp_c(f) <= 280.0
    pt_lo, pt_hi = AdcTemperatureSensor(PT1000()).fraction_range(0.0, 300.0)
    assert pt_lo == pytest.approx(1000.0 / 5700.0)
    assert pt_hi > pt_lo
    with pytest.raises(ValueError):
        adc.fraction_range(100.0, 50.0)
    with pytest.raises(ValueError):
        adc.fraction_range(0.0, math.inf)


def test_three_points_needing_negative_c3_fall_back_to_beta():
    # The middle point sits so low that an exact fit would need c3 < 0.
    pts = [(25.0, 100000.0), (150.0, 1100.0), (250.0, 226.15)]
    th = Thermistor.from_points(pts)
    assert th.c3 == 0.0
    assert th.resistance_ohm(25.0) == pytest.approx(100000.0, rel=1e-12)
    assert th.resistance_ohm(250.0) == pytest.approx(226.15, rel=1e-9)
    assert Thermistor.from_points(list(reversed(pts))) == th    # order does not matter


def test_tiny_c3_keeps_full_precision():
    base = sensor("EPCOS 100K B57560G104F")
    th = Thermistor(base.c1, base.c2, 1e-15)
    for t in (-20.0, 25.0, 200.0, 350.0):
        assert th.temp_c(th.resistance_ohm(t)) == pytest.approx(t, abs=1e-9)


@pytest.mark.parametrize("points", [
    [(25.0, 100000.0), (150.0, 1641.9)],                          # two points
    [(25.0, 100000.0), (150.0, 1641.9), (150.0, 1500.0)],         # repeated temperature
    [(25.0, 100000.0), (150.0, 1641.9), (250.0, 5000.0)],         # not an NTC
    [(25.0, -1.0), (150.0, 1641.9), (250.0, 226.15)],             # negative resistance
    [(-300.0, 1e7), (150.0, 1641.9), (250.0, 226.15)],            # below absolute zero
    [(25.0, math.nan), (150.0, 1641.9), (250.0, 226.15)],
])
def test_bad_points_are_refused(points):
    with pytest.raises(ValueError):
        Thermistor.from_points(points)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        Thermistor.from_beta(100000.0, 0.0)
    with pytest.raises(ValueError):
        Thermistor.from_beta(0.0, 3950.0)
    with pytest.raises(ValueError):
        Thermistor(1e-3, -2e-4, 0.0)
    with pytest.raises(ValueError):
        PT1000(0.0)
    with pytest.raises(ValueError):
        AdcTemperatureSensor(PT1000(), pullup_ohm=0.0)
    with pytest.raises(ValueError):
        AdcTemperatureSensor(PT1000(), inline_ohm=-1.0)


def test_unknown_sensor_type_names_the_known_ones():
    assert sensor("Generic 3950") is PRESETS["Generic 3950"]
    with pytest.raises(ValueError) as err:
        sensor("generic 3950x")
    message = str(err.value)
    assert "generic 3950x" in message
    for name in ALL_PRESETS:
        assert name in message
    with pytest.raises(ValueError):
        sensor(None)  # type: ignore[arg-type]


def test_presets_and_their_values_are_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "devices.md").read_text(encoding="utf-8")
    for name in ALL_PRESETS:
        assert f"| `{name}` |" in doc
    for points in DEFINING_POINTS.values():
        for _temp, ohm in points:
            assert f"{ohm:g} Ω" in doc
