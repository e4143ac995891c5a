"""The printer as the control process sees it: hardware objects, the job, and faults.

`Printer` is built on an MCU (`on_mcu`: a real board, or the simulated MCU process) or,
for unit tests, on the in-process simulated printer (`simulated`, the only place this
module touches `printhost.sim`), and is driven by `tick()` from the control loop. Commands from the API arrive through
`handle()`, which never blocks: every request is answered in the same tick.

A fault (heater out of range, M112, an emergency stop, an MCU shutdown or a lost MCU)
puts the printer into a latched `error` state: heaters off, motion stopped, job ended
`error`. Only a firmware restart (`control/restart.py`, which builds a new printer) or a
restart of the control process clears it, so a printer that overheated once cannot
reheat without a person deciding so.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from printhost.config import Settings
from printhost.control.autotune import AutotuneSession
from printhost.control.console import Console, ConsoleConflict, ConsoleInvalid
from printhost.control.gcode import GCodeError
from printhost.control.heaters import Heater, HeaterBank, HeaterFault
from printhost.control.interpreter import GCodeInterpreter, PartFan
from printhost.control.job import JobConflict, JobRunner, JobState
from printhost.control.jobfeed import EmergencyStop
from printhost.control.motion import MotionExecutor
from printhost.control.toolhead import Toolhead
from printhost.hw.devices import DeviceEvent, PrinterView
from printhost.ipc.channel import Command, ErrorKind, Reply, Request

log = logging.getLogger(__name__)


def _num(value: float, digits: int) -> float | None:
    """Round for the status document; a reading that does not exist yet (NaN) is null."""
    return round(value, digits) if math.isfinite(value) else None


class Printer:
    def __init__(self, settings: Settings, clock: Any, heaters: HeaterBank,
                 executor: MotionExecutor, fan: PartFan, hardware: Any = None) -> None:
        self.settings = settings
        # McuHardware when a (real or simulated) Klipper MCU is attached, else None.
        self.hardware = hardware
        self._mcu_fault: str | None = None
        self.clock = clock
        self.heaters = heaters
        self.fan = fan
        self.toolhead = Toolhead(settings.printer, executor, settings.extruder)
        self.interp = GCodeInterpreter(self.toolhead, heaters, fan, clock.now, settings.gcode,
                                       settings.firmware_retraction)
        self.jobs = JobRunner(self.interp, self.toolhead, heaters, fan, settings.printer,
                              settings.pause, settings.control.buffer_time_s,
                              settings.extruder.min_extrude_temp)
        self.console = Console(self.interp, self.toolhead, heaters, settings,
                               emergency=lambda reason: self.shutdown(reason, emergency=True),
                               devices=lambda: self.devices)
        self.error: str | None = None
        self.stopping = False
        # The latest PID tune (running or finished), shown in status until the next one.
        self.autotune: AutotuneSession | None = None
        # Devices on the Pi itself (`PiDevices`), when any are configured.
        self.devices: Any = None
        self.runout_paused = False
        # The status of the last job before a firmware restart replaced this printer.
        self.last_job: dict[str, Any] | None = None
        # Why the Pi's configured devices could not be set up (the printer is shut down).
        self.devices_error: str | None = None

    def attach_devices(self, devices: Any) -> None:
        """Take over the Pi's devices: the chamber heater joins the heater bank (so every
        safety rule and every all-off covers it), e-stop and runout feed `tick`, M80/M81
        switch the PSU relay."""
        self.devices = devices
        if devices.chamber_heater is not None:
            from printhost.config import chamber_heater_settings
            chamber = self.settings.chamber
            self.heaters.add(Heater("chamber", chamber_heater_settings(chamber),
                                    devices.chamber_heater,
                                    check_gain_time_s=chamber.check_gain_time))
        self.interp.power = devices.power

    @classmethod
    def simulated(cls, settings: Settings, clock: Any | None = None) -> "Printer":
        """The printer on thermal models and model steppers, in this process (unit tests).

        The toolhead starts where the model puts it, `simulation.start_position`: here
        the executor is the machine, so belief and fact agree before homing."""
        # Imported here: a printer on a real board never loads the simulation, and the
        # compiled kernels must load after the control process has chosen numba's cache
        # directory.
        from printhost.control.executor import StepFollowingExecutor
        from printhost.sim.clock import SimClock
        from printhost.sim.heaters import build_simulated_heaters
        clock = clock or SimClock(settings.simulation.time_factor)
        heaters, hardware = build_simulated_heaters(settings, clock)
        sx, sy, sz = (float(v) for v in settings.simulation.start_position)
        executor = StepFollowingExecutor(clock, settings, start_position=(sx, sy, sz, 0.0))
        hotend_hw = hardware["extruder"]

        def fan_changed(speed: float) -> None:
            hotend_hw.fan = speed

        return cls(settings, clock, heaters, executor, PartFan(fan_changed))

    @classmethod
    def on_mcu(cls, settings: Settings, hardware: Any) -> "Printer":
        """The printer on a connected and configured MCU (`McuHardware`).

        Before homing the host cannot know where the toolhead is; it believes
        `printer.power_on_position` until G28 replaces the belief with the endstops'."""
        sx, sy, sz = (float(v) for v in settings.printer.power_on_position)
        executor = hardware.executor((sx, sy, sz, 0.0))
        printer = cls(settings, hardware.clock, hardware.heater_bank(), executor,
                      PartFan(hardware.fan.set_speed), hardware)
        hardware.mcu.on_fault = printer._note_mcu_fault
        if hardware.endstops:
            from printhost.control.homing import McuHoming
            printer.toolhead.homing_driver = McuHoming(settings, hardware, printer.toolhead)
        return printer

    def _note_mcu_fault(self, reason: str) -> None:
        # Called from inside mcu.poll(); acted on by tick() right after.
        if self._mcu_fault is None:
            self._mcu_fault = reason

    # ------------------------------------------------------------------ loop
    def tick(self) -> None:
        """One pass of the control loop: heaters, motion, job, then the Pi's outputs
        (which also follow the printer after a fault: a hot hotend keeps its fan)."""
        self._tick()
        if self.devices is not None and not self.stopping:
            self._update_devices()

    def _tick(self) -> None:
        hw = self.hardware
        if hw is not None:
            hw.mcu.poll()
            if self.stopping:
                return  # the MCU's answer to our own stop is not a fault
            if self._mcu_fault is not None and self.error is None:
                # A fault like any other: the job ends `error` with the MCU's reason
                # and never resumes by itself.
                self.shutdown(self._mcu_fault)
            if self.error is not None:
                return
        now = self.clock.now()
        if self.devices is not None:
            self._device_events(now)
            if self.error is not None:
                return
        try:
            self.heaters.update(now)
        except HeaterFault as exc:
            self.shutdown(str(exc))
            return
        if self.autotune is not None and self.autotune.running:
            self.autotune.tick(now)
        self.toolhead.update()
        if hw is not None:
            hw.flush()
        if self.error is None:
            try:
                self.jobs.step(now)
            except EmergencyStop as exc:
                self.shutdown(str(exc), emergency=True)
            except HeaterFault as exc:
                self.shutdown(str(exc))
        if self.error is None and self.console.busy:
            self.console.step()

    def _device_events(self, now: float) -> None:
        """E-stop: shutdown at once. Runout: pause a running print (resume needs a person)."""
        for event in self.devices.take_events():
            if event is DeviceEvent.ESTOP:
                self.shutdown("emergency stop button pressed", emergency=True)
            elif event is DeviceEvent.RUNOUT:
                job = self.jobs.job
                if job is not None and job.state == JobState.PRINTING:
                    log.warning("filament runout: pausing the print")
                    self.jobs.pause(now)
                    self.runout_paused = True
            elif event is DeviceEvent.INSERT:
                log.info("filament inserted")

    def _update_devices(self) -> None:
        hot = self.heaters["extruder"]
        busy = (not self.toolhead.is_idle()) or any(h.target_c > 0.0 for h in self.heaters)
        try:
            self.devices.update(PrinterView(self.state(), hot.temperature_c, hot.target_c, busy))
        except Exception:
            # A fan or LED that cannot be driven must not stop heater control.
            log.exception("updating the Pi's devices failed")

    def shutdown(self, reason: str, job_state: JobState = JobState.ERROR,
                 emergency: bool = False) -> None:
        """Latch an error: heaters off first, then motion and job.

        With an MCU attached it is also told to stop (`emergency_stop`): it switches
        every output to its safe default, drops queued steps and stays shut down until a
        firmware restart, so a fault cannot be undone by anything short of a decision.
        `emergency` (e-stop button, M112) also cuts the printer's power when a PSU
        relay is configured to.
        """
        first = self.error is None
        self._end_autotune(reason)
        self.heaters.all_off()
        if emergency and self.devices is not None:
            self.devices.emergency()
        if first:
            log.error("printer shutdown: %s", reason)
            self.error = reason
        hw = self.hardware
        if hw is not None and first:
            hw.mcu.emergency_stop()
            hw.sender.drop_pending()
        self.console.abort(f"printer shutdown: {reason}", stop_motion=False)
        self.jobs.shutdown(reason, self._safe_now(), job_state)

    def stop(self) -> None:
        """Service stop: heaters off, motion stopped, a running job is interrupted."""
        heating = any(h.target_c > 0.0 or h.duty > 0.0 for h in self.heaters)
        self._end_autotune("printhost was stopped during the PID tune")
        self.heaters.all_off()
        if not self.stopping:
            log.info("stop requested: heaters off, motion stopped")
            hw = self.hardware
            if hw is not None and hw.mcu.connected and (heating or not self.toolhead.is_idle()):
                # Heater changes are scheduled ahead and steps already on the MCU would
                # keep moving the toolhead with nobody watching: stop everything on the
                # MCU at once (it latches; the next start restarts the firmware).
                hw.mcu.emergency_stop(expected=True)
                hw.sender.drop_pending()
        self.console.abort("printhost was stopped", stop_motion=False)
        self.jobs.shutdown("printhost was stopped during the print", self._safe_now(),
                           JobState.INTERRUPTED)
        self.stopping = True

    def _end_autotune(self, reason: str) -> None:
        """Fail a running tune; never lets a broken override keep heaters from going off."""
        if self.autotune is not None and self.autotune.running:
            try:
                self.autotune.abort(reason)
            except Exception:
                log.exception("ending the PID tune failed")

    def _start_autotune(self, req: Request) -> Reply:
        """Refusals: 503 after a fault, 409 while a job or another tune runs."""
        if self.error is not None:
            return Reply(req.id, False, {}, ErrorKind.NOT_READY, f"Printer not ready: {self.error}")
        name = str(req.args.get("heater", ""))
        if name not in self.heaters:
            return Reply(req.id, False, {}, ErrorKind.NOT_FOUND, f"Unknown heater: {name}")
        if self.heaters[name].settings.control != "pid":
            return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                         f"Heater {name} uses {self.heaters[name].settings.control} control; "
                         "PID tuning does not apply")
        if self.jobs.active:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                         "A job is in progress; PID tuning needs an idle printer")
        if self.autotune is not None and self.autotune.running:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT, "A PID tune is already running")
        self.autotune = AutotuneSession(self.heaters[name], req.args.get("target"))
        log.info("PID tune of %s at %.1f C started", name, self.autotune.target_c)
        return Reply(req.id, True, self.autotune.get_status())

    def _set_target(self, req: Request) -> Reply:
        """A heater target from the API (as M104/M140 would set it). The heater validates
        it (finite, 0..max_temp) and refuses to heat while shut down after a fault."""
        name = str(req.args.get("heater", ""))
        if name not in self.heaters:
            return Reply(req.id, False, {}, ErrorKind.NOT_FOUND, f"Unknown heater: {name}")
        target = req.args.get("target")
        if self.error is not None and target:
            return Reply(req.id, False, {}, ErrorKind.NOT_READY, f"Printer not ready: {self.error}")
        if self.autotune is not None and self.autotune.running:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT, "A PID tune is running")
        try:
            self.heaters[name].set_target(target)
        except HeaterFault as exc:
            return Reply(req.id, False, {}, ErrorKind.NOT_READY, f"Printer not ready: {exc}")
        heater = self.heaters[name]
        return Reply(req.id, True, {"heater": name, "target": heater.target_c})

    def _safe_now(self) -> float:
        """The clock, or its last value when the MCU's clock can no longer be read."""
        try:
            self._last_now = self.clock.now()
        except Exception:
            pass
        return getattr(self, "_last_now", 0.0)

    # ------------------------------------------------------------------ commands
    def handle(self, req: Request) -> Reply:
        if req.command == Command.EMERGENCY_STOP:
            # First, and without reading the clock: nothing may stand in its way.
            who = str(req.args.get("by") or "").strip()[:64]
            self.shutdown("emergency stop" + (f" requested by {who}" if who else ""),
                          emergency=True)
            return Reply(req.id, True, {})
        now = self.clock.now()
        try:
            if req.command == Command.PING:
                return Reply(req.id, True, {"pid": os.getpid()})
            if req.command == Command.SHUTDOWN:
                self.stop()
                return Reply(req.id, True, {})
            if req.command == Command.PID_TUNE:
                return self._start_autotune(req)
            if req.command == Command.SET_TARGET:
                return self._set_target(req)
            if req.command == Command.CONSOLE:
                return self._console(req)
            if req.command == Command.PRINT:
                if self.error is not None:
                    return Reply(req.id, False, {}, ErrorKind.NOT_READY,
                                 f"Printer not ready: {self.error}")
                if self.devices is not None and self.devices.filament_present is False:
                    return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                                 "The filament runout sensor reports no filament")
                if self.autotune is not None and self.autotune.running:
                    return Reply(req.id, False, {}, ErrorKind.CONFLICT, "A PID tune is running")
                if self.console.busy:
                    return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                                 "Console commands are running; wait for them to end or "
                                 "cancel them")
                args = req.args
                try:
                    resume = args.get("resume")
                    job = self.jobs.start(str(args["job_id"]), str(args["file"]),
                                          str(args["path"]), now,
                                          resume=resume if isinstance(resume, dict) else None)
                except FileNotFoundError:
                    return Reply(req.id, False, {}, ErrorKind.NOT_FOUND, "File not found")
                return Reply(req.id, True, {"job_id": job.id})
            if req.command == Command.PAUSE:
                self.jobs.pause(now)
            elif req.command == Command.RESUME:
                if self.error is not None:
                    return Reply(req.id, False, {}, ErrorKind.CONFLICT, "Job not paused")
                if self.devices is not None and self.devices.filament_present is False:
                    return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                                 "The filament runout sensor reports no filament; load "
                                 "filament before resuming")
                if self.console.busy:
                    return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                                 "Console commands are still running; resume once they "
                                 "have ended")
                self.jobs.resume(now)
                self.runout_paused = False
            elif req.command == Command.CANCEL:
                if self.autotune is not None and self.autotune.running:
                    self.autotune.cancel()
                    log.info("PID tune cancelled")
                elif self.jobs.active or not self.console.busy:
                    self.jobs.cancel(now)
                    # The job's cancel has stopped the toolhead already.
                    self.console.abort("the job was cancelled", stop_motion=False)
                else:
                    self.console.abort("cancelled")
                    log.info("console commands cancelled")
            return Reply(req.id, True, {})
        except JobConflict as exc:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT, str(exc))
        except (GCodeError, ValueError) as exc:
            return Reply(req.id, False, {}, ErrorKind.INVALID, str(exc))
        except Exception:
            log.exception("command %s failed", req.command.value)
            return Reply(req.id, False, {}, ErrorKind.INTERNAL, "Internal error")

    def _console(self, req: Request) -> Reply:
        """An operator's command (control/console.py): refused (409/400) or queued."""
        args = req.args
        tuning = self.autotune is not None and self.autotune.running
        try:
            record = self.console.submit(
                str(args.get("id") or req.id), str(args.get("kind", "")),
                dict(args.get("args") or {}), printer_state=self.state(), tuning=tuning,
                by=str(args.get("by") or "")[:64])
        except ConsoleConflict as exc:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT, str(exc))
        except ConsoleInvalid as exc:
            return Reply(req.id, False, {}, ErrorKind.INVALID, str(exc))
        return Reply(req.id, True, record)

    def restart_refusal(self) -> str | None:
        """Why a firmware restart must not happen now (409), or None."""
        if self.console.busy:
            return "Console commands are running; wait for them or cancel them"
        if self.jobs.active:
            return "A job is in progress; cancel it before restarting the firmware"
        if self.autotune is not None and self.autotune.running:
            return "A PID tune is running; cancel it before restarting the firmware"
        return None

    # ------------------------------------------------------------------ status
    def state(self) -> str:
        if self.error is not None:
            return "error"
        job = self.jobs.job
        if job is not None:
            if job.state == JobState.PAUSED:
                return "paused"
            if job.state in (JobState.PRINTING, JobState.PAUSING, JobState.CANCELLING):
                return "printing"
        return "idle"

    def _mcu_status(self) -> dict[str, Any]:
        mcu = self.hardware.mcu
        sender = self.hardware.sender
        link = mcu.link.stats()
        return {
            "connected": mcu.connected,
            "shutdown_reason": mcu.shutdown_reason,
            "lost_reason": mcu.lost_reason,
            "firmware": mcu.dictionary.version,
            "clock_freq": mcu.clock_freq,
            "move_count": mcu.move_count,
            "moves_sent": sender.sent_moves,
            "late_moves": sender.late_moves,
            "reserved_move_slots": mcu.reserved_move_slots,
            "step_stream_crc": sender.stream_crc,
            "link": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in link.items()},
        }

    def _chamber_status(self) -> dict[str, Any]:
        """Chamber readings: from the chamber heater when there is one, else the sensor."""
        if "chamber" in self.heaters:
            h = self.heaters["chamber"]
            temp = _num(h.temperature_c, 2)
            target, power = _num(h.target_c, 2), _num(h.duty, 3)
        else:
            temp = target = power = None
        humidity = None
        sensor = self.devices.chamber_sensor if self.devices is not None else None
        if sensor is not None:
            # The sensor's own latest reading: after a sensor fault the heater's last
            # value would be stale, and a stale temperature must not look live.
            fresh = sensor.fresh()
            temp = round(fresh.temp_c, 2) if fresh is not None else None
            if fresh is not None and fresh.humidity_pct is not None:
                humidity = round(fresh.humidity_pct, 1)
        return {"chamber_temp": temp, "target_chamber_temp": target, "chamber_power": power,
                "chamber_humidity": humidity}

    def _mcu_unavailable(self) -> str | None:
        """Why the MCU's readings and the motors' position cannot be current, or None."""
        if self.hardware is None:
            return None
        from printhost.control.mcu_hardware import mcu_unavailable
        return mcu_unavailable(self.hardware.mcu)

    def get_status(self) -> dict[str, Any]:
        now = self._safe_now()
        pos = self.toolhead.commanded_position
        hot = self.heaters["extruder"]
        bed = self.heaters["heater_bed"]
        st = self.interp.state
        heaters = self.heaters.get_status()
        # Live values are null, with the reason, when their source is gone or stale:
        # a reading from before an MCU shutdown must never look current.
        unavailable: dict[str, str] = {}
        for member, name in (("hotend_temp", "extruder"), ("bed_temp", "heater_bed")):
            reason = heaters[name]["unavailable"]
            if reason is not None:
                unavailable[member] = reason
        mcu_gone = self._mcu_unavailable()
        if mcu_gone is not None:
            # Steps already sent may or may not have run: where the motors are is unknown.
            unavailable["live_position"] = mcu_gone
            live_position = None
        else:
            live = self.toolhead.live_position()
            live_position = [round(live[0], 4), round(live[1], 4), round(live[2], 4)]
        job = self.jobs.get_status(now)
        return {
            "state": self.state(),
            "job": job if job is not None else self.last_job,
            "printer": {
                "position": [round(pos[0], 4), round(pos[1], 4), round(pos[2], 4)],
                "live_position": live_position,
                "extruder_position": round(pos[3], 4),
                "hotend_temp": heaters["extruder"]["temperature"],
                "target_hotend_temp": _num(hot.target_c, 2),
                "hotend_power": _num(hot.duty, 3),
                "bed_temp": heaters["heater_bed"]["temperature"],
                "target_bed_temp": _num(bed.target_c, 2),
                "bed_power": _num(bed.duty, 3),
                "heaters": heaters,
                "unavailable": unavailable,
                "fan_speed": round(self.fan.speed, 3),
                "speed_factor": st.speed_factor,
                "extrude_factor": st.extrude_factor,
                "homed_axes": self.toolhead.homed_axes,
                "print_time": round(now, 3),
                "autotune": self.autotune.get_status() if self.autotune is not None else None,
                **self._chamber_status(),
                "paused_by_runout": self.runout_paused,
                "console": self.console.get_status(),
                "devices": self.devices.get_status() if self.devices is not None else None,
                **({"mcu": self._mcu_status()} if self.hardware is not None else {}),
            },
            "error": self.error,
        }
