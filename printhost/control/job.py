"""A print job: streams a G-code file to the printer, with pause, resume and cancel.

The file is read a piece at a time (`jobfeed.JobFeed`: the compiled planner runs the
motion, the interpreter everything else, in file order), and only while less than
`buffer_time_s` of motion is queued ahead of the toolhead. That bound is what makes
pause and cancel prompt (at most that much motion runs after the request) and keeps
memory flat for any file size.

Pause keeps everything already read: the lookahead queue is flushed so every line that
was read is executed, the position and the G-code state at that point are saved, and
only then the park sequence is queued. Resume undoes the park in reverse order and
restores the saved state, so the deposited path and filament equal an uninterrupted
print's apart from the park moves.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import IO

from printhost.config import PauseSettings, PrinterSettings
from printhost.control.checkpoint import Boundary, Checkpoints, Step, resume_steps
from printhost.control.gcode import GCodeCommand, GCodeError
from printhost.control.heaters import HeaterBank
from printhost.control.interpreter import CommandError, GCodeInterpreter, GCodeState, PartFan, Wait
from printhost.control.jobfeed import JobFeed, LineError
from printhost.control.motion import Vec4
from printhost.control.toolhead import MoveError, Toolhead

log = logging.getLogger(__name__)


class JobState(str, enum.Enum):
    PRINTING = "printing"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"
    INTERRUPTED = "interrupted"


ACTIVE_STATES = frozenset({JobState.PRINTING, JobState.PAUSING, JobState.PAUSED,
                           JobState.CANCELLING})


class JobConflict(Exception):
    """The request does not fit the job's state (HTTP 409)."""


@dataclass
class PrintJob:
    id: str
    file: str
    path: str
    size_bytes: int
    started_at: str
    started_print_time: float
    state: JobState = JobState.PRINTING
    error: str | None = None
    line: int = 0
    bytes_read: int = 0
    paused_total_s: float = 0.0
    paused_since: float | None = None
    ended_print_time: float | None = None
    ended_at: str | None = None
    # Time spent waiting (heating, M400): excluded from the speed used for estimates.
    wait_total_s: float = 0.0
    waiting_since: float | None = None
    # The file's own latest estimate (M73 R), and the moving time when it was read.
    slicer_remaining_s: float | None = None
    slicer_remaining_at: float = 0.0


@dataclass(frozen=True)
class ResumePoint:
    position: Vec4
    gcode_state: GCodeState
    retracted_mm: float


def _moving_time(job: PrintJob, now: float) -> float:
    """Seconds the job has spent printing: pauses and waits (heating, M400) excluded."""
    end = job.ended_print_time if job.ended_print_time is not None else now
    paused = job.paused_total_s + ((now - job.paused_since) if job.paused_since else 0.0)
    waited = job.wait_total_s + ((now - job.waiting_since) if job.waiting_since else 0.0)
    return max(0.0, end - job.started_print_time) - paused - waited


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobRunner:
    def __init__(self, interpreter: GCodeInterpreter, toolhead: Toolhead, heaters: HeaterBank,
                 fan: PartFan, printer: PrinterSettings, pause: PauseSettings,
                 buffer_time_s: float, min_extrude_temp_c: float = 170.0) -> None:
        self.interp = interpreter
        self.toolhead = toolhead
        self.heaters = heaters
        self.fan = fan
        self.printer = printer
        self.pause_cfg = pause
        self.buffer_time_s = buffer_time_s
        # A cold extruder is not moved by the pause retract (it would grind the filament).
        self.min_extrude_temp_c = min_extrude_temp_c
        self.job: PrintJob | None = None
        self._file: IO[bytes] | None = None
        self._source: JobFeed | None = None
        self._wait: Wait | None = None
        self._resume: ResumePoint | None = None
        # The G28 whose homing `_wait` is polling, and one that a pause interrupted and
        # that runs again, from its start, on resume.
        self._homing_cmd: GCodeCommand | None = None
        self._rehome: GCodeCommand | None = None
        self._filament_at_start = 0.0
        # Where the running job could be restarted after a power loss (checkpoint.py),
        # and the prologue of a job that was restarted so.
        self.checkpoints = Checkpoints()
        self._prologue: collections.deque[Step] = collections.deque()
        self._now = 0.0
        interpreter.on_progress = self._slicer_progress

    def _slicer_progress(self, percent: float | None, remaining_min: float | None,
                         now: float) -> None:
        job = self.job
        if job is not None and job.state in ACTIVE_STATES and remaining_min is not None:
            job.slicer_remaining_s = remaining_min * 60.0
            job.slicer_remaining_at = _moving_time(job, now)

    # ------------------------------------------------------------------ queries
    @property
    def active(self) -> bool:
        return self.job is not None and self.job.state in ACTIVE_STATES

    # ------------------------------------------------------------------ requests
    def start(self, job_id: str, file: str, path: str, now: float,
              resume: dict | None = None) -> PrintJob:
        """Start printing `path`; with `resume` (a checkpoint's resume point, as
        `Checkpoints.to_json` made it) from that point, after the prologue of
        `checkpoint.resume_steps`. ValueError for a resume point that does not fit."""
        if self.active:
            raise JobConflict("A job is already in progress")
        fh = open(path, "rb")  # FileNotFoundError is reported by the caller
        try:
            size = os.fstat(fh.fileno()).st_size
            prologue: list[Step] = []
            first_line = 1
            if resume is not None:
                try:
                    prologue = resume_steps(resume, self)
                    offset, first_line = int(resume["offset"]), int(resume["line"])
                    filament = float(resume["filament_used_mm"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"resume point not usable: {exc}") from None
                if not 0 <= offset < size or first_line < 1:
                    raise ValueError("resume point not usable: beyond the end of the file")
                fh.seek(offset)
        except BaseException:
            fh.close()
            raise
        self._close()
        self._file = fh
        self.checkpoints = Checkpoints()
        self._source = JobFeed(fh, self.interp, self.toolhead, self.buffer_time_s,
                               first_line=first_line, on_boundary=self._boundary)
        self._prologue = collections.deque(prologue)
        self._wait = None
        self._resume = None
        self._homing_cmd = self._rehome = None
        self._filament_at_start = self.interp.filament_used_mm
        if resume is not None:
            self._filament_at_start -= filament
        self.job = PrintJob(job_id, file, path, size, _utc_now(), now)
        self.job.line, self.job.bytes_read = first_line - 1, fh.tell()
        if resume is not None:
            log.info("job %s: resuming %s at line %d (offset %d)", job_id, file, first_line,
                     fh.tell())
        else:
            log.info("job %s: printing %s (%d bytes)", job_id, file, size)
        return self.job

    def _boundary(self, offset: int, line: int, row_z: int) -> None:
        """The feed is about to run a move naming Z: remember the state to restart from."""
        job = self.job
        if job is None:
            return
        source = self._source
        assert source is not None
        z = source.z_target(row_z)
        toolhead = self.toolhead
        due = (max(self._now, toolhead.executor.queue_end_time())
               + toolhead.planner.queued_time_estimate())
        self.checkpoints.add(Boundary(
            offset, line, toolhead.commanded_position, z, self.interp.state, toolhead.accel,
            self.fan.speed, {h.name: h.target_c for h in self.heaters},
            self.interp.filament_used_mm - self._filament_at_start, due))

    def pause(self, now: float) -> None:
        job = self.job
        if job is None or job.state != JobState.PRINTING:
            raise JobConflict("No job in progress")
        if self._homing_cmd is not None:
            self._pause_homing(job, now)
            return
        self.toolhead.flush()
        resume_pos = self.toolhead.commanded_position
        retracted = self._queue_park_moves(retract=True)
        self._resume = ResumePoint(resume_pos, self.interp.save_state(), retracted)
        job.state = JobState.PAUSING
        log.info("job %s: pausing at line %d", job.id, job.line)

    def _pause_homing(self, job: PrintJob, now: float) -> None:
        """Pause during G28: the homing move stops at once (the axis is no longer homed)
        and nothing is parked, as nothing has been printed since the last known position;
        motion queued before the G28 still runs. Resume runs the G28 again."""
        self._rehome, self._homing_cmd = self._homing_cmd, None
        self._wait = None
        if job.waiting_since is not None:
            job.wait_total_s += now - job.waiting_since
            job.waiting_since = None
        self.toolhead.abort_homing()
        job.state = JobState.PAUSING
        log.info("job %s: pausing at line %d: homing stopped", job.id, job.line)

    def resume(self, now: float) -> None:
        job = self.job
        if job is not None and job.state == JobState.PAUSED and self._rehome is not None:
            self._settle_pause_time(now)
            job.state = JobState.PRINTING
            log.info("job %s: resumed at line %d: homing again", job.id, job.line)
            return
        if job is None or job.state != JobState.PAUSED or self._resume is None:
            raise JobConflict("Job not paused")
        rp = self._resume
        cfg = self.pause_cfg
        cur = self.toolhead.commanded_position
        # Reverse of the park: travel above the print, lower, then unretract. The
        # console may have lowered Z while paused: rise to the print's height first,
        # never travel over the part below it.
        if cur[2] < rp.position[2]:
            self.toolhead.move_to((cur[0], cur[1], rp.position[2], cur[3]), cfg.z_speed)
            cur = self.toolhead.commanded_position
        if (cur[0], cur[1]) != (rp.position[0], rp.position[1]):
            self.toolhead.move_to((rp.position[0], rp.position[1], cur[2], cur[3]),
                                  cfg.travel_speed)
        if cur[2] != rp.position[2]:
            self.toolhead.move_to((rp.position[0], rp.position[1], rp.position[2], cur[3]),
                                  cfg.z_speed)
        machine_e: float | None = None
        if self.toolhead.commanded_position[3] == rp.position[3] - rp.retracted_mm:
            if rp.retracted_mm > 0.0:
                self.toolhead.move_to(rp.position, cfg.retract_speed)
        else:
            # Filament was moved while paused (a load, a purge from the console):
            # unretract from where the extruder is now, and let the file's E
            # coordinates continue from there instead of pulling the filament back.
            machine_e = self.toolhead.commanded_position[3] + rp.retracted_mm
            if rp.retracted_mm > 0.0:
                self.toolhead.move_to((*rp.position[:3], machine_e), cfg.retract_speed)
        # Speed and flow factors set while paused stay: the operator changed them
        # for the rest of the print.
        now_state = self.interp.state
        self.interp.restore_state(replace(rp.gcode_state,
                                          speed_factor=now_state.speed_factor,
                                          extrude_factor=now_state.extrude_factor),
                                  machine_e)
        if job.paused_since is not None:
            job.paused_total_s += now - job.paused_since
            job.paused_since = None
        self._resume = None
        job.state = JobState.PRINTING
        log.info("job %s: resumed at line %d", job.id, job.line)

    def cancel(self, now: float) -> None:
        job = self.job
        if job is None or job.state not in (JobState.PRINTING, JobState.PAUSING, JobState.PAUSED):
            raise JobConflict("No job to cancel")
        self.heaters.all_off()
        self.fan.set_speed(0.0)
        self._close()
        # A homing move stops where it is; its axis is unhomed, so there is no park. The
        # same holds for a job paused during G28 (`_rehome`): whether the cancel comes
        # before or after that pause has settled must not change where the toolhead ends.
        paused_in_homing = self._rehome is not None
        self._homing_cmd = self._rehome = None
        homing_stopped = (self.toolhead.abort_homing() or self.toolhead.homing_stopping
                          or paused_in_homing)
        self.toolhead.abort()
        self.interp.sync_from_toolhead()
        if self.pause_cfg.park_on_cancel and not homing_stopped:
            self._queue_park_moves(retract=False)
        self._settle_pause_time(now)
        job.state = JobState.CANCELLING
        log.info("job %s: cancelling at line %d", job.id, job.line)

    def shutdown(self, reason: str, now: float, state: JobState = JobState.ERROR) -> None:
        """Stop everything at once (heater fault, M112, service stop): no park, heaters off."""
        self.heaters.all_off()
        self.fan.set_speed(0.0)
        self._close()
        self.toolhead.abort()
        self.interp.sync_from_toolhead()
        if self.active:
            self._finish(state, now, reason)

    # ------------------------------------------------------------------ tick
    def step(self, now: float) -> None:
        job = self.job
        if job is None:
            return
        if job.state == JobState.PAUSING:
            if self.toolhead.is_idle():
                job.state = JobState.PAUSED
                job.paused_since = now
                log.info("job %s: paused", job.id)
        elif job.state == JobState.CANCELLING:
            if self.toolhead.is_idle():
                # The G-code position follows the park moves (or an aborted homing move).
                self.interp.sync_from_toolhead()
                self._finish(JobState.CANCELLED, now, None)
        elif job.state == JobState.PRINTING:
            self._feed(job, now)

    def _feed(self, job: PrintJob, now: float) -> None:
        self._now = now
        if self._rehome is not None:
            # Resumed after a pause that stopped a G28: run that G28 again.
            cmd, self._rehome = self._rehome, None
            if not self._execute(job, cmd, now):
                return
        if self._wait is not None:
            try:
                if not self._wait():
                    return
            except GCodeError as exc:  # a wait that failed (homing found no endstop)
                self._fail(job, f"{job.file}: line {job.line}: {exc}", now)
                return
            self._wait = None
            self._homing_cmd = None
            if job.waiting_since is not None:
                job.wait_total_s += now - job.waiting_since
                job.waiting_since = None
        while self._prologue:
            step = self._prologue.popleft()
            if isinstance(step, GCodeCommand):
                if not self._execute(job, step, now):
                    return
                continue
            try:
                step()
            except (MoveError, ValueError) as exc:
                self._fail(job, f"{job.file}: resuming failed: {exc}", now)
                return
        self.checkpoints.update(now)
        source = self._source
        assert source is not None
        failure = None
        waiting = None
        try:
            if not source.eof:
                waiting = source.feed()
        except GCodeError as exc:   # a line that cannot be parsed, or is too long to read
            failure = f"{job.file}: {exc}"
        except LineError as exc:
            failure = f"{job.file}: line {exc.lineno}: {exc.message}"
        job.line = source.line
        job.bytes_read = source.bytes_read
        if failure is not None:
            self._fail(job, failure, now)
        elif waiting is not None:
            self._wait, cmd = waiting
            self._homing_cmd = cmd if cmd.name == "G28" else None
            job.waiting_since = now
        elif source.eof and self.toolhead.is_idle():
            self._finish(JobState.COMPLETED, now, None)

    def _execute(self, job: PrintJob, cmd: GCodeCommand, now: float) -> bool:
        """Run one command; False when the job must stop reading (it waits, or failed)."""
        try:
            wait = self.interp.execute(cmd)
        except GCodeError as exc:
            self._fail(job, f"{job.file}: {exc}", now)
            return False
        except CommandError as exc:
            self._fail(job, f"{job.file}: line {cmd.lineno}: {exc}", now)
            return False
        if wait is None:
            return True
        self._wait = wait
        self._homing_cmd = cmd if cmd.name == "G28" else None
        job.waiting_since = now
        return False

    # ------------------------------------------------------------------ helpers
    def _queue_park_moves(self, retract: bool) -> float:
        """Queue retract, Z lift and park; returns how much filament was retracted."""
        cfg = self.pause_cfg
        homed = self.toolhead.homed_axes
        pos = list(self.toolhead.commanded_position)
        retracted = 0.0
        extruder = self.heaters["extruder"]
        if retract and cfg.retract_mm > 0.0 and extruder.temperature_c >= self.min_extrude_temp_c:
            pos[3] -= cfg.retract_mm
            self.toolhead.move_to((pos[0], pos[1], pos[2], pos[3]), cfg.retract_speed)
            retracted = cfg.retract_mm
        if "z" in homed and cfg.lift_z_mm > 0.0:
            z_max = self.printer.axes.z.position_max
            new_z = min(pos[2] + cfg.lift_z_mm, z_max)
            if new_z > pos[2]:
                pos[2] = new_z
                self.toolhead.move_to((pos[0], pos[1], pos[2], pos[3]), cfg.z_speed)
        if cfg.park and "x" in homed and "y" in homed:
            ax = self.printer.axes
            pos[0] = min(max(cfg.park_x, ax.x.position_min), ax.x.position_max)
            pos[1] = min(max(cfg.park_y, ax.y.position_min), ax.y.position_max)
            try:
                self.toolhead.move_to((pos[0], pos[1], pos[2], pos[3]), cfg.travel_speed)
            except MoveError as exc:  # pragma: no cover - clamped above, kept as a guard
                log.warning("park move refused: %s", exc)
        self.toolhead.flush()
        return retracted

    def _fail(self, job: PrintJob, message: str, now: float) -> None:
        log.error("job %s stopped: %s", job.id, message)
        self._close()
        self.toolhead.flush()
        self.heaters.all_off()
        self.fan.set_speed(0.0)
        self._finish(JobState.ERROR, now, message)

    def _settle_pause_time(self, now: float) -> None:
        job = self.job
        if job is not None and job.paused_since is not None:
            job.paused_total_s += now - job.paused_since
            job.paused_since = None

    def _finish(self, state: JobState, now: float, error: str | None) -> None:
        job = self.job
        assert job is not None
        self._settle_pause_time(now)
        self._close()
        self._wait = None
        self._resume = None
        self._prologue.clear()
        self._homing_cmd = self._rehome = None
        job.state = state
        job.error = error
        job.ended_print_time = now
        job.ended_at = _utc_now()
        log.info("job %s: %s", job.id, state.value)

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
        self._source = None

    # ------------------------------------------------------------------ status
    def get_status(self, now: float) -> dict | None:
        job = self.job
        if job is None:
            return None
        end = job.ended_print_time if job.ended_print_time is not None else now
        paused = job.paused_total_s + ((now - job.paused_since) if job.paused_since else 0.0)
        total = max(0.0, end - job.started_print_time)
        printing = max(0.0, total - paused)
        progress = 1.0 if job.state == JobState.COMPLETED else (
            job.bytes_read / job.size_bytes if job.size_bytes else 0.0)
        remaining = None
        waited = job.wait_total_s + ((now - job.waiting_since) if job.waiting_since else 0.0)
        moving = printing - waited
        if job.state in ACTIVE_STATES and job.slicer_remaining_s is not None:
            # The file's own estimate (M73 R) counted down while printing: the slicer
            # knows the moves ahead, which the rate of progress so far does not.
            remaining = round(max(0.0, job.slicer_remaining_s
                                  - (moving - job.slicer_remaining_at)), 1)
        elif job.state in ACTIVE_STATES and progress > 0.001 and moving > 1.0:
            # The rate of progress while actually printing; heating waits would inflate it.
            remaining = round(moving * (1.0 - progress) / progress, 1)
        elif job.state == JobState.COMPLETED:
            remaining = 0.0
        return {
            "id": job.id,
            "file": job.file,
            "state": job.state.value,
            "progress": round(min(1.0, progress), 4),
            "started_at": job.started_at,
            "ended_at": job.ended_at,
            "print_duration": round(printing, 2),
            "total_duration": round(total, 2),
            "estimated_remaining": remaining,
            "filament_used_mm": round(self.interp.filament_used_mm - self._filament_at_start, 3),
            "line": job.line,
            "error": job.error,
            # Where it could be restarted after a power loss: the supervisor keeps it.
            "resume_point": (self.checkpoints.to_json() if job.state in ACTIVE_STATES
                             else None),
        }
