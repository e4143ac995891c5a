"""Resistance <-> temperature for the sensors found in printer hotends and beds.

Two models cover them:

* `Thermistor` — an NTC described by the Steinhart-Hart equation
  1/T = c1 + c2*ln(R) + c3*ln(R)^3 (T in kelvin). Three points from a datasheet fix
  the three coefficients; a "beta" thermistor is the special case c3 = 0.
* `PT1000` — a platinum RTD described by the Callendar-Van Dusen equation of
  IEC 60751, with R0 = 1000 ohm (any R0 can be given, so a PT100 works too).

The presets carry the same defining values as Klipper's sensor types of the same
names, and the coefficients are derived the same way (including Klipper's fallback to
a beta fit when three points give a non-physical negative c3), so a `sensor_type`
from a Klipper config reads the same temperature here.

Both models accept the limits a broken sensor produces: a resistance of 0 (a short) or
infinity (an open circuit) maps to +inf or -inf degrees, never to a plausible number,
so min/max temperature checks trip on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

KELVIN_OFFSET = 273.15
ABSOLUTE_ZERO_C = -KELVIN_OFFSET

# IEC 60751 Callendar-Van Dusen coefficients for industrial platinum RTDs.
CVD_A = 3.9083e-3
CVD_B = -5.775e-7
CVD_C = -4.183e-12          # only below 0 C
# The quadratic branch peaks here; above it resistance would fall again, which no real
# RTD does (the standard stops at 850 C), so temperatures beyond map to an open circuit.
_CVD_PEAK_C = -CVD_A / (2.0 * CVD_B)


class ResistiveSensor(Protocol):
    """What `AdcTemperatureSensor` needs from a sensor model."""

    def temp_c(self, resistance_ohm: float) -> float: ...

    def resistance_ohm(self, temp_c: float) -> float: ...


@dataclass(frozen=True)
class Thermistor:
    """An NTC thermistor with Steinhart-Hart coefficients (1/K, 1/K, 1/K).

    Build it with `from_beta` or `from_points`; the coefficients are public so a
    calibration can be stored and compared.
    """

    c1: float
    c2: float
    c3: float = 0.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(c) for c in (self.c1, self.c2, self.c3)):
            raise ValueError("Steinhart-Hart coefficients must be finite")
        # c2 > 0 and c3 >= 0 make 1/T strictly increasing in ln(R): resistance falls as
        # temperature rises (an NTC) and every temperature has exactly one resistance.
        if self.c2 <= 0.0 or self.c3 < 0.0:
            raise ValueError(f"not an NTC: c2={self.c2!r} must be > 0 and c3={self.c3!r} >= 0")

    @classmethod
    def from_beta(cls, r25_ohm: float, beta: float, t25_c: float = 25.0) -> Thermistor:
        """The beta model: R = r25 * exp(beta * (1/T - 1/T25))."""
        if not (math.isfinite(r25_ohm) and r25_ohm > 0.0):
            raise ValueError(f"resistance must be a positive number, got {r25_ohm!r}")
        if not (math.isfinite(beta) and beta > 0.0):
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        _check_temp(t25_c)
        c2 = 1.0 / beta
        return cls(1.0 / (t25_c + KELVIN_OFFSET) - c2 * math.log(r25_ohm), c2, 0.0)

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, float]]) -> Thermistor:
        """Steinhart-Hart through three (temp_c, ohm) points.

        If the three points need a negative c3 (measurement error, or points too close
        together), the curve would turn back on itself outside them; like Klipper, the
        result is then the beta curve through the coldest and hottest point.
        """
        if len(points) != 3:
            raise ValueError(f"need exactly three (temp_c, ohm) points, got {len(points)}")
        pts = sorted((float(t), float(r)) for t, r in points)
        for t, r in pts:
            _check_temp(t)
            if not (math.isfinite(r) and r > 0.0):
                raise ValueError(f"resistance must be a positive number, got {r!r}")
        (t1, r1), (t2, r2), (t3, r3) = pts
        if t1 == t2 or t2 == t3:
            raise ValueError("the three points need different temperatures")
        if not r1 > r2 > r3:
            raise ValueError("an NTC's resistance must fall as temperature rises")
        y1, y2, y3 = (1.0 / (t + KELVIN_OFFSET) for t in (t1, t2, t3))
        l1, l2, l3 = (math.log(r) for r in (r1, r2, r3))
        # Eliminate c1 by differences, then c2: a 3x3 solve written out.
        d12, d13 = l1 - l2, l1 - l3
        c3 = ((y1 - y2) / d12 - (y1 - y3) / d13) / ((l1**3 - l2**3) / d12 - (l1**3 - l3**3) / d13)
        if c3 <= 0.0:
            beta = (l1 - l3) / (y1 - y3)
            return cls.from_beta(r1, beta, t1)
        c2 = (y1 - y2 - c3 * (l1**3 - l2**3)) / d12
        c1 = y1 - c2 * l1 - c3 * l1**3
        return cls(c1, c2, c3)

    @property
    def beta(self) -> float:
        """The beta of the model at 25 C (exact for a beta thermistor)."""
        ln_r = math.log(self.resistance_ohm(25.0))
        return 1.0 / (self.c2 + 3.0 * self.c3 * ln_r * ln_r)

    def temp_c(self, resistance_ohm: float) -> float:
        """Temperature at a resistance; 0 ohm (short) is +inf, infinite (open) is -inf."""
        r = float(resistance_ohm)
        if math.isnan(r):
            return math.nan
        if r <= 0.0:
            return math.inf
        if math.isinf(r):
            return -math.inf
        ln_r = math.log(r)
        inv_t = self.c1 + self.c2 * ln_r + self.c3 * ln_r**3
        if inv_t <= 0.0:
            # Below the resistance the model assigns to an infinite temperature.
            return math.inf
        return 1.0 / inv_t - KELVIN_OFFSET

    def resistance_ohm(self, temp_c: float) -> float:
        """Resistance at a temperature; at or below absolute zero it is infinite."""
        t = float(temp_c)
        if math.isnan(t):
            return math.nan
        if t <= ABSOLUTE_ZERO_C:
            return math.inf
        inv_t = 0.0 if math.isinf(t) else 1.0 / (t + KELVIN_OFFSET)
        return math.exp(self._solve_ln_r(inv_t))

    def _solve_ln_r(self, inv_t: float) -> float:
        """ln(R) with c3*L^3 + c2*L + (c1 - inv_t) = 0, by Cardano's formula.

        The cubic is strictly increasing (c2 > 0, c3 >= 0), so it has one real root.
        The textbook form subtracts two nearly equal cube roots when c3 is small; here
        the smaller term is rebuilt from their product, and one Newton step polishes
        the result to full double precision.
        """
        if self.c3 == 0.0:
            return (inv_t - self.c1) / self.c2
        p = self.c2 / (3.0 * self.c3)
        q = (self.c1 - inv_t) / (2.0 * self.c3)
        p3 = p * p * p
        s = math.sqrt(p3 + q * q)
        # u = cbrt(s - q), v = cbrt(s + q); u*v = p exactly, so compute the big one.
        if q >= 0.0:
            v = (s + q) ** (1.0 / 3.0)
            ln_r = p / v - v
        else:
            u = (s - q) ** (1.0 / 3.0)
            ln_r = u - p / u
        f = self.c3 * ln_r**3 + self.c2 * ln_r + self.c1 - inv_t
        return ln_r - f / (3.0 * self.c3 * ln_r * ln_r + self.c2)


@dataclass(frozen=True)
class PT1000:
    """A platinum RTD after IEC 60751 (Callendar-Van Dusen), R0 ohm at 0 C.

    Valid from -200 to 850 C by the standard; outside that the same formula is
    extended, with 0 ohm as -inf (short) and infinity as +inf (open), so a broken
    sensor never reads as a normal temperature.
    """

    r0_ohm: float = 1000.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.r0_ohm) and self.r0_ohm > 0.0):
            raise ValueError(f"R0 must be a positive number, got {self.r0_ohm!r}")

    def resistance_ohm(self, temp_c: float) -> float:
        t = float(temp_c)
        if math.isnan(t):
            return math.nan
        if t >= _CVD_PEAK_C:
            return math.inf
        ratio = 1.0 + CVD_A * t + CVD_B * t * t
        if t < 0.0:
            ratio += CVD_C * (t - 100.0) * t**3
        return max(0.0, self.r0_ohm * ratio)

    def temp_c(self, resistance_ohm: float) -> float:
        r = float(resistance_ohm)
        if math.isnan(r):
            return math.nan
        if r <= 0.0:
            return -math.inf
        ratio = r / self.r0_ohm
        disc = CVD_A * CVD_A - 4.0 * CVD_B * (1.0 - ratio)
        if disc < 0.0:
            return math.inf          # above the peak of the curve, or infinite: open
        # Root of B t^2 + A t + (1 - ratio) = 0 near t = (ratio - 1)/A, in the form that
        # does not subtract two nearly equal numbers.
        t = 2.0 * (ratio - 1.0) / (CVD_A + math.sqrt(disc))
        if ratio >= 1.0:
            return t
        # Below 0 C the C term joins in; the quadratic root is a close start and the
        # polynomial is increasing there, so Newton converges in a few steps.
        for _ in range(30):
            f = 1.0 + CVD_A * t + CVD_B * t * t + CVD_C * (t - 100.0) * t**3 - ratio
            df = CVD_A + 2.0 * CVD_B * t + CVD_C * (4.0 * t**3 - 300.0 * t * t)
            step = f / df
            t -= step
            if abs(step) < 1e-10:
                break
        return t


def _check_temp(t: float) -> None:
    if not (math.isfinite(t) and t > ABSOLUTE_ZERO_C):
        raise ValueError(f"temperature must be a finite number above absolute zero, got {t!r}")


# The defining values of each preset are the datasheet points Klipper uses for the
# sensor type of the same name (docs/devices.md lists them with their sources).
PRESETS: dict[str, Thermistor | PT1000] = {
    "EPCOS 100K B57560G104F": Thermistor.from_points(
        [(25.0, 100000.0), (150.0, 1641.9), (250.0, 226.15)]),
    "ATC Semitec 104GT-2": Thermistor.from_points(
        [(20.0, 126800.0), (150.0, 1360.0), (300.0, 80.65)]),
    "Generic 3950": Thermistor.from_points(
        [(25.0, 100000.0), (150.0, 1770.0), (250.0, 230.0)]),
    "NTC 100K MGB18-104F39050L32": Thermistor.from_beta(100000.0, 4100.0, 25.0),
    "PT1000": PT1000(1000.0),
}


def sensor(sensor_type: str) -> Thermistor | PT1000:
    """The preset called `sensor_type` (Klipper's spelling, case-sensitive)."""
    try:
        return PRESETS[sensor_type]
    except (KeyError, TypeError):
        known = ", ".join(repr(name) for name in PRESETS)
        raise ValueError(f"unknown sensor type {sensor_type!r} (known: {known})") from None
