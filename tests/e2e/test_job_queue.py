"""The job queue on the real service: queue, start, events, duplicates (409 with the
other job's id), per-user limits (429), re-queue, delete rules, list filters and
pages, and the next job started by itself with `jobs.auto_start`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import NO_RATE_LIMIT, Api, Service, running

pytestmark = pytest.mark.e2e

MAX_QUEUED = 3
# Ten minutes of short dwells (cancelled at once; one long G4 would be waited out).
LONG = "G4 P100\n" * 6000


def quick(tag: str) -> str:
    """A short job; the tag makes each file's content (and hash) its own."""
    return f"; {tag}\nG4 P200\n"


@pytest.fixture(scope="module")
def running_service(tmp_path_factory):
    with running(Service(tmp_path_factory.mktemp("queue"), server_extra=NO_RATE_LIMIT,
                         extra_config=f"\n[jobs]\nmax_queued_per_user = {MAX_QUEUED}\n")) as both:
        yield both


def upload(api: Api, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    r = api.upload(path, overwrite=True)
    assert r.status_code == 201, r.text


def submit(api: Api, name: str, role: str = "operator") -> httpx.Response:
    return api.post("/api/v1/jobs", role=role, json={"file": name})


def job(api: Api, job_id: str) -> dict:
    r = api.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def delete(api: Api, job_id: str) -> httpx.Response:
    return api.http.delete(f"/api/v1/jobs/{job_id}", headers=api.auth("operator"))


def events_once(api: Api, job_id: str, event: str, timeout_s: float = 30.0) -> list:
    """The job's events as (event, user), once `event` is among them (the supervisor
    records the printer's states within a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [(e["event"], e["user"]) for e in job(api, job_id)["events"]]
        if any(name == event for name, _ in events):
            return events
        assert time.monotonic() < deadline, f"no {event!r} event: {events}"
        time.sleep(0.1)


def wait_idle(api: Api) -> None:
    api.wait_for(lambda s: (s.get("job") or {}).get("state") not in
                 ("printing", "pausing", "paused", "cancelling"), what="no job in progress")


def clear_queue(api: Api) -> None:
    for rec in api.get("/api/v1/jobs", params={"state": "queued"}).json()["jobs"]:
        delete(api, rec["id"])


def test_a_queued_job_waits_starts_on_request_and_records_its_events(api, tmp_path):
    wait_idle(api)
    upload(api, tmp_path, "q-first.gcode", quick("first"))
    r = submit(api, "q-first.gcode")
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["state"] == "queued" and rec["user"] == "operator" and len(rec["sha256"]) == 64
    assert api.status()["job"] is None or api.status()["job"]["id"] != rec["id"]
    assert [e["event"] for e in job(api, rec["id"])["events"]] == ["created"]
    r = api.post(f"/api/v1/jobs/{rec['id']}/start", json={})
    assert r.status_code == 200, r.text and r.json()["state"] == "printing"
    done = api.wait_for(lambda s: s["job"]["id"] == rec["id"]
                        and s["job"]["state"] == "completed", what="the queued job completed")
    events = events_once(api, rec["id"], "completed")
    assert events[:2] == [("created", "operator"), ("started", "operator")]
    assert ("completed", "printer") in events
    assert done["job"]["file"] == "q-first.gcode"
    # Not queued any more: cannot be started again.
    r = api.post(f"/api/v1/jobs/{rec['id']}/start", json={})
    assert r.status_code == 409 and "not queued" in r.json()["error"]


def test_the_same_file_twice_is_a_duplicate_with_the_first_jobs_id(api, tmp_path):
    clear_queue(api)
    upload(api, tmp_path, "dup.gcode", quick("dup"))
    first = submit(api, "dup.gcode").json()
    r = submit(api, "dup.gcode")
    assert r.status_code == 409 and r.json()["job_id"] == first["id"]
    assert first["id"] in r.json()["error"]
    # The same content under another name is the same print.
    upload(api, tmp_path, "dup copy.gcode", quick("dup"))
    assert submit(api, "dup copy.gcode").json()["job_id"] == first["id"]
    # Printing it directly is refused too, pointing at the queued job.
    r = api.post("/api/v1/print", json={"file": "dup.gcode"})
    assert r.status_code == 409 and r.json()["job_id"] == first["id"]
    assert delete(api, first["id"]).status_code == 200
    r = submit(api, "dup.gcode")
    assert r.status_code == 201
    assert delete(api, r.json()["id"]).status_code == 200


def test_a_user_may_queue_only_so_many(api, tmp_path):
    clear_queue(api)
    ids = []
    for i in range(MAX_QUEUED):
        upload(api, tmp_path, f"limit{i}.gcode", quick(f"limit{i}"))
        r = submit(api, f"limit{i}.gcode")
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    upload(api, tmp_path, "limit-extra.gcode", quick("limit-extra"))
    r = submit(api, "limit-extra.gcode")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "max_queued_per_user" in r.json()["error"]
    # Another user is not held up by this one's queue.
    assert submit(api, "limit-extra.gcode", role="admin").status_code == 201
    clear_queue(api)


def test_a_queued_job_starts_only_with_its_file_as_it_was(api, tmp_path):
    clear_queue(api)
    upload(api, tmp_path, "changing.gcode", quick("before"))
    rec = submit(api, "changing.gcode").json()
    upload(api, tmp_path, "changing.gcode", quick("after"))
    r = api.post(f"/api/v1/jobs/{rec['id']}/start", json={})
    assert r.status_code == 409 and "replaced" in r.json()["error"]
    r = api.http.delete("/api/v1/files/changing.gcode", headers=api.auth("operator"))
    assert r.status_code == 200
    r = api.post(f"/api/v1/jobs/{rec['id']}/start", json={})
    assert r.status_code == 409 and "gone" in r.json()["error"]
    assert job(api, rec["id"])["state"] == "queued"
    assert delete(api, rec["id"]).status_code == 200
    assert api.post("/api/v1/jobs/nope/start", json={}).status_code == 404
    assert submit(api, "no-such-file.gcode").status_code == 404
    r = submit(api, "../x.gcode")
    assert r.status_code == 400 and "file" in r.json()["fields"]


def test_start_while_busy_delete_rules_requeue_and_requested_events(api, tmp_path):
    clear_queue(api)
    wait_idle(api)
    upload(api, tmp_path, "long.gcode", LONG)
    upload(api, tmp_path, "waiting.gcode", quick("waiting"))
    r = api.post("/api/v1/print", json={"file": "long.gcode"})
    assert r.status_code == 200, r.text
    running = r.json()["job_id"]
    api.wait_for(lambda s: s["job"]["state"] == "printing", what="printing")
    waiting = submit(api, "waiting.gcode").json()
    r = api.post(f"/api/v1/jobs/{waiting['id']}/start", json={})
    assert r.status_code == 409 and "in progress" in r.json()["error"]
    r = delete(api, running)
    assert r.status_code == 409 and "cancel it first" in r.json()["error"]
    r = api.post(f"/api/v1/jobs/{running}/requeue", json={})
    assert r.status_code == 409
    assert api.post("/api/v1/pause", json={}).status_code == 200
    api.wait_for(lambda s: s["job"]["state"] == "paused", what="paused")
    events_once(api, running, "paused")    # recorded (the supervisor looks once a second)
    assert api.post("/api/v1/resume", json={}).status_code == 200
    assert api.post("/api/v1/cancel", json={}).status_code == 200
    api.wait_for(lambda s: s["job"]["state"] == "cancelled", what="cancelled")
    events = [name for name, _ in events_once(api, running, "cancelled")]
    assert events[:2] == ["created", "started"]
    for wanted in ("pause requested", "paused", "resume requested", "cancel requested",
                   "cancelled"):
        assert wanted in events, events
    # Finished: re-queued as a new job, and deletable.
    r = api.post(f"/api/v1/jobs/{running}/requeue", json={})
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["id"] != running and again["state"] == "queued"
    assert again["file"] == "long.gcode"
    assert job(api, running)["events"][-1]["event"] == "requeued"
    assert delete(api, running).status_code == 200
    assert delete(api, running).status_code == 404
    clear_queue(api)


def test_the_list_filters_and_pages(api, tmp_path):
    clear_queue(api)
    for i in range(3):
        upload(api, tmp_path, f"page{i}.gcode", quick(f"page{i}"))
        assert submit(api, f"page{i}.gcode").status_code == 201
    r = api.get("/api/v1/jobs", params={"state": "queued", "limit": 2})
    body = r.json()
    assert (body["total"], body["pages"], body["page"], body["limit"]) == (3, 2, 1, 2)
    assert [j["file"] for j in body["jobs"]] == ["page2.gcode", "page1.gcode"]
    assert "events" not in body["jobs"][0]
    body = api.get("/api/v1/jobs", params={"state": "queued", "limit": 2, "page": 2}).json()
    assert [j["file"] for j in body["jobs"]] == ["page0.gcode"]
    assert api.get("/api/v1/jobs", params={"file": "page1.gcode"}).json()["total"] == 1
    assert api.get("/api/v1/jobs", params={"user": "nobody"}).json()["total"] == 0
    assert api.get("/api/v1/jobs", params={"since": "2999-01-01"}).json()["total"] == 0
    for bad in ({"state": "sleeping"}, {"page": "0"}, {"limit": "x"}, {"since": "yesterday"},
                {"colour": "red"}):
        r = api.get("/api/v1/jobs", params=bad)
        assert r.status_code == 400, (bad, r.text)
    clear_queue(api)


def test_auto_start_runs_the_queue_in_order(service_factory, api_for, tmp_path):
    svc = service_factory(extra_config="\n[jobs]\nauto_start = true\n")
    svc.start()
    api = api_for(svc)
    upload(api, tmp_path, "a.gcode", "; a\n" + "G4 P100\n" * 100)   # 10 s at 1x, 0.5 s at 20x
    upload(api, tmp_path, "b.gcode", quick("b"))
    a = submit(api, "a.gcode").json()
    assert a["state"] == "printing"          # the printer was idle: started at once
    b = submit(api, "b.gcode").json()
    assert b["state"] == "queued"
    api.wait_for(lambda s: s["job"]["id"] == b["id"] and s["job"]["state"] == "completed",
                 timeout_s=60, what="the second job started by itself and completed")
    events = [(e["event"], e["user"]) for e in job(api, b["id"])["events"]]
    assert events[:2] == [("created", "operator"), ("started", "auto-start")]


def test_audit_and_prune(service, api, tmp_path):
    from printhost.store.db import Store
    clear_queue(api)
    wait_idle(api)
    upload(api, tmp_path, "orphan.gcode", quick("orphan"))
    upload(api, tmp_path, "gone.gcode", quick("gone"))
    queued = submit(api, "gone.gcode").json()
    assert api.http.delete("/api/v1/files/gone.gcode",
                           headers=api.auth("operator")).status_code == 200
    r = api.get("/api/v1/admin/audit", role="admin")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert "orphan.gcode" in doc["orphan_files"]
    assert {"job_id": queued["id"], "file": "gone.gcode", "state": "queued"} in doc["missing_files"]
    assert api.get("/api/v1/admin/audit", role="operator").status_code == 403
    # A finished job from long ago: pruned and archived; the queued one stays.
    upload(api, tmp_path, "old.gcode", quick("old"))
    old = api.post("/api/v1/print", json={"file": "old.gcode"}).json()["job_id"]
    api.wait_for(lambda s: s["job"]["id"] == old and s["job"]["state"] == "completed",
                 what="the old job completed")
    events_once(api, old, "completed")
    store = Store(service.state_dir)
    with store.transaction() as db:
        table = db.table("jobs")
        for rec in table.all():
            if rec["id"] == old:
                table.update({"created_at": "2020-01-01T00:00:00Z"}, doc_ids=[rec.doc_id])
    r = api.post("/api/v1/admin/prune", role="admin", json={"older_than_days": 30})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["pruned"] == 1 and result["archive"].startswith("archive/jobs-")
    archived = (service.state_dir / result["archive"]).read_text()
    assert f'"id":"{old}"' in archived
    assert api.get(f"/api/v1/jobs/{old}").status_code == 404
    assert job(api, queued["id"])["state"] == "queued"
    r = api.post("/api/v1/admin/prune", role="admin", json={"older_than_days": 0})
    assert r.status_code == 400 and "older_than_days" in r.json()["fields"]
    assert delete(api, queued["id"]).status_code == 200
