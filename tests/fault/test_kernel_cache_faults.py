"""Safety row 13: a stale, unreadable or damaged numba cache, or kernels that do not
compute what their references do.

The cache is damaged in each of the ways a power cut, a full SD card or a bad card
corrupts files, and the check the service runs before it uses a cache (the directory,
then the self-test child loading every kernel) must name the damage. Then the real
service starts on a state directory whose kernel cache (`<state>/numba-cache`) was
damaged beforehand, once in its files and once in its code (recovery is one path
whatever the reason; each run costs a full compile), and the control process must
log one clear line (no traceback), recompile into a fresh directory and come up
with heaters and motion working. The last one runs an installed package whose step
kernel itself is wrong: the freshly compiled kernels fail their self-test too, and
the printer refuses to heat.

A good cache is compiled once per module; every test damages its own copy. The
poisoned kernel is compiled from a copy of the package with one constant changed,
and its index given the real source's stamp, so that numba's own staleness check
(a hash of the source file) passes it, as it would a damaged index or a cache
written by another build.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from printhost.control import kernels
from printhost.control.kernels import loader
from tests.e2e.conftest import REPO, Service, printhost_cmd

# Minutes of compiling and no reaction times measured: beside the other service tests.
# A fresh compile of every kernel takes about 20 s on two idle cores; running beside the
# other tests at normal priority, several times that.
COMPILE_WAIT_S = 360
pytestmark = [pytest.mark.beside_services, pytest.mark.timeout(600)]

STEPGEN = REPO / "printhost" / "control" / "kernels" / "stepgen.py"
# A constant of the step generator: root-finding stops at 0.1 s instead of 10 ps.
GOOD_CONSTANT, BAD_CONSTANT = "ROOT_TOLERANCE_S = 1e-11", "ROOT_TOLERANCE_S = 1e-01"
DAMAGE_LINE = re.compile(r"kernel cache at (\S+) is damaged \((.+)\); recompiling into (\S+)")

SHORT_JOB = b"G28\nG90\nG1 X20 Y20 F6000\nG1 X60 Y20\nG1 X60 Y45.5\nG1 X31.25 Y45.5 Z5\nM400\n"


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory, shared_kernel_cache) -> Path:
    """Every kernel family compiled and self-tested once: the session's shared cache,
    completed by the self-test probe."""
    cache = tmp_path_factory.mktemp("kernel-cache") / "good"
    if Path(shared_kernel_cache).is_dir():
        shutil.copytree(shared_kernel_cache, cache)
    if loader.probe(cache) is not None:
        shutil.rmtree(cache)
        cache.mkdir()
        assert loader.probe(cache) is None
    return cache


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> tuple[Path, Path]:
    """(a copy of the package with the wrong constant, the cache compiled from it)."""
    root = tmp_path_factory.mktemp("poisoned")
    shutil.copytree(REPO / "printhost", root / "printhost",
                    ignore=shutil.ignore_patterns("__pycache__"))
    source = root / "printhost" / "control" / "kernels" / "stepgen.py"
    text = source.read_text()
    assert text.count(GOOD_CONSTANT) == 1 and len(GOOD_CONSTANT) == len(BAD_CONSTANT)
    source.write_text(text.replace(GOOD_CONSTANT, BAD_CONSTANT))
    stat = STEPGEN.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cache = root / "cache"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(root))
    run = subprocess.run([sys.executable, "-m", "printhost.control.kernels.selftest"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    # The copy's own self-test already refuses it; its compiled kernels stay cached.
    assert run.returncode == 1 and "stepgen kernels disagree" in run.stderr, run.stderr
    return root, cache


def _kernel_files(cache: Path, prefix: str) -> list[Path]:
    return sorted(cache.rglob(f"{prefix}*.nb[ic]"))


def _read_index(path: Path) -> tuple:
    """(format version, source stamp, overloads) of a numba index file."""
    with open(path, "rb") as fh:
        version = pickle.load(fh)
        stamp, overloads = pickle.loads(fh.read())
    return version, stamp, overloads


def _damage(kind: str, good: Path, cache: Path, poisoned: tuple[Path, Path]) -> None:
    """Put a damaged copy of the good cache at `cache`."""
    if kind == "file":
        cache.write_bytes(b"numba-cache\n")
        return
    shutil.copytree(good, cache)
    (cache / loader._VERIFIED_FILE).unlink(missing_ok=True)
    # The step kernel the printer calls first: the entry numba loads for it.
    nbc, = [p for p in _kernel_files(cache, "stepgen.generate_steps_kernel-")
            if p.suffix == ".nbc"]
    data = nbc.read_bytes()
    if kind == "truncated":
        nbc.write_bytes(b"")
    elif kind == "garbage":
        nbc.write_bytes((bytes(range(256)) * (len(data) // 256 + 1))[:len(data)])
    elif kind == "half-length":
        nbc.write_bytes(data[:len(data) // 2])
    elif kind == "bit-flipped":
        # One bit of the compiled object's header: LLVM aborts the process loading it.
        flipped = bytearray(data)
        flipped[data.index(b"\x7fELF") + 1] ^= 0x10
        nbc.write_bytes(bytes(flipped))
    elif kind == "wrong-kernel":
        # The stepgen entries compiled from the poisoned copy, in place of the good ones,
        # their indexes carrying the good sources' stamp (numba hashes the source file):
        # what a damaged index or a cache from another build looks like to numba.
        _, bad_cache = poisoned
        target = nbc.parent
        stamps = {old.name: _read_index(old)[1] for old in _kernel_files(cache, "stepgen.")
                  if old.suffix == ".nbi"}
        for old in _kernel_files(cache, "stepgen."):
            old.unlink()
        for new in _kernel_files(bad_cache, "stepgen."):
            if new.suffix == ".nbi":
                version, _, overloads = _read_index(new)
                with open(target / new.name, "wb") as fh:
                    pickle.dump(version, fh, protocol=-1)
                    fh.write(pickle.dumps((stamps[new.name], overloads), protocol=-1))
            else:
                shutil.copy2(new, target / new.name)
    else:
        raise ValueError(kind)


def _start(service: Service, monkeypatch) -> Service:
    # The service must use its state directory's cache, not the session's shared one.
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    return service.start()


def _full_log(service: Service) -> str:
    return service.log_path.read_text(errors="replace")


def _set_and_clear_target(api) -> None:
    r = api.post("/api/v1/heaters/extruder/target", json={"target": 60})
    assert r.status_code == 200, r.text
    assert api.status()["printer"]["target_hotend_temp"] == 60.0
    assert api.post("/api/v1/heaters/extruder/target", json={"target": 0}).status_code == 200


def _short_print(api, tmp_path: Path) -> dict:
    job = tmp_path / "short.gcode"
    job.write_bytes(SHORT_JOB)
    assert api.upload(job).status_code in (200, 201)
    r = api.post("/api/v1/print", json={"file": "short.gcode"})
    assert r.status_code in (200, 202), r.text
    done = api.wait_for(lambda s: s["job"] is not None
                        and s["job"]["state"] in ("completed", "error", "cancelled"),
                        timeout_s=60, what="the short job to end")
    assert done["job"]["state"] == "completed", done
    return done


DAMAGE = {
    "truncated": "EOFError",
    "garbage": "UnpicklingError",
    "half-length": "UnpicklingError",
    "bit-flipped": "crashed the self-test process (SIGABRT)",
    "file": "a file, not a directory",
    "wrong-kernel": "stepgen kernels disagree with their reference",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_kind_of_damage_is_found_before_the_kernels_are_used(kind, good_cache, poisoned,
                                                                   tmp_path):
    # What the service checks before it loads a cache: the directory itself, then the
    # self-test child on it, which loads (not compiles) every cached kernel. The
    # recovery that follows is one path for every reason, run end to end below.
    cache = tmp_path / loader.CACHE_NAME
    _damage(kind, good_cache, cache, poisoned)
    reason = loader.cache_problem(cache)
    if reason is None:
        reason = loader.probe(cache, timeout_s=COMPILE_WAIT_S)
    assert reason is not None and DAMAGE[kind] in reason, reason
    assert "Traceback" not in reason


# One damage of the cached files and one of the cached code: each costs a full compile.
@pytest.mark.parametrize("kind", ["truncated", "wrong-kernel"])
def test_damaged_kernel_cache_is_recompiled_before_anything_heats(
        kind, good_cache, poisoned, service_factory, api_for, monkeypatch, tmp_path):
    svc = service_factory()
    svc.state_dir.mkdir(mode=0o700)
    cache = svc.state_dir / loader.CACHE_NAME
    _damage(kind, good_cache, cache, poisoned)
    _start(svc, monkeypatch)
    api = api_for(svc)
    api.wait_for(lambda s: s["state"] != "error" and s.get("printer") is not None,
                 timeout_s=COMPILE_WAIT_S, what="the control process with its kernels")

    log = _full_log(svc)
    lines = [m for m in DAMAGE_LINE.finditer(log)]
    assert len(lines) == 1, log
    where, reason, fresh = lines[0].groups()
    assert where == str(cache) and fresh == str(cache)
    assert DAMAGE[kind] in reason, reason
    assert "Traceback" not in log, log
    # The damaged cache is kept aside for inspection; the new one passed its self-test.
    assert (svc.state_dir / (loader.CACHE_NAME + loader.DAMAGED_SUFFIX)).exists()
    assert (cache / kernels._FINGERPRINT_FILE).exists()
    assert loader._verified(cache)

    _set_and_clear_target(api)
    if kind in ("wrong-kernel", "truncated"):
        # The step kernel damaged in the cache drives the steppers to the right place.
        done = _short_print(api, tmp_path)
        assert done["printer"]["position"][:3] == pytest.approx([31.25, 45.5, 5.0], abs=0.01)
    if kind == "truncated":
        # Recovered for good: the next start loads the checked cache, nothing to report.
        svc.stop()
        before = len(_full_log(svc))
        svc.start()
        api_for(svc).wait_for(lambda s: s.get("printer") is not None, timeout_s=60,
                              what="the restarted control process")
        assert "is damaged" not in _full_log(svc)[before:]


class _InstalledCopy(Service):
    """The service run from another installation of the package (`source_root`)."""

    source_root: Path

    def start(self, wait: bool = True) -> "Service":
        self.write_config()
        if not (self.state_dir / "printhost.json").exists():
            self.add_users()
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        env["PYTHONPATH"] = str(self.source_root)
        self.proc = subprocess.Popen(
            printhost_cmd("serve", "--config", str(self.config_path), "--state-dir",
                          str(self.state_dir)),
            stdout=log, stderr=subprocess.STDOUT, cwd=self.source_root, env=env,
            start_new_session=True)
        if wait:
            self.wait_healthy()
        return self


def test_kernels_that_fail_after_a_fresh_compile_keep_heaters_off(poisoned, api_for,
                                                                  tmp_path):
    root, bad_cache = poisoned
    svc = _InstalledCopy(tmp_path / "svc")
    svc.root.mkdir()
    svc.source_root = root
    svc.state_dir.mkdir(mode=0o700)
    # Its own cache, so the first probe loads rather than compiles.
    shutil.copytree(bad_cache, svc.state_dir / loader.CACHE_NAME)
    try:
        svc.start()
        api = api_for(svc)
        st = api.wait_for(lambda s: "kernels unusable" in (s.get("error") or ""),
                          timeout_s=COMPILE_WAIT_S, what="the kernels to be refused")
        assert st["state"] == "error"
        assert "stepgen kernels disagree with their reference" in st["error"]
        log = _full_log(svc)
        assert len(DAMAGE_LINE.findall(log)) == 1, log
        assert "fail their self-test after a fresh compile" in log
        assert "Traceback" not in log, log
        r = api.post("/api/v1/heaters/extruder/target", json={"target": 60})
        assert r.status_code == 503 and "kernels unusable" in r.text, r.text
        assert api.post("/api/v1/heaters/extruder/target",
                        json={"target": 0}).status_code == 200
        job = tmp_path / "short.gcode"
        job.write_bytes(SHORT_JOB)
        api.upload(job)
        r = api.post("/api/v1/print", json={"file": "short.gcode"})
        assert r.status_code == 503, r.text
    finally:
        svc.kill_all()
