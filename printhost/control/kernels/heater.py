"""Compiled heater control laws: PID and bang-bang ("watermark"), with plain references.

A heater's control law runs on every temperature reading for as long as the printer
is on, so it sits with the other compiled kernels: numba code over plain floats and
a small float64 state array that the kernel updates in place. The state lives in an
array rather than in an object so that the kernel has no Python objects to touch and
the same state can be stepped by the kernel or by the plain-Python reference.

Both laws work in Klipper's units, so gains copied from a Klipper printer.cfg or from
a PID_CALIBRATE run behave the same here: the configured gains are divided by 255 (the
8-bit PWM scale Klipper kept for compatibility) and then act on degrees C, seconds and
a duty cycle of 0..1.

PID (`pid_update`), positional form:

    duty = clamp(Kp*e + Ki*I - Kd*slope, 0, max_power),   e = target - temperature

* The derivative is taken of the measured temperature, not of the error, so changing
  the target does not kick the output. The raw slope between two readings passes a
  first-order filter with time constant `smooth_s` (weight min(1, dt/smooth_s)), since
  a thermistor's quantisation and noise would otherwise drive the D term.
* Anti-windup: the integral I is clamped to 0..max_power/Ki, so the integral alone can
  never ask for more than max_power, and it is only kept when the output is not
  clamped; a long heat-up at full power cannot store up an overshoot.
* The first reading only primes the state (no time has passed yet).

Watermark (`watermark_update`): full max_power while heating, nothing otherwise;
heating stops once the temperature reaches target + max_delta and starts again when
it falls to target - max_delta. The band keeps a relay from chattering.

NaN or infinite inputs must never reach these kernels: a NaN compares false with
everything and would silently produce a duty. `PidControl` and `WatermarkControl`
are the Python wrappers the heaters use; they refuse such inputs before calling in.

The `*_reference` functions state the same laws in plain Python over lists, written
for reading; the tests hold the kernels to them, and `warm_up` runs that comparison
as a self-test before any heater may use the kernels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Klipper divides its configured PID gains by this before use.
KLIPPER_PID_SCALE = 255.0

# PID state layout (float64 array of PID_STATE_SIZE).
PID_INTEGRAL = 0      # accumulated error, C*s
PID_SLOPE = 1         # filtered temperature slope, C/s
PID_LAST_TEMP = 2     # previous reading, C
PID_LAST_S = 3        # time of the latest reading, s
PID_PRIMED = 4        # 1.0 once a reading has been taken
PID_STATE_SIZE = 5

# Watermark state layout.
WM_HEATING = 0        # 1.0 while the heater is on
WATERMARK_STATE_SIZE = 1


@numba.njit(cache=True, nogil=True)
def pid_update(state, now_s, temp_c, target_c, kp, ki, kd, smooth_s, max_power):
    """One PID step; gains in Klipper units. Updates `state` and returns the duty."""
    kp_s = kp / KLIPPER_PID_SCALE
    ki_s = ki / KLIPPER_PID_SCALE
    kd_s = kd / KLIPPER_PID_SCALE
    dt_s = 0.0
    if state[PID_PRIMED] != 0.0:
        dt_s = now_s - state[PID_LAST_S]
        if dt_s < 0.0:
            dt_s = 0.0
        raw_slope = 0.0
        if dt_s > 0.0:
            raw_slope = (temp_c - state[PID_LAST_TEMP]) / dt_s
        weight = 1.0
        if smooth_s > 0.0:
            weight = dt_s / smooth_s
            if weight > 1.0:
                weight = 1.0
        state[PID_SLOPE] += (raw_slope - state[PID_SLOPE]) * weight
        if now_s > state[PID_LAST_S]:
            state[PID_LAST_S] = now_s
    else:
        state[PID_LAST_S] = now_s
        state[PID_PRIMED] = 1.0
    state[PID_LAST_TEMP] = temp_c

    integral_max = 0.0
    if ki_s > 0.0:
        integral_max = max_power / ki_s
    error_c = target_c - temp_c
    integral = state[PID_INTEGRAL] + error_c * dt_s
    if integral > integral_max:
        integral = integral_max
    if integral < 0.0:
        integral = 0.0
    output = kp_s * error_c + ki_s * integral - kd_s * state[PID_SLOPE]
    duty = output
    if duty > max_power:
        duty = max_power
    if duty < 0.0:
        duty = 0.0
    if duty == output:
        state[PID_INTEGRAL] = integral
    return duty


@numba.njit(cache=True, nogil=True)
def pid_run(state, times_s, temps_c, targets_c, kp, ki, kd, smooth_s, max_power, out):
    """`pid_update` over whole sequences (for offline runs and tests); fills `out`."""
    for i in range(times_s.shape[0]):
        out[i] = pid_update(state, times_s[i], temps_c[i], targets_c[i], kp, ki, kd,
                            smooth_s, max_power)


@numba.njit(cache=True, nogil=True)
def watermark_update(state, temp_c, target_c, max_delta, max_power):
    """One bang-bang step with a +-max_delta band. Updates `state`, returns the duty."""
    if state[WM_HEATING] != 0.0:
        if temp_c >= target_c + max_delta:
            state[WM_HEATING] = 0.0
    elif temp_c <= target_c - max_delta:
        state[WM_HEATING] = 1.0
    if state[WM_HEATING] != 0.0:
        return max_power
    return 0.0


@numba.njit(cache=True, nogil=True)
def watermark_run(state, temps_c, targets_c, max_delta, max_power, out):
    """`watermark_update` over whole sequences; fills `out`."""
    for i in range(temps_c.shape[0]):
        out[i] = watermark_update(state, temps_c[i], targets_c[i], max_delta, max_power)


# --------------------------------------------------------------------------- references

def pid_reference(state: list[float], now_s: float, temp_c: float, target_c: float,
                  kp: float, ki: float, kd: float, smooth_s: float,
                  max_power: float) -> float:
    """The PID law in plain Python on a list state of the same layout."""
    kp, ki, kd = (g / KLIPPER_PID_SCALE for g in (kp, ki, kd))
    if state[PID_PRIMED]:
        dt_s = max(0.0, now_s - state[PID_LAST_S])
        raw_slope = (temp_c - state[PID_LAST_TEMP]) / dt_s if dt_s > 0.0 else 0.0
        weight = min(1.0, dt_s / smooth_s) if smooth_s > 0.0 else 1.0
        state[PID_SLOPE] += (raw_slope - state[PID_SLOPE]) * weight
        state[PID_LAST_S] = max(state[PID_LAST_S], now_s)
    else:
        dt_s = 0.0
        state[PID_LAST_S] = now_s
        state[PID_PRIMED] = 1.0
    state[PID_LAST_TEMP] = temp_c
    integral_max = max_power / ki if ki > 0.0 else 0.0
    error_c = target_c - temp_c
    integral = min(integral_max, max(0.0, state[PID_INTEGRAL] + error_c * dt_s))
    output = kp * error_c + ki * integral - kd * state[PID_SLOPE]
    duty = min(max_power, max(0.0, output))
    if duty == output:
        state[PID_INTEGRAL] = integral
    return duty


def watermark_reference(state: list[float], temp_c: float, target_c: float,
                        max_delta: float, max_power: float) -> float:
    """The watermark law in plain Python on a list state of the same layout."""
    heating = bool(state[WM_HEATING])
    if heating and temp_c >= target_c + max_delta:
        heating = False
    elif not heating and temp_c <= target_c - max_delta:
        heating = True
    state[WM_HEATING] = 1.0 if heating else 0.0
    return max_power if heating else 0.0


# --------------------------------------------------------------------------- wrappers

def _finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"heater control input {name} is {value!r}, not a finite number")


def _gain_checks(max_power: float) -> None:
    if not 0.0 < max_power <= 1.0:
        raise ValueError(f"max_power must be in (0, 1], got {max_power!r}")


class PidControl:
    """A PID controller: fixed gains (Klipper units) and its state, stepped by the kernel."""

    kind = "pid"

    def __init__(self, kp: float, ki: float, kd: float, smooth_s: float,
                 max_power: float) -> None:
        _finite(kp=kp, ki=ki, kd=kd, smooth_s=smooth_s, max_power=max_power)
        if min(kp, ki, kd, smooth_s) < 0.0:
            raise ValueError("PID gains and smooth time must not be negative")
        _gain_checks(max_power)
        self.params = (float(kp), float(ki), float(kd), float(smooth_s), float(max_power))
        self.state = np.zeros(PID_STATE_SIZE)

    def update(self, now_s: float, temp_c: float, target_c: float) -> float:
        """Duty for this reading; refuses NaN/infinite inputs with ValueError."""
        _finite(now_s=now_s, temp_c=temp_c, target_c=target_c)
        return float(pid_update(self.state, float(now_s), float(temp_c), float(target_c),
                                *self.params))

    def reset_integral(self) -> None:
        self.state[PID_INTEGRAL] = 0.0

    def reset(self) -> None:
        """Forget everything: the next reading primes the controller again."""
        self.state[:] = 0.0


class WatermarkControl:
    """Bang-bang control with a +-max_delta band, stepped by the kernel."""

    kind = "watermark"

    def __init__(self, max_delta: float, max_power: float) -> None:
        _finite(max_delta=max_delta, max_power=max_power)
        if max_delta < 0.0:
            raise ValueError(f"max_delta must not be negative, got {max_delta!r}")
        _gain_checks(max_power)
        self.params = (float(max_delta), float(max_power))
        self.state = np.zeros(WATERMARK_STATE_SIZE)

    def update(self, now_s: float, temp_c: float, target_c: float) -> float:
        """Duty for this reading (`now_s` is checked, not used); refuses NaN/infinity."""
        _finite(now_s=now_s, temp_c=temp_c, target_c=target_c)
        return float(watermark_update(self.state, float(temp_c), float(target_c),
                                      *self.params))

    def reset_integral(self) -> None:
        """Nothing integrates here; present so heaters treat both laws alike."""

    def reset(self) -> None:
        self.state[:] = 0.0


def make_control(settings, smooth_s: float):
    """The control law a heater's settings ask for (`control` = "pid" or "watermark").

    Runs `warm_up` first, so a kernel that fails its self-test raises here and no
    heater is built on it. `settings` is a `printhost.config.HeaterSettings`.
    """
    warm_up()
    if settings.control == "watermark":
        return WatermarkControl(settings.max_delta, settings.max_power)
    if settings.control != "pid":
        raise ValueError(f"unknown heater control {settings.control!r}")
    return PidControl(settings.pid_kp, settings.pid_ki, settings.pid_kd, smooth_s,
                      settings.max_power)


# --------------------------------------------------------------------------- warm-up

_READY = False


def warm_up() -> None:
    """Compile (or load from the cache) the kernels and check them against the references.

    Called before a heater is created, so that no heater can run on kernels that were
    not compiled or that disagree with the plain statement of their law (a stale or
    damaged cache, a numba regression). Raises RuntimeError on any disagreement. The
    argument types are those the wrappers pass: a float64 state array and Python floats.
    """
    global _READY
    if _READY:
        return
    rng = np.random.default_rng(5)
    n = 400
    times = np.cumsum(rng.uniform(0.0, 0.4, n))
    temps = 150.0 + np.cumsum(rng.normal(0.0, 1.5, n))
    targets = np.where(rng.random(n) < 0.5, 160.0, 140.0)
    out = np.empty(n)
    pid_params = (22.0, 1.1, 110.0, 1.0, 0.9)
    state = np.zeros(PID_STATE_SIZE)
    pid_run(state, times, temps, targets, *pid_params, out)
    ref_state = [0.0] * PID_STATE_SIZE
    expected = [pid_reference(ref_state, float(t), float(c), float(g), *pid_params)
                for t, c, g in zip(times, temps, targets)]
    single = np.zeros(PID_STATE_SIZE)
    stepped = [pid_update(single, float(t), float(c), float(g), *pid_params)
               for t, c, g in zip(times, temps, targets)]
    wm_state = np.zeros(WATERMARK_STATE_SIZE)
    wm_out = np.empty(n)
    watermark_run(wm_state, temps, targets, 2.0, 0.8, wm_out)
    wm_ref = [0.0]
    wm_expected = [watermark_reference(wm_ref, float(c), float(g), 2.0, 0.8)
                   for c, g in zip(temps, targets)]
    wm_single = np.zeros(WATERMARK_STATE_SIZE)
    wm_stepped = [watermark_update(wm_single, float(c), float(g), 2.0, 0.8)
                  for c, g in zip(temps, targets)]
    if not (np.allclose(out, expected, rtol=0.0, atol=1e-12)
            and np.allclose(stepped, expected, rtol=0.0, atol=1e-12)
            and np.array_equal(wm_out, wm_expected) and wm_stepped == wm_expected):
        raise RuntimeError("heater control kernels disagree with their reference; "
                           "heaters stay disabled")
    _READY = True
