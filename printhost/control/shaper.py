"""Input shaper pulse trains, with the definitions Klipper uses.

An input shaper replaces a commanded coordinate x(t) by a weighted sum of delayed
copies, sum_i A_i x(t - T_i). The pulses are chosen so that the ringing excited by
each copy cancels the others' at the frame's resonance frequency, with some
tolerance for that frequency being off (more pulses buy a wider tolerance at the
price of more smoothing). Matching Klipper's pulses exactly matters beyond
fidelity: users tune shaper_freq with Klipper's calibration tools, and a frequency
only means something together with the shaper definition it was measured for.

Every function returns (amplitudes, times) as float64 arrays in time order, with
the amplitudes normalised to sum to one (so a position at rest stays where it is)
and the times shifted so their amplitude-weighted mean is zero. The shift is what
Klipper does too: with it, shaping a constant velocity reproduces it exactly with
no lag, and the shaped path is smeared symmetrically around the commanded one.

The damped frequency of a resonance f with damping ratio z is f * sqrt(1 - z^2);
t_d below is its period, and K = exp(-z pi / sqrt(1 - z^2)) is how much a free
oscillation decays in half a period.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from printhost.config import SHAPER_MAX_DAMPING, SHAPER_TYPES, InputShaperSettings

# Residual vibration the EI family accepts at the design frequency (5 %).
_EI_TOLERANCE = 1.0 / 20.0


def _damped(freq: float, damping_ratio: float) -> tuple[float, float]:
    """(t_d, K): damped period and half-period decay factor."""
    df = math.sqrt(1.0 - damping_ratio * damping_ratio)
    return 1.0 / (freq * df), math.exp(-damping_ratio * math.pi / df)


def _finish(amps: Sequence[float], times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.array(amps, dtype=np.float64)
    t = np.array(times, dtype=np.float64)
    a /= a.sum()
    t -= float(np.dot(a, t))
    return a, t


def zv(freq: float, damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero vibration: two pulses half a damped period apart."""
    t_d, k = _damped(freq, damping_ratio)
    return _finish([1.0, k], [0.0, 0.5 * t_d])


def zvd(freq: float, damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """ZV convolved with itself: three pulses, zero slope of the response at f too."""
    t_d, k = _damped(freq, damping_ratio)
    return _finish([1.0, 2.0 * k, k * k], [0.0, 0.5 * t_d, t_d])


def mzv(freq: float, damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Modified ZV: three pulses over 3/4 of a period, in between ZV and ZVD.

    Undamped, the amplitudes are 1 - 1/sqrt(2), sqrt(2) - 1, 1 - 1/sqrt(2) at
    0, 3/8 and 3/4 of the period; the later pulses shrink by the decay over their
    delay.
    """
    t_d, _ = _damped(freq, damping_ratio)
    df = math.sqrt(1.0 - damping_ratio * damping_ratio)
    k = math.exp(-0.75 * damping_ratio * math.pi / df)
    edge = 1.0 - 1.0 / math.sqrt(2.0)
    return _finish([edge, (math.sqrt(2.0) - 1.0) * k, edge * k * k],
                   [0.0, 0.375 * t_d, 0.75 * t_d])


def ei(freq: float, damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Extra-insensitive: three pulses tolerating 5 % vibration for a wider band.

    Amplitudes and the middle pulse's time come from polynomial fits in the
    damping ratio and the tolerance (Singhose's published fits, as in Klipper).
    """
    t_d, _ = _damped(freq, damping_ratio)
    v = _EI_TOLERANCE
    z = damping_ratio
    a1 = (0.24968 + 0.24961 * v) + ((0.80008 + 1.23328 * v) + (0.49599 + 3.17316 * v) * z) * z
    a3 = (0.25149 + 0.21474 * v) + ((-0.83249 + 1.41498 * v) + (0.85181 - 4.90094 * v) * z) * z
    a2 = 1.0 - a1 - a3
    t2 = 0.4999 + (((0.46159 + 8.57843 * v) * v)
                   + (((4.26169 - 108.644 * v) * v) + ((1.75601 + 336.989 * v) * v) * z) * z) * z
    return _finish([a1, a2, a3], [0.0, t2 * t_d, t_d])


def _fitted(freq: float, damping_ratio: float, time_coefs: Sequence[Sequence[float]],
            amp_coefs: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Pulses whose times (in periods of f, undamped) and amplitudes are cubics in z."""
    def cubic(c: Sequence[float]) -> float:
        return ((c[3] * damping_ratio + c[2]) * damping_ratio + c[1]) * damping_ratio + c[0]

    period = 1.0 / freq
    return _finish([cubic(c) for c in amp_coefs], [cubic(c) * period for c in time_coefs])


def two_hump_ei(freq: float, damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-hump EI: four pulses over 1.5 periods, two suppression humps."""
    times = ((0.0, 0.0, 0.0, 0.0),
             (0.49890, 0.16270, -0.54262, 6.16180),
             (0.99748, 0.18382, -1.58270, 8.17120),
             (1.49920, -0.09297, -0.28338, 1.85710))
    amps = ((0.16054, 0.76699, 2.26560, -1.22750),
            (0.33911, 0.45081, -2.58080, 1.73650),
            (0.34089, -0.61533, -0.68765, 0.42261),
            (0.15997, -0.60246, 1.00280, -0.93145))
    return _fitted(freq, damping_ratio, times, amps)


def three_hump_ei(freq: float, damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Three-hump EI: five pulses over 2 periods, the widest and smoothest."""
    times = ((0.0, 0.0, 0.0, 0.0),
             (0.49974, 0.23834, 0.44559, 12.4720),
             (0.99849, 0.29808, -2.36460, 23.3990),
             (1.49870, 0.10306, -2.01390, 17.0320),
             (1.99960, -0.28231, 0.61536, 5.40450))
    amps = ((0.11275, 0.76632, 3.29160, -1.44380),
            (0.23698, 0.61164, -2.57850, 4.85220),
            (0.30008, -0.19062, -2.14560, 0.13744),
            (0.23775, -0.73297, 0.46885, -2.08650),
            (0.11244, -0.45439, 0.96382, -1.46000))
    return _fitted(freq, damping_ratio, times, amps)


SHAPERS: dict[str, Callable[[float, float], tuple[np.ndarray, np.ndarray]]] = {
    "zv": zv, "mzv": mzv, "zvd": zvd, "ei": ei, "2hump_ei": two_hump_ei,
    "3hump_ei": three_hump_ei,
}
assert tuple(SHAPERS) == SHAPER_TYPES

# Largest damping ratio each shaper accepts, Klipper's limits: the fitted EI
# families are only valid over the damping range they were fitted on (beyond it
# amplitudes go negative or pulses fall out of order).
MAX_DAMPING_RATIO = SHAPER_MAX_DAMPING


def make_shaper(shaper_type: str, freq: float,
                damping_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Pulses of a named shaper; ValueError for an unknown name or unusable parameters.

    Damping ratios above `MAX_DAMPING_RATIO` of the shaper are refused, as
    Klipper refuses them.
    """
    try:
        build = SHAPERS[shaper_type]
    except KeyError:
        raise ValueError(f"unknown shaper type {shaper_type!r}") from None
    if not (math.isfinite(freq) and freq > 0.0):
        raise ValueError(f"shaper frequency must be positive, got {freq!r}")
    limit = MAX_DAMPING_RATIO[shaper_type]
    if not (0.0 <= damping_ratio <= limit):
        raise ValueError(f"damping ratio of the {shaper_type} shaper must be in [0, {limit}], "
                         f"got {damping_ratio!r}")
    return build(freq, damping_ratio)


def shaper_pulses(settings: InputShaperSettings,
                  axis: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Pulses configured for axis "x" or "y", or None when its frequency is 0 (off)."""
    if axis not in ("x", "y"):
        raise ValueError(f"input shaping is configured for x and y, not {axis!r}")
    freq = getattr(settings, f"shaper_freq_{axis}")
    if freq == 0.0:
        return None
    return make_shaper(getattr(settings, f"shaper_type_{axis}"), freq,
                       getattr(settings, f"damping_ratio_{axis}"))
