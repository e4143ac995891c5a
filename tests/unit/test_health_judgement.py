"""How health judges each component from a status snapshot, the store and the disk."""

from __future__ import annotations

from printhost.api.health import disk_part, heaters_part, mcu_part, store_part
from printhost.store.db import Store


def _snapshot(mcu: dict | None = None, heaters: dict | None = None) -> dict:
    heater = {"temperature": 21.0, "target": 0.0, "power": 0.0, "fault": None,
              "unavailable": None}
    printer = {"heaters": heaters or {"extruder": dict(heater), "heater_bed": dict(heater)}}
    if mcu is not None:
        printer["mcu"] = {"connected": True, "shutdown_reason": None, "lost_reason": None,
                          **mcu}
    return {"state": "idle", "printer": printer, "error": None}


def test_mcu_part():
    assert mcu_part(_snapshot({}), None) == {"status": "ok", "reason": None}
    down = mcu_part(_snapshot({"connected": False, "shutdown_reason": "Timer too close"}), None)
    assert down == {"status": "down", "reason": "MCU shutdown: Timer too close"}
    # A lost link is what happened, even when the board then obeyed our stop.
    lost = mcu_part(_snapshot({"connected": False, "shutdown_reason": "Command request",
                               "lost_reason": "lost communication with mcu"}), None)
    assert lost == {"status": "down", "reason": "lost communication with mcu"}
    offline = {"state": "error", "printer": None, "error": "mcu: cannot open /dev/ttyACM0"}
    assert mcu_part(offline, None) == {"status": "down",
                                       "reason": "mcu: cannot open /dev/ttyACM0"}
    assert mcu_part(_snapshot({}), "control process exited")["reason"] == \
        "unknown: control process exited"


def test_heaters_part_faults_and_stale_readings():
    ok_mcu = {"status": "ok", "reason": None}
    assert heaters_part(_snapshot({}), None, ok_mcu) == {"status": "ok", "reason": None}
    snap = _snapshot({})
    snap["printer"]["heaters"]["extruder"].update(temperature=None,
                                                  unavailable="no reading for 1.4 s")
    # A late reading on a running MCU is worth a look; without the MCU it is down.
    assert heaters_part(snap, None, ok_mcu) == {"status": "degraded",
                                                "reason": "extruder: no reading for 1.4 s"}
    assert heaters_part(snap, None, {"status": "down", "reason": "x"})["status"] == "down"
    snap["printer"]["heaters"]["heater_bed"]["fault"] = "temperature 131.0 C is above max_temp"
    assert heaters_part(snap, None, ok_mcu) == {
        "status": "down", "reason": "heater_bed: temperature 131.0 C is above max_temp"}


def test_disk_part(tmp_path):
    assert disk_part(tmp_path, 0) == {"status": "ok", "reason": None}
    low = disk_part(tmp_path, 1024 * 1024 * 1024)
    assert low["status"] == "degraded" and low["reason"].endswith("below 1073741824 MiB")
    gone = disk_part(tmp_path / "missing", 0)
    assert gone["status"] == "down" and gone["reason"].startswith("free space unknown")


def test_store_part(tmp_path):
    store = Store(tmp_path / "state")
    assert store_part(store) == {"status": "ok", "reason": None}
    store.path.write_text("{ not json")
    broken = store_part(store)
    assert broken["status"] == "down" and broken["reason"].startswith("the store cannot be read")
    assert str(tmp_path) not in broken["reason"]
