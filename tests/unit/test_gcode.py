import io
from functools import reduce

import pytest

from printhost.control import gcode
from printhost.control.gcode import GCodeCommand, GCodeError, iter_lines, parse_line


def with_checksum(body: str) -> str:
    return f"{body}*{reduce(lambda acc, b: acc ^ b, body.encode(), 0)}"


# ---------------------------------------------------------------- known commands

def test_spaced_and_compact_forms_parse_the_same():
    spaced = parse_line("G1 X10 Y2.5 E-0.25 F1200", 3)
    compact = parse_line("G1X10Y2.5E-0.25F1200", 3)
    assert spaced is not None and compact is not None
    assert spaced.params == compact.params == {"X": 10.0, "Y": 2.5, "E": -0.25, "F": 1200.0}
    assert spaced.name == "G1" and spaced.known and spaced.lineno == 3


@pytest.mark.parametrize("text,name", [("G01 X1", "G1"), ("G00 X1", "G0"), ("g1 x1", "G1"),
                                       ("M0104 S200", "M104"), ("m82", "M82")])
def test_command_names_are_uppercased_without_leading_zeros(text, name):
    cmd = parse_line(text, 1)
    assert cmd is not None and cmd.name == name and cmd.known


def test_decimal_forms():
    cmd = parse_line("G1 X-.5 Y+3 Z5. E0.000", 1)
    assert cmd is not None
    assert cmd.params == {"X": -0.5, "Y": 3.0, "Z": 5.0, "E": 0.0}


def test_lowercase_compact_token_reads_as_uppercase():
    cmd = parse_line("g1 x10y2", 1)
    assert cmd is not None and cmd.params == {"X": 10.0, "Y": 2.0}


def test_comment_and_whitespace_are_ignored_and_raw_is_kept():
    cmd = parse_line("  G1 X5 ; move to X5; really\r\n", 9)
    assert cmd is not None
    assert cmd.params == {"X": 5.0}
    assert cmd.raw == "G1 X5 ; move to X5; really"
    assert cmd.arg_text == "X5"


@pytest.mark.parametrize("text", ["", "   ", "\n", "; just a comment", "   ;", "N42", "N42 ; c"])
def test_empty_lines_give_none(text):
    assert parse_line(text, 1) is None


def test_g28_and_m84_accept_bare_axis_letters():
    g28 = parse_line("G28 X Y", 1)
    assert g28 is not None and g28.params == {"X": 0.0, "Y": 0.0}
    g28c = parse_line("G28XZ", 1)
    assert g28c is not None and g28c.params == {"X": 0.0, "Z": 0.0}
    m84 = parse_line("M84 X Y E", 1)
    assert m84 is not None and m84.params == {"X": 0.0, "Y": 0.0, "E": 0.0}
    assert parse_line("G28", 1).params == {}  # type: ignore[union-attr]


def test_commands_without_parameters():
    for text in ("G90", "G91", "M83", "M400", "M114", "M112", "M107"):
        cmd = parse_line(text, 1)
        assert cmd is not None and cmd.known and cmd.params == {}


# ---------------------------------------------------------------- malformed lines

@pytest.mark.parametrize("text,fragment", [
    ("G1 Xabc", "bad number 'abc' for X in 'G1 Xabc'"),
    ("G1 X1.2.3", "bad number '1.2.3' for X"),
    ("G1 Xnan", "bad number 'nan' for X"),
    ("G1 Xinf", "bad number 'inf' for X"),
    ("G1 X-inf", "bad number '-inf' for X"),
    ("G1 X1e5", "bad number '1e5' for X"),
    ("G1 X1e-5", "bad number '1e-5' for X"),
    ("G1 X-", "bad number '-' for X"),
    ("G1 X.", "bad number '.' for X"),
    ("G1 X1" + "0" * 400, "bad number"),          # overflows to inf
    ("G1 X1 Y", "missing number for Y"),
    ("G4 P", "missing number for P"),
    ("G1 X1 X2", "duplicate parameter X"),
    ("G1 10", "expected a parameter letter, got '10'"),
    ("M104 S200 #", "expected a parameter letter, got '#'"),
    ("G92 E0 =1", "expected a parameter letter"),
    ("123 foo", "not a command: '123 foo'"),
    ("#$%", "not a command"),
    ("*12", "not a command"),
    ("=G1", "not a command"),
])
def test_malformed_lines_raise_naming_the_line(text, fragment):
    with pytest.raises(GCodeError) as info:
        parse_line(text, 12)
    assert info.value.lineno == 12
    assert str(info.value).startswith("line 12: ")
    assert fragment in info.value.message


def test_error_messages_clip_huge_input():
    with pytest.raises(GCodeError) as info:
        parse_line("G1 X" + "a" * 100_000, 5)
    assert len(str(info.value)) < 200


# ---------------------------------------------------------------- checksums and line numbers

def test_valid_checksum_with_line_number():
    text = with_checksum("N123 G1 X10 Y20")
    cmd = parse_line(text, 4)
    assert cmd is not None and cmd.name == "G1" and cmd.params == {"X": 10.0, "Y": 20.0}


def test_reference_checksum_value():
    # "N3 T0*57" is the classic example from the RepRap host protocol description.
    cmd = parse_line("N3 T0*57", 1)
    assert cmd is not None and cmd.name == "T0" and not cmd.known


def test_checksum_without_line_number_on_known_command():
    cmd = parse_line(with_checksum("G1 X1"), 2)
    assert cmd is not None and cmd.params == {"X": 1.0}


def test_compact_line_number():
    cmd = parse_line("N7G1X3", 1)
    assert cmd is not None and cmd.name == "G1" and cmd.params == {"X": 3.0}


@pytest.mark.parametrize("text", ["N1 G1 X10*0", "G1 X1*1", "N5 M117 hello*3"])
def test_checksum_mismatch_raises(text):
    with pytest.raises(GCodeError) as info:
        parse_line(text, 77)
    assert info.value.lineno == 77
    assert "checksum mismatch" in info.value.message


@pytest.mark.parametrize("text", ["G1 X1*ab", "N1 G1 X1*", "G1 X1*1234", "N2 T0*-5"])
def test_malformed_checksum_raises(text):
    with pytest.raises(GCodeError) as info:
        parse_line(text, 8)
    assert info.value.lineno == 8 and "bad checksum" in info.value.message


def test_comment_after_checksum_is_ignored():
    cmd = parse_line(with_checksum("N9 G1 Y4") + " ; sent by host", 1)
    assert cmd is not None and cmd.params == {"Y": 4.0}


def test_star_in_unknown_command_text_is_not_a_checksum():
    cmd = parse_line("M117 ** layer 3 *5", 1)
    assert cmd is not None and cmd.name == "M117" and not cmd.known
    assert cmd.arg_text == "** layer 3 *5"


# ---------------------------------------------------------------- unknown commands

@pytest.mark.parametrize("text,name,args", [
    ("T0", "T0", ""),
    ("M486 S1 A\"x;y\"", "M486", "S1 A\"x"),
    ("M486 S1 Xabc", "M486", "S1 Xabc"),
    ("G29.1 Q", "G29.1", "Q"),
    ("M117 Hello world!", "M117", "Hello world!"),
    ("SET_FAN_SPEED FAN=x SPEED=0.5", "SET_FAN_SPEED", "FAN=x SPEED=0.5"),
    ("EXCLUDE_OBJECT_DEFINE NAME=part_1 CENTER=10,10 POLYGON=[[1,1],[2,2]]",
     "EXCLUDE_OBJECT_DEFINE", "NAME=part_1 CENTER=10,10 POLYGON=[[1,1],[2,2]]"),
    ("set_fan_speed fan=x", "SET_FAN_SPEED", "fan=x"),
    ("_MY_MACRO", "_MY_MACRO", ""),
    ("G", "G", ""),
])
def test_unknown_commands_pass_through(text, name, args):
    cmd = parse_line(text, 1)
    assert cmd == GCodeCommand(name, {}, 1, False, text.strip(), args)


# ---------------------------------------------------------------- iter_lines

def test_iter_lines_offsets_and_text():
    data = b"G28\r\nG1 X1\n\n; c\nG1 Y2"
    rows = list(iter_lines(io.BytesIO(data)))
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[2] for r in rows] == ["G28", "G1 X1", "", "; c", "G1 Y2"]
    assert [r[1] for r in rows] == [5, 11, 12, 16, len(data)]


def test_iter_lines_replaces_bad_utf8_and_drops_bom():
    rows = list(iter_lines(io.BytesIO(b"\xef\xbb\xbfG28\n; caf\xe9\n")))
    assert rows[0][2] == "G28"
    assert rows[1][2] == "; caf\ufffd"
    assert parse_line(rows[0][2], 1) is not None


def test_iter_lines_streams_without_reading_everything():
    class Endless:
        """A file that never ends: reading it whole would never return."""

        def readline(self, limit: int = -1) -> bytes:
            assert limit > 0, "iter_lines must bound each read"
            return b"G1 X1\n"

        def read(self, *args):  # pragma: no cover - failing is the point
            raise AssertionError("iter_lines must not call read()")

    it = iter_lines(Endless())  # type: ignore[arg-type]
    assert [next(it)[:2] for _ in range(3)] == [(1, 6), (2, 12), (3, 18)]


def test_iter_lines_rejects_overlong_line(monkeypatch):
    monkeypatch.setattr(gcode, "MAX_LINE_BYTES", 16)
    it = iter_lines(io.BytesIO(b"G28\n" + b"; " + b"x" * 40 + b"\nG1 X1\n"))
    assert next(it)[2] == "G28"
    with pytest.raises(GCodeError) as info:
        next(it)
    assert info.value.lineno == 2


def test_iter_lines_accepts_line_exactly_at_limit(monkeypatch):
    monkeypatch.setattr(gcode, "MAX_LINE_BYTES", 8)
    rows = list(iter_lines(io.BytesIO(b"G1 X123\n")))
    assert rows == [(1, 8, "G1 X123")]


@pytest.mark.parametrize("line,letter", [("G1 X1O0", "O"), ("G0 X5 Q2", "Q"), ("G92 E0 A1", "A"),
                                         ("G2 X1 Y1 I1 J0 K3", "K")])
def test_unknown_letters_on_geometry_commands_stop_the_job(line, letter):
    with pytest.raises(GCodeError, match=f"line 7: unknown parameter {letter} for"):
        parse_line(line, 7)


def test_other_known_commands_keep_extra_letters():
    # Real start G-code: tool and index letters on heater and fan commands.
    assert parse_line("M104 S200 T0", 1).params == {"S": 200.0, "T": 0.0}
    assert parse_line("M106 S255 P0", 1).params == {"S": 255.0, "P": 0.0}
