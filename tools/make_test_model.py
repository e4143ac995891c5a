#!/usr/bin/env python3
"""Build the test suite's sample print: our own STL model, sliced by a real slicer.

The parser, streamer and time-estimate tests need G-code that looks like what users
upload (slicer header comments, M73 progress, retractions, the embedded config
block), not a hand-written toy, yet the repository should not carry a third party's
model. So the model is generated here: a 20 x 20 x 10 mm block with a vertical
10 mm hole through it, which gives perimeters, infill, solid top/bottom layers and
travel between islands in a few minutes of print time. PrusaSlicer then slices it
with tests/data/cube.slicer.ini, and the result is checked against the limits the
tests assume (bed size, command set, file size) before it is written.

usage: tools/make_test_model.py [--out-dir tests/data] [--slicer prusa-slicer] [--stl-only]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SIDE_MM = 20.0
HEIGHT_MM = 10.0
HOLE_DIAMETER_MM = 10.0
# A multiple of 8, so the rays at 45, 135, ... degrees land exactly on the corners
# of the square and its outline stays a true square.
SEGMENTS = 64

BED_X_MM = 235.0
BED_Y_MM = 235.0
MAX_Z_MM = 250.0
MAX_GCODE_BYTES = 2 * 1024 * 1024
# Commands a generic Marlin printer and printhost's parser are expected to see in a
# normal print; anything else in the slicer's output means the config drifted.
ALLOWED_COMMANDS = {
    "G0", "G1", "G4", "G21", "G28", "G90", "G91", "G92",
    "M82", "M83", "M84", "M104", "M105", "M106", "M107", "M109", "M140", "M190",
    "M73", "M117", "M201", "M202", "M203", "M204", "M205", "M220", "M221", "M900",
}


Vec = tuple[float, float, float]


def _ring_points() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Matching points on the hole's circle and on the outer square, by angle.

    Each circle point is paired with the point where the same ray from the centre
    meets the square, so the annulus between them splits into quads without any
    vertex on one edge that the neighbouring face lacks (the mesh stays watertight).
    """
    half = SIDE_MM / 2
    radius = HOLE_DIAMETER_MM / 2
    inner, outer = [], []
    for i in range(SEGMENTS):
        a = 2 * math.pi * i / SEGMENTS
        c, s = math.cos(a), math.sin(a)
        scale = half / max(abs(c), abs(s))
        # Rounding makes shared vertices print identically in every facet.
        inner.append((round(half + radius * c, 6), round(half + radius * s, 6)))
        outer.append((round(half + scale * c, 6), round(half + scale * s, 6)))
    return inner, outer


def model_triangles() -> list[tuple[Vec, Vec, Vec]]:
    """Facets of the block with its hole, each wound counter-clockwise seen from outside."""
    inner, outer = _ring_points()
    z0, z1 = 0.0, HEIGHT_MM
    tris: list[tuple[Vec, Vec, Vec]] = []

    def quad(a: Vec, b: Vec, c: Vec, d: Vec) -> None:
        # a-b-c-d counter-clockwise from outside
        tris.append((a, b, c))
        tris.append((a, c, d))

    n = SEGMENTS
    for i in range(n):
        j = (i + 1) % n
        (ix0, iy0), (ix1, iy1) = inner[i], inner[j]
        (ox0, oy0), (ox1, oy1) = outer[i], outer[j]
        # top (+z): going from outer i to outer j is counter-clockwise seen from above
        quad((ix0, iy0, z1), (ox0, oy0, z1), (ox1, oy1, z1), (ix1, iy1, z1))
        # bottom (-z): same quad, reversed
        quad((ix0, iy0, z0), (ix1, iy1, z0), (ox1, oy1, z0), (ox0, oy0, z0))
        # outer wall faces away from the centre
        quad((ox0, oy0, z0), (ox1, oy1, z0), (ox1, oy1, z1), (ox0, oy0, z1))
        # hole wall faces the hole's axis
        quad((ix1, iy1, z0), (ix0, iy0, z0), (ix0, iy0, z1), (ix1, iy1, z1))
    return tris


def _normal(a: Vec, b: Vec, c: Vec) -> Vec:
    ux, uy, uz = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    vx, vy, vz = (c[0] - a[0], c[1] - a[1], c[2] - a[2])
    nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
    length = math.sqrt(nx * nx + ny * ny + nz * nz)
    return (nx / length, ny / length, nz / length)


def signed_volume(tris: list[tuple[Vec, Vec, Vec]]) -> float:
    """Enclosed volume; positive only if every facet is wound outward."""
    total = 0.0
    for a, b, c in tris:
        total += (a[0] * (b[1] * c[2] - b[2] * c[1])
                  - a[1] * (b[0] * c[2] - b[2] * c[0])
                  + a[2] * (b[0] * c[1] - b[1] * c[0]))
    return total / 6.0


def write_ascii_stl(path: Path, tris: list[tuple[Vec, Vec, Vec]], name: str = "printhost_cube") -> None:
    lines = [f"solid {name}"]
    for a, b, c in tris:
        # "+ 0.0" turns -0.0 into 0.0 so the file has no "-0.000000e+00" noise.
        nx, ny, nz = (component + 0.0 for component in _normal(a, b, c))
        lines.append(f"  facet normal {nx:.6e} {ny:.6e} {nz:.6e}")
        lines.append("    outer loop")
        for v in (a, b, c):
            lines.append(f"      vertex {v[0]:.6f} {v[1]:.6f} {v[2]:.6f}")
        lines.append("    endloop")
        lines.append("  endfacet")
    lines.append(f"endsolid {name}")
    path.write_text("\n".join(lines) + "\n")


def check_gcode(text: str) -> list[str]:
    """Problems that would make the file unfit as test data; empty when it is fine.

    Tracks G90/G91 and G92 so relative moves (the end script's Z lift) are checked
    at the position they really reach, not at the small offset they name.
    """
    problems: list[str] = []
    absolute = True
    pos = {"X": 0.0, "Y": 0.0, "Z": 0.0}
    limits = {"X": BED_X_MM, "Y": BED_Y_MM, "Z": MAX_Z_MM}
    word = re.compile(r"([A-Z])([-+]?[0-9]*\.?[0-9]+)")
    for lineno, raw in enumerate(text.splitlines(), 1):
        code = raw.split(";", 1)[0].strip().upper()
        if not code:
            continue
        cmd = code.split()[0]
        if cmd not in ALLOWED_COMMANDS:
            problems.append(f"line {lineno}: unexpected command {cmd!r}")
            continue
        if cmd == "G90":
            absolute = True
        elif cmd == "G91":
            absolute = False
        elif cmd == "G28":
            pos.update(X=0.0, Y=0.0, Z=0.0)
        elif cmd in ("G0", "G1", "G92"):
            for axis, value in word.findall(code[len(cmd):]):
                if axis not in pos:
                    continue
                v = float(value)
                pos[axis] = v if (absolute or cmd == "G92") else pos[axis] + v
                if cmd != "G92" and not 0.0 <= pos[axis] <= limits[axis]:
                    problems.append(f"line {lineno}: {axis}={pos[axis]:.3f} outside 0..{limits[axis]:g}")
    if len(text.encode()) > MAX_GCODE_BYTES:
        problems.append(f"file is {len(text.encode())} bytes, over {MAX_GCODE_BYTES}")
    return problems


def estimated_time(text: str) -> str | None:
    """The slicer's own estimate, as written in its footer comment."""
    m = re.search(r"^; estimated printing time \(normal mode\) = (.+)$", text, re.M)
    return m.group(1).strip() if m else None


def slicer_version(slicer: str) -> str:
    out = subprocess.run([slicer, "--help"], capture_output=True, text=True, timeout=120)
    m = re.search(r"PrusaSlicer-\S+", out.stdout + out.stderr)
    return m.group(0) if m else "unknown"


def slice_model(slicer: str, stl: Path, ini: Path, out: Path) -> None:
    # A throwaway data dir keeps the user's own PrusaSlicer profiles (if any) out of
    # the result: only the checked-in ini decides the settings.
    with tempfile.TemporaryDirectory() as datadir:
        cmd = [slicer, "--datadir", datadir, "--loglevel", "1", "--load", str(ini),
               "--center", f"{BED_X_MM / 2:g},{BED_Y_MM / 2:g}",
               "--export-gcode", "--output", str(out), str(stl)]
        env = dict(os.environ)
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0 or not out.exists():
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"{slicer} failed with exit code {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=REPO / "tests" / "data")
    ap.add_argument("--slicer", default="prusa-slicer",
                    help="PrusaSlicer executable (Debian package prusa-slicer)")
    ap.add_argument("--stl-only", action="store_true", help="write cube.stl and stop")
    args = ap.parse_args(argv)

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tris = model_triangles()
    volume = signed_volume(tris)
    expected = SIDE_MM ** 2 * HEIGHT_MM - math.pi * (HOLE_DIAMETER_MM / 2) ** 2 * HEIGHT_MM
    # The 64-gon hole is slightly smaller than the true circle; 1% covers that.
    if not abs(volume - expected) < 0.01 * expected:
        raise SystemExit(f"mesh volume {volume:.1f} mm^3, expected about {expected:.1f}")
    stl = out_dir / "cube.stl"
    write_ascii_stl(stl, tris)
    print(f"wrote {stl} ({len(tris)} facets, {volume:.1f} mm^3)")
    if args.stl_only:
        return 0

    slicer = shutil.which(args.slicer)
    if slicer is None:
        raise SystemExit(f"{args.slicer} not found; on Debian: apt-get install prusa-slicer")
    ini = out_dir / "cube.slicer.ini"
    gcode = out_dir / "cube.gcode"
    with tempfile.TemporaryDirectory() as tmp:
        sliced = Path(tmp) / "cube.gcode"
        slice_model(slicer, stl, ini, sliced)
        text = sliced.read_text()
        problems = check_gcode(text)
        if problems:
            for p in problems[:20]:
                print("  " + p, file=sys.stderr)
            raise SystemExit(f"sliced G-code failed {len(problems)} check(s); not written")
        shutil.copyfile(sliced, gcode)
    print(f"wrote {gcode} ({gcode.stat().st_size} bytes) with {slicer_version(slicer)}; "
          f"estimated print time {estimated_time(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
