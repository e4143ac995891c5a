"""The simulated Raspberry Pi side: mock GPIO pins, an I2C bus with the chamber sensor,
a chamber that warms when its heater relay is on, and a control socket.

The devices under test are the real ones (`printhost.hw`): gpiozero drives
`MockFactory` pins instead of lgpio, and the chamber sensor's driver talks to the
simulated chips of `printhost.sim.i2c` byte for byte, in real time (an AHT10
measurement takes its 80 ms). A background thread advances the chamber's thermal
model from the heater pin's level every 50 ms and serves the control socket, through
which tests and people press the e-stop, pull the filament and break the I2C bus of
a running service (docs/devices.md lists the commands).

The socket is a Linux abstract-namespace socket whose name is written to
`<state_dir>/sim-pi/control`, as for the simulated MCU.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import threading
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from printhost.config import Settings
from printhost.sensors.adc import AdcTemperatureSensor
from printhost.sensors.thermistor import sensor as make_sensor
from printhost.sim.clock import SimClock
from printhost.sim.control_socket import ControlServer, request
from printhost.sim.i2c import SimADS1115, SimAHT10, SimI2CBus
from printhost.sim.thermal import ThermalModel

log = logging.getLogger(__name__)

TICK_S = 0.05


class WiredMockPin(MockPWMPin):
    """A mock pin with something wired to it: while `held` is set, that level wins over
    the pull resistor (gpiozero's mock pin otherwise jumps to its pull whenever a device
    claims it, as if nothing were connected)."""

    held: bool | None = None

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if self.held is not None and self._function == "input":
            (self.drive_high if self.held else self.drive_low)()


def _pin_number(name: str) -> int:
    if not (isinstance(name, str) and name.startswith("GPIO") and name[4:].isdigit()):
        raise ValueError(f"pin must be a name like GPIO22, got {name!r}")
    return int(name[4:])


class SimPi:
    """Mock pins, the simulated I2C bus and chamber, and their control socket."""

    def __init__(self, settings: Settings, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.factory = MockFactory(pin_class=WiredMockPin)
        self.bus = SimI2CBus(clock=time.monotonic, sleep=time.sleep)
        sim, c = settings.simulation, settings.chamber
        self.clock = SimClock(sim.time_factor)
        self.chamber = ThermalModel(sim.chamber, sim.ambient_c)
        self._model_lock = threading.Lock()
        self._last_s = self.clock.now()
        self.aht: SimAHT10 | None = None
        self.ads: SimADS1115 | None = None
        if c.sensor in ("aht10", "aht20"):
            self.aht = self.bus.attach(SimAHT10(c.sensor, c.i2c_address or 0x38))
            self.aht.humidity_pct = sim.chamber_humidity_pct
            self.aht.temperature_source = lambda _now: self.chamber_sensor_c()
        elif c.sensor == "ads1115":
            self.ads = self.bus.attach(SimADS1115(c.i2c_address or 0x48))
            divider = AdcTemperatureSensor(make_sensor(c.sensor_type), c.pullup_resistor)
            self.ads.set_input(c.adc_channel,
                               lambda _now: c.reference_v * divider.fraction(self.chamber_sensor_c()))
        # The switches start as on a printer that is ready: e-stop released, filament in.
        if settings.devices.estop.pin:
            self.press_estop(False)
        if settings.devices.runout.pin:
            self.set_filament(True)
        self._stop = threading.Event()
        self._server: ControlServer | None = None
        self.control_name: str | None = None
        if state_dir is not None:
            self._open_socket(Path(state_dir) / "sim-pi")
        self._thread = threading.Thread(target=self._run, name="sim-pi", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ chamber
    def _heater_on(self) -> bool:
        pin_name = self.settings.chamber.heater_pin
        if not pin_name:
            return False
        level = bool(self.factory.pin(_pin_number(pin_name)).state)
        return level == self.settings.chamber.heater_active_high

    def advance(self) -> None:
        """Bring the chamber model up to now with the heater as the pin says."""
        with self._model_lock:
            now = self.clock.now()
            dt = now - self._last_s
            if dt > 0.0:
                self.chamber.step(dt, 1.0 if self._heater_on() else 0.0)
                self._last_s = now

    def chamber_sensor_c(self) -> float:
        self.advance()
        with self._model_lock:
            return self.chamber.sensor_c

    # ------------------------------------------------------------------ inputs
    def drive(self, pin_name: str, level: int) -> None:
        """Hold an input at `level` (as a switch wired to it would)."""
        pin = self.factory.pin(_pin_number(pin_name))
        pin.held = bool(level)
        if pin.function == "input":
            (pin.drive_high if level else pin.drive_low)()

    def press_estop(self, pressed: bool) -> None:
        e = self.settings.devices.estop
        if not e.pin:
            raise ValueError("no e-stop configured")
        closed = pressed != e.normally_closed
        # A closed contact pulls the pin away from its pull resistor.
        self.drive(e.pin, 0 if closed == e.pull_up else 1)

    def set_filament(self, present: bool) -> None:
        r = self.settings.devices.runout
        if not r.pin:
            raise ValueError("no runout switch configured")
        closed = present == r.present_when_closed
        self.drive(r.pin, 0 if closed == r.pull_up else 1)

    def outputs(self) -> dict[str, float]:
        """Level of every configured output pin (PWM pins as their duty)."""
        d, c = self.settings.devices, self.settings.chamber
        names = {"psu": d.psu.pin, "status_led": d.status_led.pin,
                 "hotend_fan": d.hotend_fan.pin, "controller_fan": d.controller_fan.pin,
                 "light": d.light.pin, "chamber_heater": c.heater_pin}
        return {key: float(self.factory.pin(_pin_number(pin)).state)
                for key, pin in names.items() if pin}

    # ------------------------------------------------------------------ socket
    def _open_socket(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._server = ControlServer(f"printhost-sim-pi-{os.getpid()}-{secrets.token_hex(4)}")
        self.control_name = self._server.name
        tmp = directory / "control.tmp"
        tmp.write_text(self.control_name + "\n")
        os.replace(tmp, directory / "control")

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request; see docs/devices.md for the commands."""
        cmd = request.get("cmd")
        if cmd == "state":
            self.advance()
            with self._model_lock:
                chamber = {"air_c": self.chamber.block_c, "sensor_c": self.chamber.sensor_c}
            transfers = self.bus.transfer_log()
            return {"ok": True, "outputs": self.outputs(), "chamber": chamber,
                    "i2c": {"logged": len(transfers),
                            "failed": sum(1 for t in transfers if t.error is not None)}}
        if cmd == "estop":
            self.press_estop(bool(request.get("pressed", True)))
            return {"ok": True}
        if cmd == "filament":
            self.set_filament(bool(request.get("present", True)))
            return {"ok": True}
        if cmd == "drive":
            self.drive(str(request.get("pin")), int(request.get("level", 0)))
            return {"ok": True}
        if cmd == "i2c_fault":
            address = request.get("address")
            self.bus.inject_fault(str(request.get("kind")),
                                  address=int(address) if address is not None else None,
                                  count=request.get("count"))
            return {"ok": True}
        if cmd == "i2c_clear":
            self.bus.clear_faults()
            return {"ok": True}
        if cmd == "chamber":
            with self._model_lock:
                if "sensor_override_c" in request:
                    value = request["sensor_override_c"]
                    self.chamber.sensor_override_c = None if value is None else float(value)
                if "heater_broken" in request:
                    self.chamber.heater_broken = bool(request["heater_broken"])
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.advance()
            if self._server is None:
                self._stop.wait(TICK_S)
                continue
            readable, _, _ = select.select(self._server.fds(), [], [], TICK_S)
            self._server.service(readable, self.handle)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self._server is not None:
            self._server.close()
        self.factory.close()


class SimPiClient:
    """Talk to the simulated Pi of a running service (tests and diagnostics)."""

    def __init__(self, state_dir: Path | str, timeout_s: float = 5.0) -> None:
        self.path = Path(state_dir) / "sim-pi" / "control"
        self.timeout_s = timeout_s

    def request(self, **payload: Any) -> dict[str, Any]:
        return request(self.path, payload, self.timeout_s, "simulated Pi")

    def state(self) -> dict[str, Any]:
        return self.request(cmd="state")
