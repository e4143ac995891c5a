"""Health that tells the truth: components, overall status and HTTP status, and the
liveness probe, against the running service."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

PARTS = {"control", "mcu", "heaters", "store", "disk"}


def _health(svc) -> httpx.Response:
    return httpx.get(svc.url + "/api/v1/health", timeout=5)


def _wait_health(svc, predicate, what: str, timeout_s: float = 30.0) -> httpx.Response:
    """Poll health (no credentials: the store may be broken) until `predicate` holds."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = _health(svc)
        if predicate(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last health "
                         f"{last and last.status_code} {last and last.text}\n{svc.log()}")


def test_healthz_is_a_tiny_public_liveness_probe(shared_service):
    r = httpx.get(shared_service.url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert len(r.content) < 32
    doc = httpx.get(shared_service.url + "/api/v1/openapi.json", timeout=5).json()
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_health_ok_lists_every_component(shared_service):
    r = _wait_health(shared_service, lambda r: r.json()["status"] == "ok", "health ok")
    body = r.json()
    assert r.status_code == 200, body
    assert set(body["components"]) == PARTS
    assert all(p == {"status": "ok", "reason": None} for p in body["components"].values()), body
    assert body["state"] == "idle" and body["control"] == "running" and "error" not in body


def test_low_disk_and_a_broken_store_are_degraded_not_down(service_factory):
    # No disk has a terabyte free here: the threshold makes the disk "low".
    svc = service_factory(server_extra="health_min_free_mb = 1048576\n").start()
    r = _wait_health(svc, lambda r: r.json()["components"]["heaters"]["status"] == "ok",
                     "heater readings")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "degraded", body
    disk = body["components"]["disk"]
    assert disk["status"] == "degraded" and "below 1048576 MiB" in disk["reason"], disk
    assert body["components"]["store"]["status"] == "ok"
    (svc.state_dir / "printhost.json").write_text("{ this is not json")
    r = _wait_health(svc, lambda r: r.json()["components"]["store"]["status"] == "down",
                     "store down")
    body = r.json()
    # The printer can still print: degraded, 200, and no internals in the reason.
    assert r.status_code == 200 and body["status"] == "degraded", body
    assert body["components"]["store"]["reason"].startswith("the store cannot be read ("), body
    assert str(svc.state_dir) not in r.text
