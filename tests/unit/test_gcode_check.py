"""The upload check: what is G-code, decided from a bounded start of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from printhost.store.gcode_check import (
    DECIDE_LINES,
    INSPECT_BYTES,
    GCodeCheck,
    NotGCode,
    classify,
)
from tests import gcode_samples as samples

REPO = Path(__file__).resolve().parents[2]


def check(data: bytes, chunk: int = 64 * 1024) -> GCodeCheck:
    """Feed `data` the way the upload route does and return the check; raises NotGCode."""
    c = GCodeCheck()
    for i in range(0, len(data), chunk):
        c.feed(data[i:i + chunk])
        if c.decided:
            return c
    c.finish()
    return c


def refusal(data: bytes, chunk: int = 64 * 1024) -> str:
    with pytest.raises(NotGCode) as info:
        check(data, chunk)
    return str(info.value)


@pytest.mark.parametrize("slicer", sorted(samples.SLICERS))
@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_every_slicer_is_accepted_in_any_chunking(slicer, chunk):
    data = samples.SLICERS[slicer].encode()
    if chunk == 7:
        data = data[:300_000]  # enough to reach the commands, and quick
    check(data, chunk)


def test_thumbnails_beyond_64_kib_are_skipped_as_comments():
    data = samples.PRUSASLICER.encode()
    first_command = data.index(b"\nM73 P0")
    assert first_command > 64 * 1024
    check(data)


def test_the_repository_test_prints_are_accepted():
    for name in ("cube.gcode", "bench.gcode"):
        check((REPO / "tests" / "data" / name).read_bytes())


def test_small_handwritten_files_are_accepted():
    for text in ("G28\n", "G28", "M104 S50\nM81\n", "\ufeffG28\r\nG1 X10 Y10 F3000\r\n",
                 "N10 G28*18\nN11 G1 X10*99\n", "g28\ng1 x10 y10\n", "G1X10Y10E1F1200\n",
                 "; just one move\nG1 X5\n", "PRINT_START\nG28\nprint_end\n"):
        check(text.encode())


def test_an_empty_file_is_refused():
    assert refusal(b"") == "the file is empty"


def test_only_comments_and_blank_lines_are_refused():
    assert refusal(samples.COMMENTS_ONLY.encode()) == (
        "the file holds only comments and blank lines, no G-code commands")
    assert "only comments and blank lines" in refusal(b"\n\n   \n\r\n")


def test_prose_is_refused_naming_the_line():
    assert refusal(samples.PROSE.encode()) == (
        "not G-code: line 1 is neither a comment nor a G-code command: 'Dear printer,'")
    # Our own configuration file, README and the like.
    message = refusal((REPO / "config" / "printhost.toml").read_bytes())
    assert message.startswith("not G-code: line ")
    assert refusal((REPO / "README.md").read_bytes()).startswith("not G-code: line 1 ")


def test_words_alone_are_not_g_code():
    """One word per line reads like Klipper macros without parameters, but without a
    single G, M or T command it is not a print."""
    assert refusal(b"Hello\nWorld\nREADME\n") == (
        "not G-code: no G, M or T command in the first 3 lines that are not comments "
        "(line 1 reads 'Hello')")


def test_binary_files_are_refused():
    assert refusal(samples.PNG) == "binary data (a NUL byte at byte 8), not G-code text"
    assert refusal(samples.BGCODE).startswith("binary G-code (.bgcode) is not supported")
    controls = bytes([1, 2, 3, 4, 5, 6, 7, 8]) * 10 + b"\nG28\n" * 20
    assert refusal(controls) == "binary data (control characters), not G-code text"


def test_a_few_odd_lines_are_tolerated_many_are_not():
    good = ["G1 X%d" % i for i in range(DECIDE_LINES - 1)]
    check(("(a comment in parentheses)\n" + "\n".join(good) + "\n").encode())
    odd = ["G1 X1"] + ["this line is prose"] * 10 + ["G1 X2"] * 20
    assert refusal(("\n".join(odd) + "\n").encode()).startswith(
        "not G-code: line 2 is neither a comment nor a G-code command")


def test_only_a_bounded_prefix_is_read():
    """After DECIDE_LINES command lines the verdict is in; whatever follows (binary
    here) is not looked at, so a big file costs no more than a small one."""
    head = "".join(f"G1 X{i} Y{i}\n" for i in range(DECIDE_LINES)).encode()
    c = GCodeCheck()
    c.feed(head + b"\x00" * 1000)
    assert c.decided
    c.feed(b"\x00" * 1000)   # ignored
    c.finish()


def test_more_than_the_inspected_bytes_of_comments_is_refused():
    comments = b"; " + b"x" * 97 + b"\n"
    data = comments * (INSPECT_BYTES // len(comments) + 10) + b"G28\n"
    c = GCodeCheck()
    with pytest.raises(NotGCode, match=r"no G-code command in the first 1024 KiB"):
        for i in range(0, len(data), 1 << 16):
            c.feed(data[i:i + (1 << 16)])
    assert c.decided


def test_a_long_line_is_judged_by_its_start_and_counted_once():
    polygon = ",".join(f"[{i},{i}]" for i in range(30_000))
    long_line = f"EXCLUDE_OBJECT_DEFINE NAME=big POLYGON=[{polygon}]\n"
    assert len(long_line) > 128 * 1024
    check((long_line + "G28\nG1 X10\n").encode(), chunk=4096)
    # Line numbers stay right after a long line.
    text = long_line + "G28\n" + "not a command here\n" * 5
    assert "line 3 is neither" in refusal(text.encode(), chunk=4096)


@pytest.mark.parametrize("line, kind", [
    ("G1 X10 Y10", "gmt"), ("G1X10Y10", "gmt"), ("M862.3 P \"MK4\"", "gmt"), ("T0", "gmt"),
    ("t1", "gmt"), ("N12 M105*40", "gmt"), ("G28 ", "gmt"),
    ("PRINT_START EXTRUDER=220", "command"), ("START_PRINT", "command"),
    ("RESPOND MSG=\"hello world\"", "command"), ("A4 X1", "command"),
    ("Dear printer,", "other"), ("The end.", "other"), ("[printer]", "other"),
    ("(comment)", "other"), ("100 %", "other"), ("", "blank"), ("N5", "blank"),
])
def test_classify(line, kind):
    assert classify(line) == kind
