"""A heater's MCU side (`McuHeaterHardware`) against the simulated firmware on a pty:
what it sends, and when it keeps the line quiet."""

from __future__ import annotations

import time

from printhost.config.loader import parse_settings
from printhost.control.mcu_hardware import McuHeaterHardware
from printhost.mcu.mcu import Mcu
from tests.unit.test_mcu_host import Board


def _count_heater_updates(mcu: Mcu, oid: int) -> list[int]:
    """Count the heater's updates as they pass to the real `Mcu.send` (a spy: each call
    goes through unchanged)."""
    count = [0]
    send = mcu.send

    def spy(name: str, *args, **kwargs):
        if name == "queue_digital_out" and kwargs.get("oid") == oid:
            count[0] += 1
        return send(name, *args, **kwargs)

    mcu.send = spy
    return count


def _next_reading(mcu: Mcu, hw: McuHeaterHardware, timeout_s: float = 5.0) -> None:
    seq = hw.reading_seq
    end = time.monotonic() + timeout_s
    while hw.reading_seq == seq:
        assert time.monotonic() < end, "no ADC report"
        mcu.poll()
        time.sleep(0.005)


def test_an_off_heater_sends_nothing_and_an_on_one_each_reading():
    """Off is the pin's default and max_duration does not limit it, so a heater that is
    off and stays off sends no updates (an idle printer keeps the line quiet, as
    Klipper's does); switching off is sent at once, and a heater that is on sends its
    value with each new reading."""
    settings = parse_settings({})
    board = Board()
    mcu = Mcu(board.path)
    hw = McuHeaterHardware(mcu, "extruder", settings.heaters.extruder)
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        _next_reading(mcu, hw)
        sent = _count_heater_updates(mcu, hw.output.oid)
        before = 0
        for _ in range(3):                      # three readings, heater off throughout
            hw.set_duty(0.0)
            _next_reading(mcu, hw)
            hw.set_duty(0.0)
        assert sent[0] == before
        hw.set_duty(0.5)                        # on: sent with this reading
        assert sent[0] == before + 1
        hw.set_duty(0.5)                        # same reading: nothing new
        assert sent[0] == before + 1
        _next_reading(mcu, hw)
        hw.set_duty(0.4)                        # next reading: sent
        assert sent[0] == before + 2
        hw.set_duty(0.0)                        # off: at once, same reading or not
        assert sent[0] == before + 3
        _next_reading(mcu, hw)
        hw.set_duty(0.0)                        # and then quiet again
        assert sent[0] == before + 3
    finally:
        mcu.close()
        board.close()
