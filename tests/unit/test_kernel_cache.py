"""Cached kernels compiled from other sources are dropped before any kernel loads."""

from __future__ import annotations

from printhost.control import kernels


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
