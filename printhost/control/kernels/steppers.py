"""Stepper models and the Python calls that run the step kernels.

`stepgen` and `position` are compiled functions over plain arrays, and trust them
completely. This module is what the rest of the print host calls: `StepperModel`
describes one motor (kinematic kind, step distance, input shaper pulses, pressure
advance), is validated once and flattened into the stream arrays the kernels read;
`models_from_settings` builds one per configured stepper; `generate_steps`,
`stepper_position` and `commanded_position` check their input and size the output.
Keeping this apart from the kernels means configuration and API changes never touch
the compiled code, nor the numba cache it is stored in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from printhost.control.kernels import trapq
from printhost.control.kernels.position import position_kernel
from printhost.control.kernels.stepgen import generate_steps_kernel

if TYPE_CHECKING:
    from printhost.config import Settings

CARTESIAN_X = 0
CARTESIAN_Y = 1
CARTESIAN_Z = 2
COREXY_A = 3
COREXY_B = 4
EXTRUDER = 5
KIND_NAMES = ("cartesian_x", "cartesian_y", "cartesian_z", "corexy_a", "corexy_b", "extruder")

# How many steps `generate_steps` makes room for unless the caller knows better.
DEFAULT_STEP_CAPACITY = 256

Shaper = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class StepperModel:
    """Everything that turns segments into one stepper's position.

    `kind` is one of the module constants; `step_dist` is the microstep length in
    mm. `shaper_x`/`shaper_y` are (amplitudes, times) from `shaper.shaper_pulses`
    and apply to the kinds that read that coordinate (CoreXY motors read both).
    `pressure_advance` (s) and `smooth_time` (s) apply to EXTRUDER only; as in
    Klipper, an advance of zero means the plain filament position. The extruder
    reads the `extruder_segments` array, every other kind `toolhead_segments`.
    """

    kind: int
    step_dist: float
    shaper_x: Shaper | None = None
    shaper_y: Shaper | None = None
    pressure_advance: float = 0.0
    smooth_time: float = 0.0
    cols: np.ndarray = field(init=False, repr=False)
    coefs: np.ndarray = field(init=False, repr=False)
    shifts: np.ndarray = field(init=False, repr=False)
    half_smooth_time: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in range(len(KIND_NAMES)):
            raise ValueError(f"unknown stepper kind {self.kind!r}")
        if not (math.isfinite(self.step_dist) and self.step_dist > 0.0):
            raise ValueError(f"step_dist must be positive, got {self.step_dist!r}")
        for name in ("pressure_advance", "smooth_time"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.kind == EXTRUDER:
            if self.shaper_x is not None or self.shaper_y is not None:
                raise ValueError("input shaping applies to the toolhead axes, not the extruder")
            if self.pressure_advance > 0.0 and self.smooth_time <= 0.0:
                raise ValueError("pressure advance needs a positive smooth_time")
        elif self.pressure_advance or self.smooth_time:
            raise ValueError("pressure advance applies to the extruder only")
        # (column, sign) of the coordinates this kind adds up
        terms = {CARTESIAN_X: ((0, 1.0),), CARTESIAN_Y: ((1, 1.0),), CARTESIAN_Z: ((2, 1.0),),
                 COREXY_A: ((0, 1.0), (1, 1.0)), COREXY_B: ((0, 1.0), (1, -1.0)),
                 EXTRUDER: ((0, 1.0),)}[self.kind]
        cols: list[int] = []
        coefs: list[float] = []
        shifts: list[float] = []
        for col, sign in terms:
            shaper = (self.shaper_x, self.shaper_y, None)[col] if self.kind != EXTRUDER else None
            if shaper is None:
                amps, times = np.ones(1), np.zeros(1)
            else:
                amps = np.asarray(shaper[0], dtype=np.float64)
                times = np.asarray(shaper[1], dtype=np.float64)
                if amps.shape != times.shape or amps.ndim != 1 or len(amps) == 0:
                    raise ValueError("a shaper is two equal-length 1-D arrays (amplitudes, times)")
                if not (np.isfinite(amps).all() and np.isfinite(times).all()):
                    raise ValueError("shaper pulses must be finite")
            for amp, delay in zip(amps, times):
                cols.append(col)
                coefs.append(sign * float(amp))
                shifts.append(float(delay))
        object.__setattr__(self, "cols", np.array(cols, dtype=np.int64))
        object.__setattr__(self, "coefs", np.array(coefs, dtype=np.float64))
        object.__setattr__(self, "shifts", np.array(shifts, dtype=np.float64))
        hst = 0.5 * self.smooth_time if self.pressure_advance > 0.0 else 0.0
        object.__setattr__(self, "half_smooth_time", hst)

    def margins(self) -> tuple[float, float]:
        """How far before t0 and after t1 the segments must reach for a range [t0, t1).

        The position at t reads the motion from t - before to t + after (shaper
        delays, or half the smoothing window). When streaming, steps up to t1 can
        only be generated once the motion up to t1 + after is known.
        """
        if self.half_smooth_time > 0.0:
            return self.half_smooth_time, self.half_smooth_time
        return max(0.0, float(self.shifts.max())), max(0.0, float(-self.shifts.min()))


class StepBatch(NamedTuple):
    times: np.ndarray      # float64 print times of the steps, ascending
    dirs: np.ndarray       # int8, +1 or -1 per step
    position: int          # commanded step position after the last step


def generate_steps(segs: np.ndarray, model: StepperModel, t0: float, t1: float,
                   position: int, capacity: int = DEFAULT_STEP_CAPACITY) -> StepBatch:
    """Steps of the stepper in print time [t0, t1), starting from commanded `position`.

    `segs` must cover [t0 - before, t1 + after] (see `StepperModel.margins`); it
    may be a window of a longer array (`trapq.window`). `position` is the
    commanded step position before t0: from a previous batch, or
    `commanded_position` at the time the motion starts.

    `capacity` is how many steps the output arrays are first made for. The kernel
    counts steps beyond that without writing them, and then runs a second time
    with arrays of the exact size, which for a long range nearly doubles the cost;
    a caller that can estimate the count (from earlier ranges, say) passes it to
    save that second run. The steps returned do not depend on it.
    """
    segs = trapq.check_segments(segs)
    if not (math.isfinite(t0) or t0 == -math.inf) or math.isnan(t1):
        raise ValueError(f"invalid time range [{t0!r}, {t1!r})")
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity!r}")
    while True:
        out_t = np.empty(capacity, dtype=np.float64)
        out_d = np.empty(capacity, dtype=np.int8)
        count = generate_steps_kernel(segs, model.cols, model.coefs, model.shifts,
                                      model.half_smooth_time, model.pressure_advance,
                                      model.step_dist, float(t0), float(t1), out_t, out_d)
        if count <= capacity:
            break
        capacity = count
    dirs = out_d[:count]
    return StepBatch(out_t[:count], dirs, int(position) + int(dirs.sum(dtype=np.int64)))


def stepper_position(segs: np.ndarray, model: StepperModel, t: float) -> float:
    """The stepper's exact (unrounded) position in mm at print time t."""
    segs = trapq.check_segments(segs)
    if len(segs) == 0:
        raise ValueError("no segments")
    return float(position_kernel(segs, model.cols, model.coefs, model.shifts,
                                 model.half_smooth_time, model.pressure_advance,
                                 model.step_dist, float(t))[0])


def commanded_position(segs: np.ndarray, model: StepperModel, t: float) -> int:
    """The step the motor is commanded to at time t: the position rounded to a step."""
    segs = trapq.check_segments(segs)
    if len(segs) == 0:
        raise ValueError("no segments")
    return int(position_kernel(segs, model.cols, model.coefs, model.shifts,
                               model.half_smooth_time, model.pressure_advance,
                               model.step_dist, float(t))[1])


def models_from_settings(settings: Settings) -> dict[str, StepperModel]:
    """One model per stepper of the configured printer, keyed x, y, z, extruder.

    For CoreXY, "x" and "y" are the A and B motors, as in the [steppers] section.
    """
    from printhost.control.shaper import shaper_pulses

    shaping = settings.input_shaper
    sx = shaper_pulses(shaping, "x")
    sy = shaper_pulses(shaping, "y")
    st = settings.steppers
    if settings.printer.kinematics == "corexy":
        a = StepperModel(COREXY_A, st.x.step_distance_mm, sx, sy)
        b = StepperModel(COREXY_B, st.y.step_distance_mm, sx, sy)
    else:
        a = StepperModel(CARTESIAN_X, st.x.step_distance_mm, sx, None)
        b = StepperModel(CARTESIAN_Y, st.y.step_distance_mm, None, sy)
    ext = settings.extruder
    return {
        "x": a,
        "y": b,
        "z": StepperModel(CARTESIAN_Z, st.z.step_distance_mm),
        "extruder": StepperModel(EXTRUDER, st.extruder.step_distance_mm,
                                 pressure_advance=ext.pressure_advance,
                                 smooth_time=ext.pressure_advance_smooth_time),
    }
