"""Job history kept in the store: start records, status copies, interruption, listing."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from printhost.store import jobs as jobs_module
from printhost.store.db import Store
from printhost.store.jobs import FINAL_STATES, JobHistory

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def history(state_dir) -> JobHistory:
    return JobHistory(Store(state_dir))


@pytest.fixture
def ticking_clock(monkeypatch):
    """Make `_now` return strictly increasing timestamps, one second apart."""
    start = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    ticks = iter(range(10_000))

    def now() -> str:
        return (start + timedelta(seconds=next(ticks))).strftime("%Y-%m-%dT%H:%M:%SZ")

    monkeypatch.setattr(jobs_module, "_now", now)


def snapshot(job_id: str, **fields) -> dict:
    """A job as the control process publishes it in status."""
    base = {"id": job_id, "file": "cube.gcode", "state": "printing", "progress": 0.0,
            "started_at": "2024-05-01T12:00:00Z", "ended_at": None, "print_duration": 0.0,
            "total_duration": 0.0, "estimated_remaining": None, "filament_used_mm": 0.0,
            "line": 0, "error": None}
    base.update(fields)
    return base


def test_empty_history(history):
    assert history.list() == []
    assert history.get("nope") is None
    assert history.mark_unfinished_interrupted("why") == 0


def test_record_start_creates_a_printing_record(history):
    history.record_start("j1", "cube.gcode", "alice")
    rec = history.get("j1")
    assert rec["id"] == "j1" and rec["file"] == "cube.gcode" and rec["user"] == "alice"
    assert rec["state"] == "printing"
    assert rec["progress"] == 0.0 and rec["error"] is None
    assert ISO_Z.fullmatch(rec["created_at"])


def test_update_copies_the_status_fields(history):
    history.record_start("j1", "cube.gcode", "alice")
    history.update(snapshot("j1", progress=0.5, line=120, filament_used_mm=33.3,
                            print_duration=61.0, total_duration=70.5))
    rec = history.get("j1")
    assert rec["progress"] == 0.5 and rec["line"] == 120
    assert rec["filament_used_mm"] == 33.3
    assert rec["print_duration"] == 61.0 and rec["total_duration"] == 70.5
    assert rec["started_at"] == "2024-05-01T12:00:00Z"
    # what the start record knew and status does not carry survives
    assert rec["user"] == "alice" and rec["file"] == "cube.gcode"
    # a value that is only an estimate of the moment is not stored
    assert "estimated_remaining" not in rec


def test_update_changes_only_the_keys_present(history):
    history.record_start("j1", "cube.gcode", "alice")
    history.update(snapshot("j1", progress=0.4, line=50))
    history.update({"id": "j1", "state": "paused"})
    rec = history.get("j1")
    assert rec["state"] == "paused"
    assert rec["progress"] == 0.4 and rec["line"] == 50


def test_update_to_a_final_state(history):
    history.record_start("j1", "cube.gcode", "alice")
    history.update(snapshot("j1", state="error", progress=0.3, error="heater fault",
                            ended_at="2024-05-01T12:10:00Z"))
    rec = history.get("j1")
    assert rec["state"] == "error" and rec["error"] == "heater fault"
    assert rec["ended_at"] == "2024-05-01T12:10:00Z"


def test_update_of_an_unknown_job_inserts_it(history):
    history.update(snapshot("j9", file="other.gcode", progress=0.2))
    rec = history.get("j9")
    assert rec["file"] == "other.gcode" and rec["progress"] == 0.2
    assert rec["state"] == "printing"
    assert ISO_Z.fullmatch(rec["created_at"])
    history.update(snapshot("j9", progress=0.6))
    assert [r["id"] for r in history.list()] == ["j9"]  # updated, not inserted twice
    assert history.get("j9")["progress"] == 0.6


def test_update_touches_only_its_own_job(history):
    history.record_start("a", "a.gcode", "u")
    history.update(snapshot("a", state="completed", progress=1.0))
    history.record_start("b", "b.gcode", "u")
    history.update(snapshot("b", progress=0.25))
    assert history.get("a")["state"] == "completed" and history.get("a")["progress"] == 1.0
    assert history.get("b")["state"] == "printing" and history.get("b")["progress"] == 0.25


def test_mark_unfinished_interrupted_only_touches_active_jobs(history, ticking_clock):
    states = ["printing", "pausing", "paused", "cancelling",
              "completed", "cancelled", "error", "interrupted"]
    for s in states:
        history.record_start(s, f"{s}.gcode", "u")
        history.update({"id": s, "state": s, "error": None if s != "error" else "fault",
                        "ended_at": "2024-01-01T00:00:00Z" if s in FINAL_STATES else None})
    count = history.mark_unfinished_interrupted("printhost stopped during the print")
    assert count == 4
    for s in states:
        rec = history.get(s)
        if s in FINAL_STATES:
            assert rec["state"] == s
            assert rec["ended_at"] == "2024-01-01T00:00:00Z"
            assert rec["error"] == ("fault" if s == "error" else None)
        else:
            assert rec["state"] == "interrupted"
            assert rec["error"] == "printhost stopped during the print"
            assert ISO_Z.fullmatch(rec["ended_at"])
    # running it again finds nothing left to do
    assert history.mark_unfinished_interrupted("again") == 0
    assert history.get("printing")["error"] == "printhost stopped during the print"


def test_final_states_complement_the_control_process_active_states():
    # The history's notion of "finished" must agree with the control process and the
    # API schema, or a job could be left "printing" forever after a restart.
    from printhost.api.schemas import JOB
    from printhost.control.job import ACTIVE_STATES, JobState
    every = {s.value for s in JobState}
    assert FINAL_STATES == every - {s.value for s in ACTIVE_STATES}
    assert set(JOB.fields["state"].enum) == every


def test_list_is_newest_first_and_limited(history, ticking_clock):
    for i in range(5):
        history.record_start(f"j{i}", f"f{i}.gcode", "u")
    assert [r["id"] for r in history.list()] == ["j4", "j3", "j2", "j1", "j0"]
    assert [r["id"] for r in history.list(limit=2)] == ["j4", "j3"]
    assert history.list(limit=0) == []


def test_list_returns_copies(history):
    history.record_start("j1", "cube.gcode", "alice")
    history.list()[0]["state"] = "tampered"
    history.get("j1")["file"] = "tampered"
    rec = history.get("j1")
    assert rec["state"] == "printing" and rec["file"] == "cube.gcode"


def test_history_survives_a_restart(state_dir):
    first = JobHistory(Store(state_dir))
    first.record_start("j1", "cube.gcode", "alice")
    first.update(snapshot("j1", progress=0.7))
    # a new process: new Store and JobHistory over the same directory
    second = JobHistory(Store(state_dir))
    assert second.mark_unfinished_interrupted("restarted") == 1
    rec = second.get("j1")
    assert rec["state"] == "interrupted" and rec["progress"] == 0.7 and rec["user"] == "alice"
    assert JobHistory(Store(state_dir)).get("j1") == rec


def test_jobs_live_beside_users_without_disturbing_them(state_dir):
    from printhost.store.users import add_user, list_users
    store = Store(state_dir)
    add_user(store, "alice", "operator", "long enough pw")
    history = JobHistory(store)
    history.record_start("j1", "cube.gcode", "alice")
    history.mark_unfinished_interrupted("x")
    assert [u["username"] for u in list_users(store)] == ["alice"]
    assert [r["id"] for r in history.list()] == ["j1"]


def test_record_start_after_status_copy_keeps_one_record(tmp_path):
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory
    jobs = JobHistory(Store(tmp_path))
    jobs.update({"id": "j1", "file": "a.gcode", "state": "printing", "progress": 0.1})
    jobs.record_start("j1", "a.gcode", "alice")
    records = [r for r in jobs.list() if r["id"] == "j1"]
    assert len(records) == 1 and records[0]["user"] == "alice" and records[0]["progress"] == 0.1


def test_list_is_newest_first_within_one_second(tmp_path):
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory
    jobs = JobHistory(Store(tmp_path))
    jobs.record_start("old", "a.gcode", "u")
    jobs.record_start("new", "b.gcode", "u")
    assert [r["id"] for r in jobs.list()] == ["new", "old"]


def test_queued_jobs_carry_events_and_survive_a_restart(tmp_path, ticking_clock):
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory
    jobs = JobHistory(Store(tmp_path))
    jobs.create("q1", "a.gcode", "aa" * 32, "alice")
    jobs.record_start("p1", "b.gcode", "bob", "bb" * 32)
    jobs.update(snapshot("p1", file="b.gcode", state="paused", progress=0.3))
    jobs.add_event("p1", "pause requested", "bob")
    # A restart: the printing job is interrupted, the queued one still waits.
    assert JobHistory(Store(tmp_path)).mark_unfinished_interrupted("restarted") == 1
    q1, p1 = jobs.get("q1"), jobs.get("p1")
    assert q1["state"] == "queued" and [e["event"] for e in q1["events"]] == ["created"]
    assert p1["state"] == "interrupted"
    assert [(e["event"], e["user"]) for e in p1["events"]] == [
        ("created", "bob"), ("started", "bob"), ("paused", "printer"),
        ("pause requested", "bob"), ("interrupted", "printer")]
    assert p1["events"][-1]["detail"] == "restarted"
    times = [e["at"] for e in p1["events"]]
    assert times == sorted(times)


def test_the_queue_knows_duplicates_limits_and_order(tmp_path):
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory, JobNotFound, JobStateConflict
    jobs = JobHistory(Store(tmp_path))
    jobs.create("q1", "a.gcode", "aa" * 32, "alice")
    jobs.create("q2", "b.gcode", "bb" * 32, "alice")
    jobs.create("q3", "c.gcode", "cc" * 32, "bob")
    assert [r["id"] for r in jobs.active_with_hash("bb" * 32)] == ["q2"]
    assert jobs.active_with_hash("dd" * 32) == []
    assert jobs.queued_by("alice") == 2 and jobs.queued_by("bob") == 1
    assert jobs.next_queued()["id"] == "q1"
    jobs.mark_started("q1", "alice")
    assert jobs.next_queued()["id"] == "q2"
    with pytest.raises(JobStateConflict):
        jobs.delete("q1")                  # printing
    jobs.update(snapshot("q1", file="a.gcode", state="completed", progress=1.0))
    assert jobs.active_with_hash("aa" * 32) == []   # finished: not a duplicate
    jobs.delete("q1")
    jobs.delete("q2")                      # queued
    with pytest.raises(JobNotFound):
        jobs.delete("q2")
    assert [r["id"] for r in jobs.list()] == ["q3"]


def test_query_filters_and_pages(tmp_path, ticking_clock):
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory
    jobs = JobHistory(Store(tmp_path))
    for i in range(25):
        jobs.create(f"j{i:02d}", f"f{i % 3}.gcode", f"{i:064x}", "alice" if i % 2 else "bob")
    page = jobs.query(limit=10)
    assert (page["total"], page["page"], page["pages"], page["limit"]) == (25, 1, 3, 10)
    assert [r["id"] for r in page["jobs"]][:2] == ["j24", "j23"]
    assert "events" not in page["jobs"][0]
    last = jobs.query(limit=10, page=3)
    assert [r["id"] for r in last["jobs"]] == ["j04", "j03", "j02", "j01", "j00"]
    assert jobs.query(limit=10, page=4)["jobs"] == []
    only = jobs.query(file="f1.gcode", user="alice")
    assert {r["id"] for r in only["jobs"]} == {"j01", "j07", "j13", "j19"}
    # Each job created at a later second (the ticking clock).
    window = jobs.query(since=jobs.get("j10")["created_at"], until=jobs.get("j14")["created_at"])
    assert [r["id"] for r in window["jobs"]] == ["j14", "j13", "j12", "j11", "j10"]
    assert jobs.query(state="printing")["total"] == 0
    assert jobs.query(state="queued")["total"] == 25


def test_stats_over_all_jobs(tmp_path):
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory
    jobs = JobHistory(Store(tmp_path))
    assert jobs.stats()["success_rate"] is None and jobs.stats()["total"] == 0
    jobs.create("q", "a.gcode", None, "u")
    for job_id, state, secs, mm in (("c1", "completed", 100.0, 50.0),
                                    ("c2", "completed", 50.5, 20.0),
                                    ("x", "cancelled", 10.0, 1.0)):
        jobs.record_start(job_id, "b.gcode", "u")
        jobs.update(snapshot(job_id, state=state, print_duration=secs, filament_used_mm=mm))
    st = jobs.stats()
    assert st["total"] == 4 and st["by_state"]["queued"] == 1
    assert st["by_state"]["completed"] == 2 and st["by_state"]["cancelled"] == 1
    assert st["print_time_s"] == 160.5 and st["filament_used_mm"] == 71.0
    assert st["success_rate"] == round(2 / 3, 4)


def test_prune_archives_old_finished_jobs_and_keeps_the_rest(tmp_path):
    import json
    from printhost.store.db import Store
    from printhost.store.jobs import JobHistory
    store = Store(tmp_path)
    jobs = JobHistory(store)
    jobs.create("queued-old", "a.gcode", None, "u")
    for job_id, state in (("done-old", "completed"), ("done-new", "completed"),
                          ("running-old", "printing")):
        jobs.record_start(job_id, "b.gcode", "u")
        jobs.update(snapshot(job_id, state=state))
    with store.transaction() as db:
        table = db.table("jobs")
        for rec in table.all():
            if rec["id"].endswith("-old"):
                table.update({"created_at": "2020-01-01T00:00:00Z"}, doc_ids=[rec.doc_id])
    count, archive = jobs.prune("2021-01-01T00:00:00Z", tmp_path / "archive")
    assert count == 1 and archive is not None and archive.parent == tmp_path / "archive"
    lines = archive.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["done-old"]
    assert json.loads(lines[0])["events"][0]["event"] == "created"
    assert sorted(r["id"] for r in jobs.list()) == ["done-new", "queued-old", "running-old"]
    # Nothing left to prune: no archive file either.
    assert jobs.prune("2021-01-01T00:00:00Z", tmp_path / "archive") == (0, None)
    assert jobs.prune("2999-01-01T00:00:00Z", None)[0] == 1   # done-new, not archived
    assert len(list((tmp_path / "archive").iterdir())) == 1
