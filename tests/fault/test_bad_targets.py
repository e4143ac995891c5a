"""docs/safety.md row 9: bad heater targets through the API get a clear 4xx and change nothing,
and nothing that is not a finite number reaches the control process."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

TARGET = "/api/v1/heaters/extruder/target"


@pytest.fixture(scope="module")
def api(tmp_path_factory, shared_kernel_cache):
    from tests.e2e.conftest import Api, Service
    svc = Service(tmp_path_factory.mktemp("targets"), time_factor=20.0).start()
    client = Api(svc)
    yield client
    client.close()
    svc.stop()


def _targets(api) -> tuple:
    p = api.status()["printer"]
    return p["target_hotend_temp"], p["target_bed_temp"]


@pytest.mark.parametrize("body,field_words", [
    ('{"target": 300}', "between 0 and 280"),
    ('{"target": -5}', "between 0 and 280"),
    ('{"target": "200"}', "number"),
    ('{"target": true}', "number"),
    ('{"target": null}', "must not be null"),
    ('{"target": [200]}', "number"),
    ('{}', "required"),
])
def test_bad_target_values_are_400_with_the_field_named(api, body, field_words):
    before = _targets(api)
    r = api.post(TARGET, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["error"] == "Invalid request body"
    assert field_words in err["fields"]["target"]
    assert "Traceback" not in r.text
    assert _targets(api) == before


@pytest.mark.parametrize("body", ['{"target": NaN}', '{"target": Infinity}',
                                  '{"target": -Infinity}', '{"target": 1e999}',
                                  '{"target": 200', 'target=200'])
def test_non_numbers_and_malformed_json_are_400(api, body):
    before = _targets(api)
    r = api.post(TARGET, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]
    assert _targets(api) == before


def test_huge_body_is_413_and_changes_nothing(api):
    before = _targets(api)
    body = '{"target": 200, "pad": "' + "x" * 200_000 + '"}'
    r = api.post(TARGET, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert _targets(api) == before


def test_unknown_heater_is_404_and_viewer_is_403(api):
    r = api.post("/api/v1/heaters/chamber/target", json={"target": 50})
    assert r.status_code == 404 and r.json()["error"] == "Unknown heater: chamber"
    r = api.post(TARGET, json={"target": 50}, role="viewer")
    assert r.status_code == 403


def test_good_targets_take_effect_and_zero_turns_off(api):
    r = api.post(TARGET, json={"target": 180})
    assert r.status_code == 200, r.text
    assert r.json() == {"heater": "extruder", "target": 180.0}
    assert api.status()["printer"]["target_hotend_temp"] == 180.0
    r = api.post("/api/v1/heaters/heater_bed/target", json={"target": 130})
    assert r.status_code == 200 and api.status()["printer"]["target_bed_temp"] == 130.0
    for name in ("extruder", "heater_bed"):
        r = api.post(f"/api/v1/heaters/{name}/target", json={"target": 0})
        assert r.status_code == 200
    assert _targets(api) == (0.0, 0.0)
