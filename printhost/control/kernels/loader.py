"""Loading the compiled kernels at control-process start-up, recovering from a bad cache.

numba trusts its on-disk cache: a truncated or garbage `.nbc`/`.nbi` file makes the
first call of a kernel raise whatever unpickling or LLVM raised, a flipped bit can
load as code that computes something else or crashes the process, and a cache path
that is a file, or a directory that cannot be read or written, stops numba from
caching at all or sends it elsewhere. None of that may stop the printer for good,
and none of it may let the printer run on a kernel that is not the one in the
sources. So `load_kernels`:

1. picks the cache directory: `NUMBA_CACHE_DIR` when the operator set one, else
   `<state dir>/numba-cache`, and deletes cached kernels compiled from other
   sources (`kernels.drop_stale_cache`, the source fingerprint);
2. unless the directory holds exactly the files that last passed (a digest of
   their contents is kept beside them), runs `kernels.selftest` in a child process
   on it. The child loads or compiles every kernel family and checks each against
   its reference, so damage that raises, crashes or hangs, or that computes wrong
   results, is found in a process the printer does not depend on;
3. if the directory cannot be used or the probe fails, logs one line saying what is
   wrong, moves the directory aside (to `numba-cache.damaged`, replacing an older
   one) and compiles into a fresh one, again through the probe. Should the freshly
   compiled kernels fail their self-test too, the kernels are refused and the
   control process runs an `OfflinePrinter` that says why: nothing heats or moves;
4. points numba at the good directory and runs the same self-tests in this process,
   which now only loads what the probe checked.

The probe costs a process start only when the cache changed: on a first start (when
the probe's compile is the compile this process would have done) and after damage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from printhost.childproc import signal_name
from printhost.control import kernels

log = logging.getLogger("printhost.control.kernels")

CACHE_NAME = "numba-cache"
DAMAGED_SUFFIX = ".damaged"
_VERIFIED_FILE = "printhost-kernels.verified"
_OUR_FILES = (_VERIFIED_FILE, kernels._FINGERPRINT_FILE)

# A compile of every family takes about 20 s on two laptop cores and several times
# that on a Pi; a probe running this long is stuck (damaged code can loop).
PROBE_TIMEOUT_S = 900.0
_POLL_S = 0.05
_PACKAGE_ROOT = Path(kernels.__file__).resolve().parents[3]     # holds `printhost/`


@dataclass
class KernelLoad:
    """What `load_kernels` found and did."""

    ok: bool                         # every family passed its self-test in this process
    cache_dir: Path | None           # the directory numba now uses
    reason: str | None = None        # why the kernels are refused (ok False)
    damage: str | None = None        # what was wrong with the cache, if it was replaced
    timings: dict[str, float] = field(default_factory=dict)   # self-test seconds per family


class _Stopped(Exception):
    pass


def cache_problem(directory: Path) -> str | None:
    """Why `directory` cannot serve as numba's cache (creating it if missing), or None."""
    try:
        if directory.is_symlink() and not directory.exists():
            return "a dangling symbolic link"
        if directory.exists() and not directory.is_dir():
            return "a file, not a directory"
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created: {exc.strerror or exc}"
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        return "not readable and writable"
    try:
        # What numba's locator does before it accepts a directory.
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        return f"not writable: {exc.strerror or exc}"
    return None


def cache_digest(directory: Path) -> str:
    """A digest of every cached file's name and contents (printhost's markers excluded)."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.name in _OUR_FILES or not path.is_file():
            continue
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _verified(directory: Path) -> bool:
    try:
        return (directory / _VERIFIED_FILE).read_text() == cache_digest(directory)
    except OSError:
        return False


def _mark_verified(directory: Path) -> None:
    try:
        (directory / _VERIFIED_FILE).write_text(cache_digest(directory))
    except OSError as exc:
        log.warning("cannot record the checked kernel cache in %s: %s", directory, exc)


def probe(directory: Path, should_stop: Callable[[], bool] = lambda: False,
          timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Run every self-test in a child process on cache `directory`; None if all pass,
    else one line saying what failed. Kernels missing from the cache are compiled
    into it. Raises _Stopped if `should_stop` turns true meanwhile."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(directory))
    # The child must test the very package this process runs, whatever its directory.
    script = (f"import sys; sys.path.insert(0, {str(_PACKAGE_ROOT)!r}); "
              "from printhost.control.kernels.selftest import main; sys.exit(main())")
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-c", script],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, env=env)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    code = child.wait(_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if should_stop():
                    raise _Stopped()
                if time.monotonic() > deadline:
                    return f"the kernel self-test did not finish in {timeout_s:.0f} s"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if code == 0:
            return None
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines()
                 if line.strip()]
    if code < 0:
        return f"loading the kernels crashed the self-test process ({signal_name(-code)})"
    return lines[-1].strip() if lines else f"the kernel self-test exited with status {code}"


def _set_numba_cache(directory: Path) -> None:
    os.environ["NUMBA_CACHE_DIR"] = str(directory)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        numba_config.reload_config()


def _fresh_directory(base: Path) -> Path | None:
    """Move `base` aside to `<base>.damaged` (dropping an older one) and recreate it;
    a new temporary directory if that is not possible; None if neither is."""
    aside = base.with_name(base.name + DAMAGED_SUFFIX)
    try:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, onerror=_make_removable)
        elif aside.exists() or aside.is_symlink():
            aside.unlink()
        if base.exists() or base.is_symlink():
            base.rename(aside)
        if cache_problem(base) is None:
            return base
    except OSError:
        pass
    try:
        return Path(tempfile.mkdtemp(prefix="printhost-numba-cache-"))
    except OSError:
        return None


def _make_removable(func, path, exc_info) -> None:
    """shutil.rmtree's error hook: a damaged cache may have lost its permissions."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        func(path)
    except OSError:
        pass


def default_cache_dir(state_dir: Path) -> Path:
    """The operator's NUMBA_CACHE_DIR, else the state directory's cache."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    return Path(chosen) if chosen else Path(state_dir) / CACHE_NAME


def load_kernels(state_dir: Path, should_stop: Callable[[], bool] = lambda: False,
                 probe_timeout_s: float = PROBE_TIMEOUT_S) -> KernelLoad:
    """Make every kernel family usable in this process, or say why it cannot be.

    Must run before any kernel module is imported. Never raises for a bad cache:
    the result's `ok` says whether the printer may be built on the kernels.
    """
    base = default_cache_dir(state_dir).expanduser()
    try:
        return _load(base, should_stop, probe_timeout_s)
    except _Stopped:
        return KernelLoad(False, None, "stopped while loading the kernels")


def compile_expected(state_dir: Path) -> bool:
    """Whether `load_kernels` will compile (no checked cache for these sources), judged
    without changing the cache: the supervisor says so while the control process starts."""
    directory = default_cache_dir(state_dir).expanduser()
    try:
        current = kernels._fingerprint(kernels._module_files())
        if (directory / kernels._FINGERPRINT_FILE).read_text() != current:
            return True
    except OSError:
        return True
    return not _verified(directory)


def verified_stamp(state_dir: Path) -> int | None:
    """When the kernel cache was last marked checked (`load_kernels` does at its end,
    once the kernels passed in the control process), as a value that changes then."""
    try:
        return (default_cache_dir(state_dir).expanduser() / _VERIFIED_FILE).stat().st_mtime_ns
    except OSError:
        return None


def compile_estimate() -> str:
    """How long compiling every kernel family takes here, roughly."""
    return "about 20 s" if platform.machine() in ("x86_64", "AMD64") else "a minute or more"


def _compile(directory: Path, why: str, should_stop: Callable[[], bool],
             probe_timeout_s: float) -> str | None:
    """`probe` with a log line when it starts and one when it ends."""
    log.info("compiling motion kernels (%s, %s)", why, compile_estimate())
    started = time.monotonic()
    failure = probe(directory, should_stop, probe_timeout_s)
    if failure is None:
        log.info("motion kernels compiled in %.1f s", time.monotonic() - started)
    return failure


def _load(base: Path, should_stop: Callable[[], bool], probe_timeout_s: float) -> KernelLoad:
    directory = base
    damage = cache_problem(directory)
    if damage is None:
        kernels.drop_stale_cache(directory)
        if not _verified(directory):
            first = not any(directory.rglob("*.nbi"))
            damage = _compile(directory, "first start" if first else "the cache changed",
                              should_stop, probe_timeout_s)
    if damage is not None:
        fresh = _fresh_directory(base)
        if fresh is None:
            reason = (f"kernel cache at {base} is unusable ({damage}) and no directory to "
                      "compile into can be created")
            log.error("%s; heaters and motion stay disabled", reason)
            return KernelLoad(False, None, reason, damage)
        directory = fresh
        log.error("kernel cache at %s is damaged (%s); recompiling into %s", base, damage,
                  directory)
        kernels.drop_stale_cache(directory)
        failure = _compile(directory, "replacing the damaged cache", should_stop,
                           probe_timeout_s)
        if failure is not None:
            reason = f"kernels fail their self-test after a fresh compile: {failure}"
            log.error("%s; heaters and motion stay disabled", reason)
            return KernelLoad(False, directory, reason, damage)
    _set_numba_cache(directory)
    from printhost.control.kernels import selftest
    try:
        timings = selftest.run_all()
    except Exception as exc:
        detail = " ".join(str(exc).split())
        reason = f"kernels failed their self-test: {type(exc).__name__}: {detail}"[:400]
        log.error("%s; heaters and motion stay disabled", reason)
        return KernelLoad(False, directory, reason, damage)
    _mark_verified(directory)
    return KernelLoad(True, directory, None, damage, timings)
