"""Property-based fuzzing of the live service against its own OpenAPI document.

schemathesis reads `GET /api/v1/openapi.json` from a running service and, for every
operation, sends requests built from the declared schemas (boundary values first, then
random ones, valid and invalid), authenticated as an admin. Every response must

* not be a server error (no 5xx: a 500 is a bug, and the fuzzed service never loses
  its control process, so a 503 would be a bug too);
* have a status the operation declares, the declared content type, the declared
  headers (X-Request-Id on every response, Retry-After on 429, ...) and a body that
  validates against the declared schema;
* reject schema-invalid data with a 4xx;
* for an error, be the error object and leak nothing internal.

Only the generated phases run (explicit examples, schema coverage, random data), not
schemathesis's stateful phase: that one feeds real values from responses into later
requests, e.g. the run's own user name from `GET /users` into `PATCH /users/{username}`,
and so deactivates or demotes the very account the run authenticates with.

The number of examples per operation comes from PRINTHOST_FUZZ_EXAMPLES (default 8:
about 45 s on two cores for the 68 operations, service start included, beside the
schema-coverage phase's boundary values); a longer run may raise it.
"""

from __future__ import annotations

import collections
import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from conftest import Service
from printhost.config import Settings

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = int(os.environ.get("PRINTHOST_FUZZ_EXAMPLES", "8"))

FUZZ_USER = "fuzz-admin-7c1e"
FUZZ_PASSWORD = "fuzz-admin-password-7c1e"

# Operations not fuzzed, and why. Nothing else is left out: uploads, prints, pause,
# resume, cancel, firmware restart, user and API key management all run, and the service answers 409
# to conflicting requests during the run, as it would for real clients.
EXCLUDED = {
    # Revokes the token the run authenticates with: every later request would be a 401
    # and the rest of the run would test nothing but the token check.
    ("POST", "/api/v1/auth/logout"): "revokes the run's own token",
    # Revokes every token of the run's user, with the same effect.
    ("POST", "/api/v1/auth/logout_all"): "revokes every token of the run's user",
    # Latches the printer in `error` (as M112): every later printer command would be a
    # (documented) 503 until a firmware restart. tests/fault/test_stop_and_restart.py
    # covers it.
    ("POST", "/api/v1/printer/emergency_stop"): "latches the printer in error",
}

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]

# Requests that are never sent, and why: a heater target above SAFE_TARGET_C but within
# the heater's max_temp (which the API accepts, as Klipper does) may overshoot max_temp,
# and a PID tune oscillates around its target; either can trip the heater's max_temp
# check, which legitimately latches the printer in `error` until the service restarts,
# after which every printer command is a (documented) 503. Such examples are discarded;
# every other target, valid or not, is sent.
HEATER_COMMANDS = {("POST", "/api/v1/heaters/{name}/target"),
                   ("POST", "/api/v1/heaters/{name}/pid_tune")}
SAFE_TARGET_C = 100.0
_DEFAULTS = Settings()
MAX_TEMP_C = {"extruder": _DEFAULTS.heaters.extruder.max_temp,
              "heater_bed": _DEFAULTS.heaters.heater_bed.max_temp}


# The same for the typed heat command (several targets at once) and for raw G-code
# that could set a target or stop the printer (M112 latches it in error like the
# emergency-stop route).
HEAT_COMMAND = ("POST", "/api/v1/printer/heat")
GCODE_COMMAND = ("POST", "/api/v1/printer/gcode")
_RISKY_GCODE = re.compile(r"M1(04|09|12|40|41|90|91)(?![0-9])", re.IGNORECASE)


def _could_trip_a_heater(case) -> bool:
    key = (case.method.upper(), case.path)
    body = case.body if isinstance(case.body, dict) else {}
    if key == HEAT_COMMAND:
        return any(not isinstance(t, bool) and isinstance(t, (int, float))
                   and t > SAFE_TARGET_C for t in body.values())
    if key == GCODE_COMMAND:
        script = body.get("script")
        return isinstance(script, str) and _RISKY_GCODE.search(script) is not None
    if key not in HEATER_COMMANDS:
        return False
    target = case.body.get("target") if isinstance(case.body, dict) else None
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        return False
    max_temp = MAX_TEMP_C.get((case.path_parameters or {}).get("name"))
    return max_temp is not None and SAFE_TARGET_C < target <= max_temp


# An explicit configuration, so a schemathesis.toml lying around cannot change the run.
# A request with invalid data may also be refused with 413: a string far beyond its
# maxLength can make the body larger than server.max_body_bytes, which is checked first.
FUZZ_CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 409, 413, 415, 429]
"""

LEAKS = ("traceback", "exception", "/tmp/", "printhost/", ".py\"", ".py ", "secret_key")

# (operation label, status) -> count, printed at the end of the module.
TALLY: collections.Counter = collections.Counter()


class FuzzService(Service):
    """The e2e service with rate limits so high they never trigger, so that the fuzzer
    reaches the handlers (429 itself is covered by test_api_hardening.py)."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(text.replace(
            "[server]\n", "[server]\nrate_limit_per_min = 100000.0\nrate_limit_burst = 100000\n", 1))


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory):
    svc = FuzzService(tmp_path_factory.mktemp("fuzz"), time_factor=20.0)
    svc.start()
    r = svc.cli("user", "add", FUZZ_USER, "--role", "admin", stdin=FUZZ_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    yield svc
    svc.kill_all()
    if TALLY:
        print(f"\nschemathesis: {sum(TALLY.values())} requests over "
              f"{len({label for label, _ in TALLY})} operations; statuses:")
        for (label, status), count in sorted(TALLY.items()):
            print(f"  {label:55s} {status}  x{count}")


@pytest.fixture(scope="module")
def fuzz_token(fuzz_service) -> str:
    import httpx
    r = httpx.post(fuzz_service.url + "/api/v1/auth/login",
                   json={"username": FUZZ_USER, "password": FUZZ_PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def api_schema(fuzz_service, fuzz_token):
    # The token is the run's `bearer` credential: schemathesis sends it with every
    # operation that declares bearer security, instead of generating Authorization
    # headers of its own (which would turn most requests into 401s).
    config = SchemathesisConfig.from_str(FUZZ_CONFIG + f"""
[auth.openapi.bearer]
bearer = "{fuzz_token}"
""")
    return schemathesis.openapi.from_url(fuzz_service.url + "/api/v1/openapi.json",
                                         config=config)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis's pytest integration reads and rewrites the private `_nodeid` of the
    test item (only to name each operation in reports), which pytest 9 items no longer
    have; give it the public node id to start from."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# Filters must be applied to the lazy schema: the pytest integration replaces the
# filters of the schema the fixture returns.
schema = schemathesis.pytest.from_fixture("api_schema")
for _method, _path in EXCLUDED:
    schema = schema.exclude(method=_method, path=_path)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case):
    assume(not _could_trip_a_heater(case))
    response = case.call_and_validate(checks=CHECKS, timeout=30)
    TALLY[(case.operation.label, response.status_code)] += 1
    assert response.headers.get("x-request-id"), "every response carries X-Request-Id"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], response.text
        lowered = response.text.lower()
        assert not any(leak in lowered for leak in LEAKS), response.text


def test_the_fuzzed_service_survived(fuzz_service, fuzz_token):
    """After the run the service still answers, with its control process alive."""
    import httpx
    assert fuzz_service.proc is not None and fuzz_service.proc.poll() is None
    health = httpx.get(fuzz_service.url + "/api/v1/health", timeout=10)
    assert health.status_code == 200 and health.json()["control"] == "running", health.text
    status = httpx.get(fuzz_service.url + "/api/v1/status", timeout=10,
                       headers={"Authorization": f"Bearer {fuzz_token}"})
    assert status.status_code == 200 and status.json()["state"] != "error", status.text
    check = httpx.get(fuzz_service.url + "/api/v1/auth/check", timeout=10,
                      headers={"Authorization": f"Bearer {fuzz_token}"})
    assert check.status_code == 200, "the run's token must still work: no exclusion missing"
