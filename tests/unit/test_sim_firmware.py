"""The simulated MCU's basic commands: identify, configuration, clocks, shutdown."""

from __future__ import annotations

import pytest

from printhost.mcu.dictionary import DataDictionary
from printhost.mcu.sim_dictionary import SIM_CLOCK_FREQ, sim_dictionary
from tests.unit.test_sim_fw_support import MS, Harness


def download_dictionary(h: Harness, chunk: int = 40) -> bytes:
    data = b""
    while True:
        h.cmd(f"identify offset={len(data)} count={chunk}", 0)
        ((_, reply, _),) = h.take("identify_response")
        assert reply["offset"] == len(data)
        if not reply["data"]:
            return data
        data += reply["data"]


def test_identify_serves_a_dictionary_the_host_can_load() -> None:
    h = Harness()
    data = download_dictionary(h)
    loaded = DataDictionary(data)
    assert loaded.raw == sim_dictionary()
    assert loaded.constant_int("CLOCK_FREQ") == SIM_CLOCK_FREQ
    assert loaded.lookup("queue_step").format == "queue_step oid=%c interval=%u count=%hu add=%hi"


def test_identify_of_a_custom_dictionary_and_oversized_requests() -> None:
    custom = sim_dictionary()
    custom["version"] = "custom-build"
    h = Harness(dictionary=custom)
    assert DataDictionary(download_dictionary(h, chunk=50)).version == "custom-build"
    # A reply that would not fit in one block is never sent (the firmware drops it).
    h.cmd("identify offset=0 count=60", 0)
    assert h.take("identify_response") == []


def test_config_handshake_and_crc() -> None:
    h = Harness(move_count=321)
    h.cmd("get_config", 0)
    assert h.last("config") == {"is_config": 0, "crc": 0, "is_shutdown": 0, "move_count": 0}
    h.configure("config_trsync oid=0", oids=3)
    h.cmd("get_config", 10)
    assert h.last("config") == {"is_config": 1, "crc": 1, "is_shutdown": 0, "move_count": 321}
    snap = h.fw.snapshot(10)
    assert snap["is_config"] and snap["config_crc"] == 1 and snap["move_count"] == 321


@pytest.mark.parametrize("lines, reason", [
    (["allocate_oids count=2", "allocate_oids count=2"], "oids already allocated"),
    (["config_trsync oid=0"], "Can't assign oid"),  # before allocate_oids
    (["allocate_oids count=2", "config_trsync oid=2"], "Can't assign oid"),
    (["allocate_oids count=2", "config_trsync oid=1", "config_trsync oid=1"],
     "Can't assign oid"),
    (["allocate_oids count=2", "finalize_config crc=5", "config_trsync oid=0"],
     "Can't assign oid"),
    (["allocate_oids count=2", "finalize_config crc=5", "finalize_config crc=5"],
     "Already finalized"),
    (["allocate_oids count=2", "config_trsync oid=0", "queue_step oid=0 interval=1 count=1 add=0"],
     "Invalid oid type"),
    (["allocate_oids count=2", "endstop_query_state oid=1"], "Invalid oid type"),
])
def test_configuration_errors_shut_down(lines: list[str], reason: str) -> None:
    h = Harness()
    for line in lines:
        h.cmd(line, 100)
    assert h.fw.is_shutdown and h.fw.shutdown_reason == reason
    (( _, params, _),) = h.take("shutdown")
    assert params == {"clock": 100, "static_string_id": reason}


def test_clock_and_uptime_carry_the_32_bit_wrap() -> None:
    h = Harness()
    clock = 3 * (1 << 32) + 12345  # about three minutes at 72 MHz
    h.cmd("get_clock", clock)
    h.cmd("get_uptime", clock)
    assert h.last("clock") == {"clock": 12345}
    assert h.last("uptime") == {"high": 3, "clock": 12345}


def test_shutdown_answers_only_what_the_firmware_allows() -> None:
    h = Harness()
    h.configure("config_digital_out oid=0 pin=PB1 value=1 default_value=0 max_duration=0")
    h.cmd("emergency_stop", 5000)
    assert h.last("shutdown") == {"clock": 5000, "static_string_id": "Command request"}
    assert h.board.outputs_of("PB1")[-1] == (0.0, 5000)  # back to its default
    h.take()
    h.cmd("update_digital_out oid=0 value=1", 6000)
    h.cmd("get_config", 6000)
    h.cmd("get_clock", 6000)
    h.cmd("debug_ping data=0102", 6000)
    names = [n for n, _, _ in h.take()]
    assert names == ["is_shutdown", "config", "clock", "pong"]
    assert h.board.outputs_of("PB1")[-1] == (0.0, 5000)  # the update was refused
    # A second shutdown reports again but keeps the first reason.
    h.cmd("emergency_stop", 7000)
    assert h.last("shutdown") == {"clock": 7000, "static_string_id": "Command request"}
    h.cmd("clear_shutdown", 8000)
    assert not h.fw.is_shutdown and h.fw.shutdown_reason is None
    h.cmd("update_digital_out oid=0 value=1", 9000)
    assert h.board.outputs_of("PB1")[-1] == (1.0, 9000)
    h.cmd("get_config", 9000)
    assert h.last("config")["is_shutdown"] == 0


def test_force_shutdown_from_outside() -> None:
    h = Harness()
    h.configure("config_digital_out oid=0 pin=PB1 value=1 default_value=0 max_duration=0")
    h.fw.advance(1234)
    h.fw.force_shutdown("Timer too close")
    assert h.last("shutdown") == {"clock": 1234, "static_string_id": "Timer too close"}
    assert h.board.outputs_of("PB1")[-1] == (0.0, 1234)


def test_is_shutdown_reply_and_clear_when_not_shut_down() -> None:
    h = Harness()
    h.cmd("clear_shutdown", 10)
    assert h.fw.shutdown_reason == "Shutdown cleared when not shutdown"
    h.cmd("allocate_oids count=1", 20)
    assert h.last("is_shutdown") == {"static_string_id": "Shutdown cleared when not shutdown"}
    h.cmd("get_config", 30)
    assert h.last("config")["is_shutdown"] == 1


def test_unknown_command_and_malformed_parameters() -> None:
    h = Harness()
    h.fw.handle("no_such_command", {}, 5)
    assert h.fw.shutdown_reason == "Invalid command"
    h = Harness()
    h.fw.handle("queue_step", {"oid": 0}, 5)
    assert h.fw.shutdown_reason == "Command parser error"
    h = Harness()
    h.fw.handle("allocate_oids", {"count": 2}, 5)
    h.fw.handle("config_digital_out", {"oid": 0, "pin": 999, "value": 0, "default_value": 0,
                                       "max_duration": 0}, 5)
    assert h.fw.shutdown_reason == "Not an output pin"
    # The reason travels as its dictionary entry, so the host shows the same text.
    assert h.last("shutdown")["static_string_id"] == "Not an output pin"


def test_pins_may_arrive_as_numbers_or_names() -> None:
    h = Harness()
    h.fw.handle("set_digital_out", {"pin": 16 + 3, "value": 1}, 5)
    h.fw.handle("set_digital_out", {"pin": "PC2", "value": 1}, 6)
    assert h.board.output_log == [("PB3", 1.0, 5), ("PC2", 1.0, 6)]
    assert h.fw.snapshot(6)["outputs"] == {"PB3": 1.0, "PC2": 1.0}


def test_reset_returns_to_power_on_and_announces_it() -> None:
    calls = []
    h = Harness(on_reboot=lambda: calls.append(h.fw.now))
    h.configure("config_digital_out oid=0 pin=PB1 value=1 default_value=0 max_duration=0")
    h.cmd("emergency_stop", 100)
    h.take()
    h.cmd("update_digital_out oid=0 value=1", 150)  # refused: shut down
    h.cmd("clear_shutdown", 160)
    h.cmd("update_digital_out oid=0 value=1", 170)
    h.take()
    h.cmd("reset", 200)
    assert calls == [200]
    assert h.board.outputs_of("PB1")[-1] == (0.0, 200)  # released by the reboot
    assert h.fw.snapshot(200)["outputs"] == {}
    assert [n for n, _, _ in h.take()] == ["starting"]
    assert not h.fw.is_shutdown
    h.cmd("get_config", 300)
    assert h.last("config") == {"is_config": 0, "crc": 0, "is_shutdown": 0, "move_count": 0}
    h.cmd("allocate_oids count=4", 400)  # allowed again after the reboot
    assert not h.fw.is_shutdown


def test_debug_memory_round_trip() -> None:
    h = Harness()
    h.cmd("debug_write order=2 addr=4096 val=305419896", 1)
    h.cmd("debug_read order=0 addr=4096", 2)
    h.cmd("debug_read order=1 addr=4098", 3)
    h.cmd("debug_read order=2 addr=4096", 4)
    assert [p["val"] for _, p, _ in h.take("debug_result")] == [0x78, 0x1234, 0x12345678]
    h.cmd("debug_nop", 5)
    assert h.take() == []


def test_stats_are_reported_every_five_seconds() -> None:
    h = Harness(stats=True)
    h.cmd("get_clock", 1)
    h.fw.advance(11 * 1000 * MS)
    stats = h.take("stats")
    assert [clock for _, _, clock in stats] == [5000 * MS, 10000 * MS]
    assert all(p["count"] >= 1 and p["sum"] > 0 for _, p, _ in stats)
    assert h.fw.next_event_clock() == 15000 * MS
