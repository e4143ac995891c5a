"""Compiled inner loops of the step pipeline.

Turning planned moves into stepper pulses is the one place in the print host where
Python's per-operation cost matters: a fast print asks for tens of thousands of
steps per second per motor, each found by solving for the moment a motor position
crosses a step boundary, and then packed into the MCU's `queue_step` commands. The
submodules keep that work in numba-compiled functions over plain numpy arrays:

- `trapq`: the move-segment array every kernel reads (one row per constant-
  acceleration phase of a move).
- `position`: a stepper's position over time from those segments, including
  input shaping and pressure advance.
- `stepgen`: the step times and directions of that position.
- `steppers`: stepper models and the Python calls into `position` and `stepgen`.
- `stepcompress`: packing step times into (interval, count, add) triples.
- `plan`: `printhost batch`'s compiled planner (interpreter, toolhead and
  lookahead for a whole file), with `plan_ops`, `plan_kernel` and
  `plan_lookahead`.
- `heater`: the heaters' PID and watermark control laws, with their references.
- `reference`: slow, plain-Python statements of the same contracts, which the
  tests hold the compiled kernels to.

Compiled code is cached on disk (numba's `cache=True`), because compiling the
kernels from scratch takes seconds and the control process should not pay that on
every start. The cache lives next to the sources unless `configure_cache` points it
elsewhere. This package module deliberately imports neither numba nor the
submodules, so that `configure_cache` can run before any kernel is defined.

numba checks a cached function against its own source file only. Kernels call
kernels in other modules (`stepgen` those of `position`, `plan_kernel` those of
`plan_lookahead`) and read constants of others (`trapq`, `plan_ops`), and a cached
caller would keep the old version of what it compiled in. So this package
fingerprints the sources of every kernel module together and, when the fingerprint
differs from the one stored beside the cache, deletes this package's cached kernels
first: an edit anywhere, or a new version, always recompiles. That check runs on
import for the cache then in effect, and again for the directory `configure_cache`
or `loader.load_kernels` (the control process, with the state directory's cache)
points numba at.

`loader` loads the kernels at control-process start-up, replacing a damaged cache,
and `selftest` holds every family to its reference before the printer is built.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Every module that defines cached numba functions; they must load after the cache is set.
_KERNEL_MODULES = ("printhost.control.kernels.stepgen", "printhost.control.kernels.position",
                   "printhost.control.kernels.stepcompress",
                   "printhost.control.kernels.plan_kernel",
                   "printhost.control.kernels.plan_lookahead", "printhost.control.kernels.trapq",
                   "printhost.control.kernels.heater",
                   "printhost.control.gcode_bulk", "printhost.mcu.fastencode")


def configure_cache(directory: str | os.PathLike[str]) -> bool:
    """Direct numba's on-disk cache to `directory` unless NUMBA_CACHE_DIR is already set.

    An explicit NUMBA_CACHE_DIR in the environment wins, so an operator can always
    relocate the cache. numba fixes a compiled function's cache location when the
    function is defined, i.e. when its module is imported, so this must run before
    the kernel submodules are imported; called later it would silently have no
    effect, which is why that case raises instead.

    Returns True if this call set the directory, False if the environment already
    chose one.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return False
    loaded = [name for name in _KERNEL_MODULES if name in sys.modules]
    if loaded:
        raise RuntimeError("configure_cache must be called before importing the kernel "
                           f"modules (already imported: {', '.join(loaded)})")
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        # numba reads its environment once at import; make it notice the change.
        numba_config.reload_config()
    drop_stale_cache(path)
    return True


# --------------------------------------------------------------------------- stale caches

_FINGERPRINT_FILE = "printhost-kernels.fingerprint"


# Modules whose source is compiled into cached kernels: those defining them, and
# `plan_ops`, whose constants the planner kernel compiles in.
_FINGERPRINTED = _KERNEL_MODULES + ("printhost.control.kernels.plan_ops",)


def _module_files() -> list[Path]:
    """Source files of every module that ends up in cached kernels."""
    root = Path(__file__).resolve().parents[3]          # the directory holding `printhost/`
    return [root.joinpath(*name.split(".")).with_suffix(".py") for name in _FINGERPRINTED]


def _fingerprint(files: list[Path]) -> str:
    import hashlib
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<missing>")
    return digest.hexdigest()


def _cache_dirs(files: list[Path]) -> list[Path]:
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom:
        return [Path(custom)]
    return sorted({path.parent / "__pycache__" for path in files})


def drop_stale_cache(directory: str | os.PathLike[str] | None = None) -> bool:
    """Delete cached kernels compiled from other sources; True if any were removed.

    Checks `directory`, or else the cache numba would use now (NUMBA_CACHE_DIR, or
    the package's `__pycache__`). Only the cache files of printhost's own kernel
    modules are touched. Failures (a read-only cache) are ignored here: numba then
    recompiles in memory, and `loader` replaces a cache it cannot write.
    """
    files = _module_files()
    current = _fingerprint(files)
    stems = tuple(f"{path.stem}." for path in files)
    removed = False
    dirs = [Path(directory)] if directory is not None else _cache_dirs(files)
    for cache in dirs:
        marker = cache / _FINGERPRINT_FILE
        try:
            if marker.read_text() == current:
                continue
        except OSError:
            pass
        if cache.is_dir():
            for cached in cache.rglob("*.nb[ic]"):
                if cached.name.startswith(stems):
                    try:
                        cached.unlink()
                        removed = True
                    except OSError:
                        pass
        try:
            # Never create directories outside the package or the configured cache.
            if cache.parent.is_dir():
                cache.mkdir(exist_ok=True)
                marker.write_text(current)
        except OSError:
            pass
    return removed


drop_stale_cache()

