"""Uploads on the real service: what is G-code, name collisions and overwrite, names in
any script, and the home page at `GET /`."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

import httpx
import pytest

from conftest import REPO, Api, Service
from printhost import __version__
from tests import gcode_samples as samples

pytestmark = pytest.mark.e2e

# Characters that must be escaped in HTML, in the name the home page shows.
INSTANCE_NAME = "Bench <3> & \"Lab\" 'B'"


class UploadService(Service):
    """The e2e service with rate limits that never trigger (this module uploads a lot;
    429 itself is covered by test_api_hardening.py) and an instance name to escape."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        text = text.replace(
            "[server]\n", "[server]\nrate_limit_per_min = 100000.0\nrate_limit_burst = 100000\n", 1)
        text = text.replace(
            "[discovery]\n", "[discovery]\ninstance_name = \""
            + INSTANCE_NAME.replace('"', '\\"') + "\"\n", 1)
        self.config_path.write_text(text)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    # Real time: the jobs here only dwell, and a loaded machine cannot make the
    # simulated board miss its deadlines at factor 1.
    svc = UploadService(tmp_path_factory.mktemp("uploads"), time_factor=1.0)
    svc.start()
    yield svc
    svc.kill_all()
    svc.reclaim_status_block()


@pytest.fixture(scope="module")
def api(service):
    # One client for the module: each login costs a password hash, slow on a busy machine.
    client = Api(service)
    yield client
    client.close()


# Ten minutes of short dwells: longer than any test here, and cancelled at once (one
# long G4 would be waited out by a cancel).
LONG_JOB = b"; dwell in steps\n" + b"G4 P100\n" * 6000


def _send(api, name: str, data: bytes, overwrite: str | None = None) -> httpx.Response:
    params = {} if overwrite is None else {"overwrite": overwrite}
    return api.post("/api/v1/files", params=params,
                    files={"file": (name, data, "application/octet-stream")})


def _send_raw_name(api, name: bytes, data: bytes) -> httpx.Response:
    """A multipart body written by hand, for names a client library would escape
    (httpx sends a tab as %09)."""
    boundary = b"printhost-test-boundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"" + name + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            + data + b"\r\n--" + boundary + b"--\r\n")
    return api.post("/api/v1/files", content=body, headers={
        "Content-Type": "multipart/form-data; boundary=" + boundary.decode()})


def _stored(api) -> dict[str, int]:
    r = api.get("/api/v1/files")
    assert r.status_code == 200, r.text
    return {f["name"]: f["size"] for f in r.json()["files"]}


def _refused(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "Invalid upload", body
    return body["fields"]["file"]


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize("slicer", sorted(samples.SLICERS))
def test_every_slicers_output_is_accepted(api, slicer):
    data = samples.SLICERS[slicer].encode()
    r = _send(api, f"{slicer}.gcode", data)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(data)
    assert _stored(api)[f"{slicer}.gcode"] == len(data)


def test_empty_file_is_refused(api):
    assert _refused(_send(api, "empty.gcode", b"")) == "the file is empty"
    assert "empty.gcode" not in _stored(api)


def test_comment_only_file_is_refused(api):
    assert _refused(_send(api, "comments.gcode", samples.COMMENTS_ONLY.encode())) == (
        "the file holds only comments and blank lines, no G-code commands")
    assert "comments.gcode" not in _stored(api)


def test_binary_file_is_refused(api):
    assert _refused(_send(api, "picture.gcode", samples.PNG)) == (
        "binary data (a NUL byte at byte 8), not G-code text")
    assert _refused(_send(api, "prusa.gcode", samples.BGCODE)).startswith(
        "binary G-code (.bgcode) is not supported")
    stored = _stored(api)
    assert "picture.gcode" not in stored and "prusa.gcode" not in stored


def test_prose_and_config_files_are_refused(api):
    assert _refused(_send(api, "letter.gcode", samples.PROSE.encode())) == (
        "not G-code: line 1 is neither a comment nor a G-code command: 'Dear printer,'")
    toml = (REPO / "config" / "printhost.toml").read_bytes()
    assert _refused(_send(api, "config.gcode", toml)).startswith("not G-code: line ")
    stored = _stored(api)
    assert "letter.gcode" not in stored and "config.gcode" not in stored


def test_nothing_is_left_behind_by_refused_uploads(service, api):
    _send(api, "leftover.gcode", b"")
    _send(api, "leftover.gcode", samples.PNG)
    leftovers = [p.name for p in (service.state_dir / "gcodes").iterdir()
                 if p.name.startswith(".") and p.name != ".meta"]
    assert leftovers == []


# --------------------------------------------------------------------------- collisions


def test_a_name_collision_is_409_unless_overwrite_is_asked_for(api):
    first = b"G28\nG1 X10 Y10 F3000\n"
    second = b"G28\nG1 X20 Y20 F3000\nG1 X30\n"
    assert _send(api, "twice.gcode", first).status_code == 201
    r = _send(api, "twice.gcode", second)
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "A file named 'twice.gcode' exists already; upload with "
                                 "?overwrite=true to replace it"}
    assert _stored(api)["twice.gcode"] == len(first)
    r = _send(api, "twice.gcode", second, overwrite="false")
    assert r.status_code == 409, r.text
    assert _stored(api)["twice.gcode"] == len(first)

    r = _send(api, "twice.gcode", second, overwrite="true")
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(second) == _stored(api)["twice.gcode"]


def test_concurrent_uploads_of_one_new_name_give_one_201(service, api):
    import concurrent.futures
    headers = api.auth("operator")

    def send(i: int) -> int:
        with httpx.Client(base_url=service.url, timeout=30) as c:
            return c.post("/api/v1/files", headers=headers, files={
                "file": ("race.gcode", b"G28\nG1 X%d\n" % i, "application/octet-stream")}
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(send, range(6)))
    assert codes == [201] + [409] * 5, codes


def test_overwrite_must_be_true_or_false(api):
    for value in ("yes", "1", "TRUE", ""):
        r = _send(api, "flag.gcode", b"G28\n", overwrite=value)
        assert r.status_code == 400, (value, r.text)
        assert r.json() == {"error": "Invalid query parameter",
                            "fields": {"overwrite": "must be true or false, given once"}}
    r = api.post("/api/v1/files?overwrite=true&overwrite=true",
                 files={"file": ("flag.gcode", b"G28\n", "application/octet-stream")})
    assert r.status_code == 400, r.text
    assert "flag.gcode" not in _stored(api)


def test_the_file_being_printed_cannot_be_replaced(api):
    job = LONG_JOB
    assert _send(api, "long job.gcode", job).status_code == 201
    r = api.post("/api/v1/print", json={"file": "long job.gcode"})
    assert r.status_code == 200, r.text
    api.wait_for(lambda s: s["job"] and s["job"]["state"] == "printing", timeout_s=30,
                 what="the job to print")
    try:
        r = _send(api, "long job.gcode", b"G28\n", overwrite="true")
        assert r.status_code == 409, r.text
        assert r.json() == {"error": "File is being printed"}
        assert _send(api, "long job.gcode", b"G28\n").status_code == 409
        assert _stored(api)["long job.gcode"] == len(job)
        # Other files can be uploaded and replaced meanwhile.
        assert _send(api, "other.gcode", b"G28\n").status_code == 201
        assert _send(api, "other.gcode", b"G28\nG28\n", overwrite="true").status_code == 201
    finally:
        assert api.post("/api/v1/cancel").status_code == 200
        api.wait_for(lambda s: s["job"]["state"] == "cancelled", timeout_s=30,
                     what="the job to be cancelled")
    r = _send(api, "long job.gcode", b"G28\n", overwrite="true")
    assert r.status_code == 201, r.text
    assert _stored(api)["long job.gcode"] == 4


def test_control_characters_in_a_name_are_refused(api):
    r = _send_raw_name(api, b"tab\t.gcode", b"G28\n")
    assert _refused(r) == "file name must not contain control characters"
    assert _send_raw_name(api, b"plain.gcode", b"G28\n").status_code == 201


# --------------------------------------------------------------------------- names


def test_unicode_names_are_accepted_and_stored_in_nfc(service, api):
    nfd = unicodedata.normalize("NFD", "würfel.gcode")
    nfc = "w\u00fcrfel.gcode"
    assert nfd != nfc
    data = b"M106 S128\nG4 P200\nM107\n"
    r = _send(api, nfd, data)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == nfc
    assert nfc in _stored(api) and nfd not in _stored(api)
    assert (service.state_dir / "gcodes" / nfc).read_bytes() == data
    # The same name in the other form is the same file.
    assert _send(api, nfc, data).status_code == 409
    # Printed by either form of its name; the job names the stored file.
    r = api.post("/api/v1/print", json={"file": nfd})
    assert r.status_code == 200, r.text
    st = api.wait_for(lambda s: s["job"] and s["job"]["state"] == "completed", timeout_s=60,
                      what="the job to complete")
    assert st["job"]["file"] == nfc
    assert api.get("/api/v1/jobs").json()["jobs"][0]["file"] == nfc
    # Other scripts, and deleting by the URL-encoded name.
    assert _send(api, "立方体.gcode", data).status_code == 201
    r = api.http.delete("/api/v1/files/" + quote(nfd), headers=api.auth("operator"))
    assert r.status_code == 200, r.text
    assert nfc not in _stored(api) and "立方体.gcode" in _stored(api)


@pytest.mark.parametrize("name, problem", [
    ("a\u00a0b.gcode", "letters, digits"),
    ("rocket\U0001f680.gcode", "letters, digits"),
    (".würfel.gcode", "must not start with a dot"),
    ("würfel.txt", "must end in .gcode, .gco or .g"),
    ("ü" * 125 + ".gcode", "at most 255 bytes"),
])
def test_names_still_refused(api, name, problem):
    assert problem in _refused(_send(api, name, b"G28\n"))


# --------------------------------------------------------------------------- GET /


def test_home_page(service):
    r = httpx.get(service.url + "/", timeout=10)   # no token
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-request-id"]
    page = r.text
    escaped = "Bench &lt;3&gt; &amp; &quot;Lab&quot; &#x27;B&#x27;"
    assert f"<title>{escaped}</title>" in page and f"<h1>{escaped}</h1>" in page
    assert INSTANCE_NAME not in page
    assert f'<dd id="version">{__version__}</dd>' in page
    assert '<dd id="state">idle</dd>' in page
    assert '<dd id="control">running</dd>' in page
    assert '<a href="/api/v1/openapi.json">' in page
    # Nothing is loaded from anywhere.
    lowered = page.lower()
    for needle in ("<script", "src=", "http://", "https://", "<link", "@import"):
        assert needle not in lowered, needle
    # The link leads to the document, which lists the page too.
    doc = httpx.get(service.url + "/api/v1/openapi.json", timeout=10).json()
    assert "text/html" in doc["paths"]["/"]["get"]["responses"]["200"]["content"]
    head = httpx.head(service.url + "/", timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_home_page_shows_the_printer_state(service, api):
    assert _send(api, "dwell.gcode", LONG_JOB).status_code == 201
    assert api.post("/api/v1/print", json={"file": "dwell.gcode"}).status_code == 200
    try:
        api.wait_for(lambda s: s["state"] == "printing", timeout_s=30, what="printing")
        # The page reads the same status as /api/v1/status; the job dwells for minutes.
        page = httpx.get(service.url + "/", timeout=10).text
        assert '<dd id="state">printing</dd>' in page, page
        # The page names no job or file.
        assert "dwell" not in page
    finally:
        assert api.post("/api/v1/cancel").status_code == 200
        api.wait_for(lambda s: s["job"]["state"] == "cancelled", timeout_s=30,
                     what="the job to be cancelled")
