"""The API's record of printer commands (api/commands.py): results taken from the
status in order and once, a restarted control process noticed, the log read back at
start with unfinished commands failed, and the file rotated."""

from __future__ import annotations

import json

from printhost.api import commands as commands_mod
from printhost.api.commands import CommandLog


def doc(seq: int, results: list[dict], current: str | None = None) -> dict:
    return {"printer": {"console": {"busy": current is not None, "current": current,
                                    "queued": 1 if current else 0, "seq": seq,
                                    "results": results}}}


def result(seq: int, cid: str, state: str = "completed", responses=()) -> dict:
    return {"seq": seq, "id": cid, "kind": "gcode", "state": state, "message": "done",
            "responses": list(responses)}


def add(log: CommandLog, cid: str, state: str = "acknowledged") -> dict:
    record = {"id": cid, "kind": "gcode", "args": {}, "user": "op", "state": state,
              "message": None, "responses": [], "created_at": "t", "updated_at": "t"}
    log._keep(record)
    return record


def test_results_are_taken_once_in_order_with_their_responses(tmp_path):
    events: list[dict] = []
    log = CommandLog(None, tmp_path, events.append)
    add(log, "a")
    add(log, "b")
    log.observe(doc(0, [], current="a"))
    assert log.get("a")["state"] == "running"
    log.observe(doc(2, [result(1, "a", responses=["X:1"]), result(2, "b", "failed")]))
    log.observe(doc(2, [result(1, "a", responses=["X:1"]), result(2, "b", "failed")]))
    assert log.get("a")["state"] == "completed" and log.get("a")["responses"] == ["X:1"]
    assert log.get("b")["state"] == "failed"
    kinds = [(e["event"], e["data"].get("id") or e["data"].get("response")) for e in events]
    assert kinds == [("command", "a"), ("gcode_response", "X:1"), ("command", "a"),
                     ("command", "b")]


def test_a_restarted_control_process_fails_what_the_old_one_had(tmp_path):
    log = CommandLog(None, tmp_path)
    add(log, "a")
    log.observe(doc(5, [result(5, "x")], current="a"))
    log.observe(doc(0, []))                   # a new control process counts from 0
    assert log.get("a")["state"] == "failed"
    assert "control process restarted" in log.get("a")["message"]


def test_the_log_is_read_back_and_unfinished_commands_fail(tmp_path):
    log = CommandLog(None, tmp_path)
    done = add(log, "done", "completed")
    log._append(done)
    log._append(add(log, "open", "acknowledged"))
    with open(tmp_path / commands_mod.LOG_NAME, "ab") as fh:
        fh.write(b'{"id": "cut-by-a-cra')   # a line a crash cut short
    again = CommandLog(None, tmp_path)
    assert again.get("done")["state"] == "completed"
    assert again.get("open")["state"] == "failed"
    assert "restarted" in again.get("open")["message"]
    lines = (tmp_path / commands_mod.LOG_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["id"] == "open" and json.loads(lines[-1])["state"] == "failed"
    assert [r["id"] for r in again.list()] == ["open", "done"]
    assert [r["id"] for r in again.list(state="completed")] == ["done"]


def test_the_file_is_rotated_and_memory_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(commands_mod, "MAX_LOG_BYTES", 2000)
    monkeypatch.setattr(commands_mod, "KEEP", 10)
    log = CommandLog(None, tmp_path)
    for n in range(40):
        log._append(add(log, f"c{n}", "completed"))
    assert (tmp_path / (commands_mod.LOG_NAME + ".1")).exists()
    assert (tmp_path / commands_mod.LOG_NAME).stat().st_size <= 2000 + 300
    assert len(log.list(limit=500)) == 10 and log.list()[0]["id"] == "c39"
