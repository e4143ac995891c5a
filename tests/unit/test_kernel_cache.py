"""The kernel cache: stale kernels are dropped (the source fingerprint), and a cache
that cannot be used is detected and replaced (`kernels.loader`).

The whole recovery, from a damaged cache to a printing service, is in
tests/fault/test_kernel_cache_faults.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from printhost.control import kernels
from printhost.control.kernels import loader


def test_stale_cached_kernels_are_deleted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    nested = tmp_path / "work_main_printhost_control_kernels"
    nested.mkdir()
    ours = [nested / "stepgen.generate_steps_kernel-10.py311.nbi",
            nested / "plan_kernel.run-5.py311.1.nbc"]
    theirs = nested / "otherproject.kernel-1.py311.nbi"
    for f in (*ours, theirs):
        f.write_bytes(b"cached")
    (tmp_path / kernels._FINGERPRINT_FILE).write_text("from another version")

    assert kernels.drop_stale_cache() is True
    assert not any(f.exists() for f in ours)
    assert theirs.exists()              # only printhost's own kernels are touched
    # The fingerprint now matches: a second call (the next start) keeps the cache.
    ours[0].write_bytes(b"fresh")
    assert kernels.drop_stale_cache() is False
    assert ours[0].exists()


def test_fingerprint_covers_every_kernel_source():
    files = kernels._module_files()
    assert all(f.is_file() for f in files)
    names = {f.name for f in files}
    assert {"stepgen.py", "position.py", "plan_kernel.py", "plan_lookahead.py", "plan_ops.py",
            "trapq.py", "stepcompress.py"} <= names


def test_configure_cache_checks_the_fingerprint_of_the_directory_it_sets(tmp_path):
    """The state directory's cache is guarded, not only the one in effect at import."""
    cache = tmp_path / "numba-cache"
    nested = cache / "kernels_0123"
    nested.mkdir(parents=True)
    stale = nested / "stepgen.generate_steps_kernel-383.py311.1.nbc"
    stale.write_bytes(b"compiled from other sources")
    (cache / kernels._FINGERPRINT_FILE).write_text("from another version")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    script = ("import sys\n"
              "from printhost.control.kernels import configure_cache\n"
              "assert configure_cache(sys.argv[1]) is True\n")
    subprocess.run([sys.executable, "-c", script, str(cache)], env=env, check=True,
                   capture_output=True, text=True)
    assert not stale.exists()
    assert (cache / kernels._FINGERPRINT_FILE).read_text() == \
        kernels._fingerprint(kernels._module_files())


def test_drop_stale_cache_of_an_explicit_directory(tmp_path):
    stale = tmp_path / "sub" / "trapq._build_kernel-197.py311.nbi"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    assert kernels.drop_stale_cache(tmp_path) is True
    assert not stale.exists()
    stale.write_bytes(b"new")
    assert kernels.drop_stale_cache(tmp_path) is False      # the fingerprint now matches
    assert stale.exists()


# --------------------------------------------------------------------------- detection

def test_a_file_where_the_cache_directory_should_be(tmp_path):
    path = tmp_path / "numba-cache"
    path.write_bytes(b"\x00" * 10)
    assert loader.cache_problem(path) == "a file, not a directory"
    assert loader.cache_problem(tmp_path / "dangling") is None       # created when missing
    assert (tmp_path / "dangling").is_dir()
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert loader.cache_problem(tmp_path / "link") == "a dangling symbolic link"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any directory")
@pytest.mark.parametrize("mode", [0o500, 0o300, 0o000])
def test_unreadable_or_read_only_cache_directory(tmp_path, mode):
    path = tmp_path / "numba-cache"
    path.mkdir()
    path.chmod(mode)
    try:
        assert loader.cache_problem(path) is not None
    finally:
        path.chmod(0o700)


def test_an_immutable_cache_directory_is_read_only_even_for_root(tmp_path):
    """`chattr +i` makes a directory read-only for every user, root included (the case
    of a cache on a read-only mount, which root cannot write either)."""
    path = tmp_path / "numba-cache"
    path.mkdir()
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) \
        if shutil.which("chattr") else None
    if made is None or made.returncode != 0:
        pytest.skip("chattr +i is not available on this file system: "
                    + (made.stderr.strip() if made is not None else "no chattr"))
    try:
        assert loader.cache_problem(path) is not None
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_digest_follows_every_byte_but_not_printhosts_markers(tmp_path):
    sub = tmp_path / "kernels_0123"
    sub.mkdir()
    nbc = sub / "stepgen.generate_steps_kernel-383.py311.1.nbc"
    nbc.write_bytes(b"\x01" * 100)
    first = loader.cache_digest(tmp_path)
    (tmp_path / kernels._FINGERPRINT_FILE).write_text("x")
    loader._mark_verified(tmp_path)
    assert loader.cache_digest(tmp_path) == first
    assert loader._verified(tmp_path)
    nbc.write_bytes(b"\x01" * 50 + b"\x03" + b"\x01" * 49)         # one flipped bit
    assert loader.cache_digest(tmp_path) != first
    assert not loader._verified(tmp_path)


def test_fresh_directory_moves_the_damaged_one_aside(tmp_path):
    base = tmp_path / "numba-cache"
    base.write_bytes(b"garbage")                  # a file where the directory should be
    older = tmp_path / ("numba-cache" + loader.DAMAGED_SUFFIX)
    older.mkdir()
    (older / "old.nbc").write_bytes(b"old")
    fresh = loader._fresh_directory(base)
    assert fresh == base and base.is_dir() and not any(base.iterdir())
    assert older.read_bytes() == b"garbage"       # the latest damage is kept, once
    # A damaged directory is moved aside the same way.
    (base / "x.nbc").write_bytes(b"bad")
    assert loader._fresh_directory(base) == base
    assert (older / "x.nbc").read_bytes() == b"bad" and not any(base.iterdir())


def test_no_writable_place_for_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert loader._fresh_directory(Path("/proc/printhost-numba-cache")) is None


def _kernel_index(cache: Path, dispatcher) -> Path:
    """Where numba keeps `dispatcher`'s index inside the cache directory `cache`."""
    from numba.core.caching import UserProvidedCacheLocator
    source = dispatcher.py_func.__code__.co_filename
    sub = UserProvidedCacheLocator.get_suitable_cache_subpath(source)
    return cache / sub / dispatcher._cache._cache_file._index_name


def test_probe_reports_a_garbage_index_in_one_line(tmp_path):
    from printhost.control.kernels import trapq
    kernels.drop_stale_cache(tmp_path)            # a current fingerprint: the file stays
    index = _kernel_index(tmp_path, trapq._build_kernel)
    index.parent.mkdir(parents=True)
    index.write_bytes(bytes(range(256)))
    started = time.monotonic()
    problem = loader.probe(tmp_path)
    assert problem is not None and "\n" not in problem
    assert problem.startswith("UnpicklingError"), problem
    assert time.monotonic() - started < 30.0


def test_probe_stops_when_asked(tmp_path):
    with pytest.raises(loader._Stopped):
        loader.probe(tmp_path, should_stop=lambda: True)


def test_load_kernels_refuses_when_no_cache_can_be_made(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/proc/printhost-numba-cache")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    result = loader.load_kernels(tmp_path)
    assert not result.ok
    assert "no directory to compile into" in result.reason
    assert os.environ["NUMBA_CACHE_DIR"] == "/proc/printhost-numba-cache"
