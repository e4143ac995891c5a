#!/usr/bin/env python3
"""Build the test suite's sample prints: our own STL models, sliced by a real slicer.

The parser, streamer and time-estimate tests need G-code that looks like what users
upload (slicer header comments, M73 progress, retractions, the embedded config
block), not a hand-written toy, yet the repository should not carry a third party's
model. So the models are generated here and PrusaSlicer slices them; the result is
checked against the limits the tests assume (bed size, command set, file size)
before it is written.

  cube   a 20 x 20 x 10 mm block with a vertical 10 mm hole through it, which gives
         perimeters, infill, solid top/bottom layers and travel between islands in a
         few minutes of print time; sliced with tests/data/cube.slicer.ini.
  bench  a 60 x 60 x 5 mm plate with rounded corners and nine round holes of three
         sizes, sliced with the same settings plus tests/data/bench.slicer.ini
         (15 % gyroid infill). Its hole walls, corners and infill are all curves,
         which come out as tens of thousands of short moves, the load a motion
         planner finds hardest; the file is about 1.7 MB, for benchmarks.

usage: tools/make_test_model.py [--model cube|bench] [--out-dir tests/data]
                                [--slicer prusa-slicer] [--stl-only]
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

# The bench plate: a 3 x 3 grid of 20 mm square cells, each with a round hole at
# its centre (diameters in mm, row by row from the front left), outer corners
# rounded. Thin, because 15 % gyroid infill on this footprint costs about 50 kB of
# G-code per layer; 25 layers land the file in the size range below.
BENCH_SIDE_MM = 60.0
BENCH_HEIGHT_MM = 5.0
BENCH_CORNER_RADIUS_MM = 6.0
BENCH_HOLE_DIAMETERS_MM = (
    (6.0, 10.0, 6.0),
    (10.0, 14.0, 10.0),
    (6.0, 10.0, 6.0),
)
# Per cell; a multiple of 8 like SEGMENTS, for the same reason.
BENCH_SEGMENTS = 64

BED_X_MM = 235.0
BED_Y_MM = 235.0
MAX_Z_MM = 250.0
MAX_GCODE_BYTES = 2 * 1024 * 1024
# The bench file should be big enough to time (over 1.2 MiB) but stay under 1.95 MB.
BENCH_MIN_GCODE_BYTES = 1_258_292
BENCH_MAX_GCODE_BYTES = 1_950_000
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


def _square_offset(k: int, half: float, n: int) -> float:
    """Offset along a cell side where the ray k steps from that side's normal meets it.

    Odd in k by construction and exact at the corners, so two cells sharing a side
    compute bit-identical points on it (the caps then join without a seam).
    """
    if abs(k) == n // 8:
        t = half
    else:
        t = half * math.tan(2 * math.pi * abs(k) / n)
    return t if k >= 0 else -t


def _rounded(cx: float, cy: float, px: float, py: float) -> tuple[float, float]:
    """Move a point of the plate's square outline onto a rounded corner if it is in one.

    The ray from the hole centre (cx, cy) through (px, py) is followed to where it
    meets the corner arc instead; the plate is convex, so that is its only crossing.
    """
    w, r = BENCH_SIDE_MM, BENCH_CORNER_RADIUS_MM
    for x0, ox in ((0.0, r), (w, w - r)):
        for y0, oy in ((0.0, r), (w, w - r)):
            if abs(px - x0) < r and abs(py - y0) < r:
                dx, dy = px - cx, py - cy
                length = math.hypot(dx, dy)
                dx, dy = dx / length, dy / length
                fx, fy = cx - ox, cy - oy
                b = fx * dx + fy * dy
                t = -b + math.sqrt(b * b - (fx * fx + fy * fy - r * r))
                return cx + t * dx, cy + t * dy
    return px, py


def bench_triangles() -> list[tuple[Vec, Vec, Vec]]:
    """Facets of the bench plate, each wound counter-clockwise seen from outside.

    The top face is built cell by cell: every cell is the cube's construction again
    (hole circle and cell square paired ray by ray), with the square's points on the
    plate's corners moved onto the rounding arc. Sides shared by two cells carry the
    same points from both, in opposite directions, so they cancel out; the edges left
    over are the plate's outline and the hole rims, and each becomes a vertical wall.
    The bottom face is the top face moved down to z = 0 with its winding reversed.
    """
    n = BENCH_SEGMENTS
    cells = len(BENCH_HOLE_DIAMETERS_MM)
    half = BENCH_SIDE_MM / cells / 2
    z0, z1 = 0.0, BENCH_HEIGHT_MM
    top: list[tuple[tuple[float, float], ...]] = []
    for row, diameters in enumerate(BENCH_HOLE_DIAMETERS_MM):
        for col, diameter in enumerate(diameters):
            cx, cy = (2 * col + 1) * half, (2 * row + 1) * half
            radius = diameter / 2
            inner, outer = [], []
            for i in range(n):
                a = 2 * math.pi * i / n
                side, k = divmod((i + n // 8) % n, n // 4)
                t = _square_offset(k - n // 8, half, n)
                px, py = ((cx + half, cy + t), (cx - t, cy + half),
                          (cx - half, cy - t), (cx + t, cy - half))[side]
                px, py = _rounded(cx, cy, px, py)
                inner.append((round(cx + radius * math.cos(a), 6),
                              round(cy + radius * math.sin(a), 6)))
                outer.append((round(px, 6), round(py, 6)))
            for i in range(n):
                j = (i + 1) % n
                top.append((inner[i], outer[i], outer[j]))
                top.append((inner[i], outer[j], inner[j]))

    edges = set()
    for tri in top:
        for e in range(3):
            edges.add((tri[e], tri[(e + 1) % 3]))
    tris: list[tuple[Vec, Vec, Vec]] = []
    for a, b, c in top:
        tris.append(((*a, z1), (*b, z1), (*c, z1)))
        tris.append(((*a, z0), (*c, z0), (*b, z0)))
    for a, b, c in top:
        for p, q in ((a, b), (b, c), (c, a)):
            if (q, p) not in edges:
                tris.append(((*p, z0), (*q, z0), (*q, z1)))
                tris.append(((*p, z0), (*q, z1), (*p, z1)))
    return tris


def bench_expected_volume() -> float:
    w, r, h = BENCH_SIDE_MM, BENCH_CORNER_RADIUS_MM, BENCH_HEIGHT_MM
    holes = sum(math.pi * (d / 2) ** 2 for row in BENCH_HOLE_DIAMETERS_MM for d in row)
    return (w * w - (4 - math.pi) * r * r - holes) * h


def cube_expected_volume() -> float:
    return SIDE_MM ** 2 * HEIGHT_MM - math.pi * (HOLE_DIAMETER_MM / 2) ** 2 * HEIGHT_MM


def open_edges(tris: list[tuple[Vec, Vec, Vec]]) -> int:
    """Directed edges not matched by exactly one reverse edge; 0 for a watertight mesh."""
    count: dict[tuple[Vec, Vec], int] = {}
    for tri in tris:
        for e in range(3):
            key = (tri[e], tri[(e + 1) % 3])
            count[key] = count.get(key, 0) + 1
    return sum(1 for (p, q), c in count.items() if c != 1 or count.get((q, p)) != 1)


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


def check_gcode(text: str, min_bytes: int = 0, max_bytes: int = MAX_GCODE_BYTES) -> list[str]:
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
    size = len(text.encode())
    if size > max_bytes:
        problems.append(f"file is {size} bytes, over {max_bytes}")
    if size < min_bytes:
        problems.append(f"file is {size} bytes, under {min_bytes}")
    return problems


def estimated_time(text: str) -> str | None:
    """The slicer's own estimate, as written in its footer comment."""
    m = re.search(r"^; estimated printing time \(normal mode\) = (.+)$", text, re.M)
    return m.group(1).strip() if m else None


def slicer_version(slicer: str) -> str:
    out = subprocess.run([slicer, "--help"], capture_output=True, text=True, timeout=120)
    m = re.search(r"PrusaSlicer-\S+", out.stdout + out.stderr)
    return m.group(0) if m else "unknown"


def slice_model(slicer: str, stl: Path, inis: list[Path], out: Path) -> None:
    # A throwaway data dir keeps the user's own PrusaSlicer profiles (if any) out of
    # the result: only the checked-in ini files decide the settings. Later files
    # override earlier ones.
    with tempfile.TemporaryDirectory() as datadir:
        cmd = [slicer, "--datadir", datadir, "--loglevel", "1"]
        for ini in inis:
            cmd += ["--load", str(ini)]
        cmd += ["--center", f"{BED_X_MM / 2:g},{BED_Y_MM / 2:g}",
                "--export-gcode", "--output", str(out), str(stl)]
        env = dict(os.environ)
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0 or not out.exists():
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"{slicer} failed with exit code {result.returncode}")


# name -> (facets, expected volume, settings files in load order, G-code size limits)
MODELS = {
    "cube": (model_triangles, cube_expected_volume, ("cube.slicer.ini",), (0, MAX_GCODE_BYTES)),
    "bench": (bench_triangles, bench_expected_volume, ("cube.slicer.ini", "bench.slicer.ini"),
              (BENCH_MIN_GCODE_BYTES, BENCH_MAX_GCODE_BYTES)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="cube",
                    help="which model to build (default: cube)")
    ap.add_argument("--out-dir", type=Path, default=REPO / "tests" / "data")
    ap.add_argument("--slicer", default="prusa-slicer",
                    help="PrusaSlicer executable (Debian package prusa-slicer)")
    ap.add_argument("--stl-only", action="store_true", help="write <model>.stl and stop")
    args = ap.parse_args(argv)

    name = args.model
    make_triangles, expected_volume, ini_names, (min_bytes, max_bytes) = MODELS[name]
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tris = make_triangles()
    volume = signed_volume(tris)
    expected = expected_volume()
    # The polygons stand slightly inside the true circles and arcs; 1% covers that.
    if not abs(volume - expected) < 0.01 * expected:
        raise SystemExit(f"mesh volume {volume:.1f} mm^3, expected about {expected:.1f}")
    gaps = open_edges(tris)
    if gaps:
        raise SystemExit(f"mesh is not watertight: {gaps} unmatched edges")
    stl = out_dir / f"{name}.stl"
    write_ascii_stl(stl, tris, name=f"printhost_{name}")
    print(f"wrote {stl} ({len(tris)} facets, {volume:.1f} mm^3)")
    if args.stl_only:
        return 0

    slicer = shutil.which(args.slicer)
    if slicer is None:
        raise SystemExit(f"{args.slicer} not found; on Debian: apt-get install prusa-slicer")
    inis = [out_dir / ini for ini in ini_names]
    gcode = out_dir / f"{name}.gcode"
    with tempfile.TemporaryDirectory() as tmp:
        sliced = Path(tmp) / f"{name}.gcode"
        slice_model(slicer, stl, inis, sliced)
        text = sliced.read_text()
        problems = check_gcode(text, min_bytes, max_bytes)
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
