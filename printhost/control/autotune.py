"""PID autotune by relay oscillation, and writing the tuned gains into a config file.

A heater switched fully on below the target and fully off above it (a relay) settles
into a steady oscillation whose period is the heater's ultimate period Tu and whose
amplitude reveals its ultimate gain. This is the Astrom-Hagglund relay experiment:
by the describing-function argument, a relay of amplitude P drives the loop with a
first harmonic of 4*P/pi, so if the temperature's first harmonic has amplitude a,
the loop gain at that frequency is 1 when the controller gain is Ku = 4*P/(pi*a).
Ziegler-Nichols then gives Kp = 0.6*Ku, Ti = 0.5*Tu, Td = 0.125*Tu.

Why the first harmonic rather than the peaks: the derivation above is about the
fundamental, and integrating over a whole cycle averages sensor noise away, where the
highest and lowest samples of a noisy cycle are biased outwards by the noise. Why a
hysteresis of a few degrees (the relay switches off at target + h and on at
target - h): a block with a lagging thermistor but little dead time barely
oscillates under an ideal relay, so its amplitude would be set by sensor noise and
change from run to run; a band of +-2.5 C (the width of Klipper's 5 C band) makes the
oscillation large and repeatable, and stays inside the heating check's 5 C
hysteresis. Why several cycles with the first discarded: the first cycle still carries
the heat-up, so it is longer and larger than the steady ones.

`RelayAutotune` is a pure state machine fed `(now_s, temp_c)`; it owns no clock and
no heater, so the same code runs on the live heater, in `printhost pid-tune` on the
simulator, and in the unit tests on a manual clock. `AutotuneSession` connects it to
a live `Heater` through `Heater.set_override`, which leaves every safety check of the
heater active.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from printhost.control.heaters import KLIPPER_PID_SCALE

# Relay hysteresis either side of the target, C (see the module docstring).
DEFAULT_HYSTERESIS_C = 2.5
# Cycles averaged into the result, after the first (discarded) one.
DEFAULT_CYCLES = 5
# A tune that has not finished after this long on the tuner's clock fails: a heater
# that cannot reach or cross its target will not start oscillating later.
DEFAULT_TIMEOUT_S = 3600.0

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


@dataclass(frozen=True)
class TuneResult:
    """Gains in Klipper's units (the config's), and what they were derived from."""
    kp: float
    ki: float
    kd: float
    ku: float          # ultimate gain, duty per C (not scaled)
    tu_s: float        # ultimate period
    amplitude_c: float  # mean first-harmonic amplitude of the temperature
    cycles: int        # cycles averaged
    spread: float      # (max - min) / mean of the per-cycle Ku estimates

    def as_dict(self) -> dict[str, Any]:
        return {"pid_kp": round(self.kp, 3), "pid_ki": round(self.ki, 3),
                "pid_kd": round(self.kd, 3), "ku": round(self.ku, 6),
                "tu": round(self.tu_s, 3), "amplitude": round(self.amplitude_c, 3),
                "cycles": self.cycles, "spread": round(self.spread, 4)}


def zn_gains(ku: float, tu_s: float) -> tuple[float, float, float]:
    """Ziegler-Nichols PID gains in Klipper's units from Ku (duty/C) and Tu (s)."""
    kp = 0.6 * ku * KLIPPER_PID_SCALE
    ti_s = 0.5 * tu_s
    td_s = 0.125 * tu_s
    return kp, kp / ti_s, kp * td_s


def _first_harmonic(samples: list[tuple[float, float]]) -> float:
    """Amplitude of the fundamental of one full cycle of (t, temp) samples.

    Trapezoidal integration over unevenly spaced samples, so a control loop that
    wakes irregularly still measures correctly.
    """
    t0, t1 = samples[0][0], samples[-1][0]
    period = t1 - t0
    w = 2.0 * math.pi / period
    re_sum = im_sum = 0.0
    prev_t, prev_y = samples[0]
    prev_c, prev_s = math.cos(0.0), math.sin(0.0)
    for t, y in samples[1:]:
        c, s = math.cos(w * (t - t0)), math.sin(w * (t - t0))
        dt = t - prev_t
        re_sum += 0.5 * dt * (prev_y * prev_c + y * c)
        im_sum += 0.5 * dt * (prev_y * prev_s + y * s)
        prev_t, prev_y, prev_c, prev_s = t, y, c, s
    return 2.0 / period * math.hypot(re_sum, im_sum)


class RelayAutotune:
    """The relay experiment as a state machine: `update(now_s, temp_c)` -> duty.

    The relay switches between `max_power` and 0, so its amplitude P is
    max_power / 2 around the mean duty that holds the target. A cycle runs from one
    switch-on to the next. After `cycles + 1` full cycles the result is computed
    from the last `cycles` of them.
    """

    def __init__(self, target_c: float, max_power: float = 1.0, *,
                 hysteresis_c: float = DEFAULT_HYSTERESIS_C, cycles: int = DEFAULT_CYCLES,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not (isinstance(target_c, (int, float)) and math.isfinite(target_c)):
            raise ValueError(f"target must be a finite number, got {target_c!r}")
        if not 0.0 < max_power <= 1.0:
            raise ValueError(f"max_power must be in (0, 1], got {max_power!r}")
        if cycles < 2:
            raise ValueError("at least 2 cycles are needed to judge the oscillation")
        self.target_c = float(target_c)
        self.max_power = float(max_power)
        self.hysteresis_c = float(hysteresis_c)
        self.cycles_needed = int(cycles)
        self.timeout_s = float(timeout_s)
        self.state = RUNNING
        self.error: str | None = None
        self.result: TuneResult | None = None
        self._start_s: float | None = None
        self._heating = True
        self._cycle_start_s: float | None = None
        self._samples: list[tuple[float, float]] = []
        self._periods: list[float] = []
        self._amplitudes: list[float] = []
        self._complete = 0  # full cycles seen, the discarded first one included

    # ----------------------------------------------------------------- reporting
    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    @property
    def cycles_done(self) -> int:
        """Cycles measured so far that count towards the result."""
        return max(0, self._complete - 1)

    @property
    def progress(self) -> float:
        """0..1: the share of counted cycles completed (heat-up counts as 0)."""
        if self.state == DONE:
            return 1.0
        return min(1.0, self.cycles_done / self.cycles_needed)

    # ----------------------------------------------------------------- control
    def cancel(self) -> None:
        if self.state == RUNNING:
            self.state = CANCELLED
            self.error = "cancelled"

    def fail(self, reason: str) -> None:
        if self.state == RUNNING:
            self.state = FAILED
            self.error = reason

    def update(self, now_s: float, temp_c: float) -> float:
        """Take one reading and return the duty to apply (0 once finished)."""
        if self.state != RUNNING:
            return 0.0
        if not math.isfinite(temp_c):
            self.fail(f"temperature reading {temp_c} is not a number")
            return 0.0
        if self._start_s is None:
            self._start_s = now_s
        elif now_s - self._start_s > self.timeout_s:
            self.fail(f"no steady oscillation around {self.target_c:g} C within "
                      f"{self.timeout_s:.0f} s")
            return 0.0
        if self._cycle_start_s is not None:
            self._samples.append((now_s, temp_c))
        if self._heating and temp_c >= self.target_c + self.hysteresis_c:
            self._heating = False
        elif not self._heating and temp_c <= self.target_c - self.hysteresis_c:
            self._heating = True
            self._switched_on(now_s, temp_c)
        return self.max_power if self._heating and self.state == RUNNING else 0.0

    def _switched_on(self, now_s: float, temp_c: float) -> None:
        if self._cycle_start_s is not None and now_s > self._cycle_start_s:
            self._complete += 1
            if self._complete > 1:  # the first cycle still carries the heat-up
                self._periods.append(now_s - self._cycle_start_s)
                self._amplitudes.append(_first_harmonic(self._samples))
            if len(self._periods) >= self.cycles_needed:
                self._finish()
                return
        self._cycle_start_s = now_s
        self._samples = [(now_s, temp_c)]

    def _finish(self) -> None:
        relay_amplitude = self.max_power / 2.0
        kus = [4.0 * relay_amplitude / (math.pi * a) for a in self._amplitudes if a > 0.0]
        if len(kus) != len(self._amplitudes):
            self.fail("the temperature did not oscillate")
            return
        tu_s = sum(self._periods) / len(self._periods)
        amplitude_c = sum(self._amplitudes) / len(self._amplitudes)
        ku = 4.0 * relay_amplitude / (math.pi * amplitude_c)
        kp, ki, kd = zn_gains(ku, tu_s)
        self.result = TuneResult(kp, ki, kd, ku, tu_s, amplitude_c, len(kus),
                                 (max(kus) - min(kus)) / ku)
        self.state = DONE
        self._samples = []


# --------------------------------------------------------------------------- live heater

class AutotuneSession:
    """A relay tune driving one live `Heater` through its duty override.

    The heater's target is set to the tune target, so the heater's own checks
    (min/max temperature, sensor, "not heating at expected rate") watch the tune as
    they watch any heat-up; only the PID's duty is replaced. Whatever ends the tune
    (done, failed, cancelled, a fault) releases the override and turns the heater off.
    """

    def __init__(self, heater: Any, target_c: float, **tuner_options: Any) -> None:
        if not hasattr(heater, "set_override"):
            raise RuntimeError("this build's heaters cannot take a duty override, "
                               "so a PID tune cannot run")
        s = heater.settings
        if isinstance(target_c, bool) or not isinstance(target_c, (int, float)) \
                or not math.isfinite(target_c):
            raise ValueError(f"target for {heater.name} must be a finite number")
        if not s.min_temp < target_c <= s.max_temp:
            raise ValueError(f"target {target_c:g} C for {heater.name} is outside "
                             f"{s.min_temp:g}..{s.max_temp:g} C")
        self.heater = heater
        self.target_c = float(target_c)
        self.tuner = RelayAutotune(self.target_c, s.max_power, **tuner_options)
        self._started_s: float | None = None
        self._last_s = 0.0
        heater.set_target(self.target_c)

    @property
    def running(self) -> bool:
        return not self.tuner.finished

    def tick(self, now_s: float) -> None:
        """Feed the latest reading to the tuner and apply its duty (after heater updates)."""
        if self.tuner.finished:
            return
        if self._started_s is None:
            self._started_s = now_s
        self._last_s = now_s
        if self.heater.fault is not None:
            self.abort(f"heater {self.heater.name} shut down: {self.heater.fault}")
            return
        if self.heater.target_c != self.target_c:
            self.abort(f"heater {self.heater.name} was turned off or given another target")
            return
        temp_c = self.heater.temperature_c
        if not math.isfinite(temp_c):
            return  # no reading yet; the heater itself stays off until there is one
        duty = self.tuner.update(now_s, temp_c)
        if self.tuner.finished:
            self._release()
        else:
            self.heater.set_override(duty)

    def cancel(self) -> None:
        self.tuner.cancel()
        self._release()

    def abort(self, reason: str) -> None:
        """End the tune as failed (a fault, a service stop); the heater goes off."""
        self.tuner.fail(reason)
        self._release()

    def _release(self) -> None:
        try:
            self.heater.set_override(None)
        finally:
            self.heater.turn_off()

    def get_status(self) -> dict[str, Any]:
        t = self.tuner
        elapsed = 0.0 if self._started_s is None else self._last_s - self._started_s
        return {
            "heater": self.heater.name,
            "target": self.target_c,
            "state": t.state,
            "progress": round(t.progress, 3),
            "cycles": t.cycles_done,
            "cycles_needed": t.cycles_needed,
            "elapsed": round(elapsed, 1),
            "result": t.result.as_dict() if t.result is not None else None,
            "error": t.error,
        }


# --------------------------------------------------------------------------- config file

PID_KEYS = ("pid_kp", "pid_ki", "pid_kd")
_TABLE_HEADER = re.compile(r"^[ \t]*\[(?!\[)([^\]]*)\][ \t]*(?:#.*)?$")
_ANY_HEADER = re.compile(r"^[ \t]*\[")
_PID_LINE = re.compile(r"^([ \t]*)(pid_k[pid])([ \t]*=[ \t]*)([^#\r\n]*?)([ \t]*(?:#[^\r\n]*)?)$")
_WRITE_LOCK = threading.Lock()


class ConfigWriteError(Exception):
    """The gains could not be written; the file is unchanged and the message says why."""


def _table_path(header: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"').strip("'") for part in header.split("."))


def _format(value: float) -> str:
    return f"{value:.3f}"


def edit_pid_lines(text: str, heater: str, gains: dict[str, float]) -> str:
    """Return `text` with the heater's three pid_* values set; every other byte kept.

    Only the values on the pid_* lines of `[heaters.<heater>]` change (indentation
    and trailing comments stay); missing keys are added at the end of that table, and
    a missing table is appended at the end of the file.
    """
    lines = text.splitlines(keepends=True)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    new = {key: _format(gains[key]) for key in PID_KEYS}
    start = None
    for i, line in enumerate(lines):
        m = _TABLE_HEADER.match(line.rstrip("\r\n"))
        if m and _table_path(m.group(1)) == ("heaters", heater):
            start = i
            break
    if start is None:
        out = text
        if out and not out.endswith("\n"):
            out += eol
        if out:
            out += eol
        out += f"[heaters.{heater}]{eol}" + "".join(f"{k} = {new[k]}{eol}" for k in PID_KEYS)
        return out
    end = next((j for j in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[j])),
               len(lines))
    seen: set[str] = set()
    last_setting = start
    for j in range(start + 1, end):
        body = lines[j].rstrip("\r\n")
        ending = lines[j][len(body):]
        stripped = body.strip()
        if stripped and not stripped.startswith("#"):
            last_setting = j
        m = _PID_LINE.match(body)
        if m and m.group(2) in new:
            seen.add(m.group(2))
            lines[j] = f"{m.group(1)}{m.group(2)}{m.group(3)}{new[m.group(2)]}{m.group(5)}{ending}"
    missing = [k for k in PID_KEYS if k not in seen]
    if missing:
        if not lines[last_setting].endswith("\n"):
            lines[last_setting] += eol
        lines[last_setting + 1:last_setting + 1] = [f"{k} = {new[k]}{eol}" for k in missing]
    return "".join(lines)


def write_pid_to_config(path: str | Path, heater: str, gains: dict[str, float]) -> None:
    """Write the gains into the config file at `path`, atomically, or raise.

    The edited text is checked with `load_settings` (from a temporary file next to
    the config) and must read back exactly the new gains before it replaces the file;
    a file laid out in a way the line editor does not understand (dotted keys, inline
    tables) is refused rather than half-edited.
    """
    # Imported here: this module also runs in the control process, which must not
    # import the store's dependencies.
    import os
    import tempfile

    from printhost.config import ConfigError, load_settings
    from printhost.store.atomic import replace_file

    target = Path(path).resolve()
    rounded = {k: float(_format(gains[k])) for k in PID_KEYS}
    with _WRITE_LOCK:
        try:
            raw = target.read_bytes()
        except FileNotFoundError:
            raise ConfigWriteError("the config file no longer exists") from None
        except OSError as exc:
            raise ConfigWriteError(f"the config file cannot be read ({exc.strerror})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigWriteError("the config file is not UTF-8 text") from None
        data = edit_pid_lines(text, heater, rounded).encode("utf-8")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.check.", suffix=".toml",
                                       dir=target.parent)
        except OSError as exc:
            raise ConfigWriteError(f"the config directory is not writable ({exc.strerror})") \
                from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            settings = load_settings(tmp)
        except ConfigError as exc:
            problem = str(exc).replace(tmp, str(target.name))
            raise ConfigWriteError(f"the edited config would not be valid: {problem}") from None
        finally:
            os.unlink(tmp)
        got = getattr(settings.heaters, heater)
        if any(getattr(got, k) != rounded[k] for k in PID_KEYS):
            lines = ", ".join(f"{k} = {_format(rounded[k])}" for k in PID_KEYS)
            raise ConfigWriteError(f"the config file sets the {heater} gains in a way that "
                                   f"cannot be edited automatically; set {lines} in "
                                   f"[heaters.{heater}] by hand")
        try:
            replace_file(target, data, None)
        except OSError as exc:
            raise ConfigWriteError(f"the config file cannot be written ({exc.strerror})") \
                from None
