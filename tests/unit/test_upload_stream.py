"""UploadReceiver: a multipart upload parsed as it arrives and written straight into
its partial file in the state directory."""

from __future__ import annotations

import pytest

from printhost.api.errors import ApiError
from printhost.api.upload_stream import SPACE_CHECK_BYTES, UploadReceiver
from printhost.store.files import GCodeFiles

BOUNDARY = b"test-boundary"
CONTENT_TYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()
GCODE = b"G28\nG1 X10 Y10 F3000\n"


def _part(name: str, filename: str | None, data: bytes) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode()
            + b"\r\n\r\n" + data + b"\r\n")


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def _partials(files: GCodeFiles) -> list[str]:
    return [p.name for p in files.root.iterdir() if p.name.startswith(".upload-")]


def _receive(files: GCodeFiles, body: bytes, *, overwrite: bool = False,
             reserve: int = 0, piece: int = 1000) -> UploadReceiver:
    receiver = UploadReceiver(files, CONTENT_TYPE, overwrite=overwrite, reserve_bytes=reserve)
    try:
        for i in range(0, len(body), piece):
            receiver.feed(body[i:i + piece])
        receiver.finish()
    except BaseException:
        receiver.abort()
        raise
    return receiver


def _error(excinfo) -> tuple[int, str, dict | None]:
    exc = excinfo.value
    return exc.status, exc.message, exc.fields


def test_the_file_part_is_written_to_a_partial_file_in_the_state_directory(tmp_path):
    files = GCodeFiles(tmp_path)
    data = GCODE * 5000
    receiver = _receive(files, _body(_part("note", None, b"hello"),
                                     _part("file", "cube.gcode", data)))
    assert receiver.name == "cube.gcode"
    assert receiver.tmp is not None and receiver.tmp.startswith(str(files.root))
    with open(receiver.tmp, "rb") as fh:
        assert fh.read() == data
    receiver.abort()
    assert _partials(files) == []


def test_a_bad_name_is_refused_before_any_data_is_stored(tmp_path):
    files = GCodeFiles(tmp_path)
    receiver = UploadReceiver(files, CONTENT_TYPE, overwrite=False, reserve_bytes=0)
    head = _part("file", "../evil.gcode", b"")[:-2]
    with pytest.raises(ApiError) as info:
        receiver.feed(head + GCODE)
    status, message, fields = _error(info)
    assert (status, message) == (400, "Invalid upload") and "path" in fields["file"]
    receiver.abort()
    assert _partials(files) == []


def test_an_existing_name_is_409_at_the_part_headers_unless_overwriting(tmp_path):
    files = GCodeFiles(tmp_path)
    (files.root / "cube.gcode").write_bytes(GCODE)
    with pytest.raises(ApiError) as info:
        _receive(files, _body(_part("file", "cube.gcode", GCODE)))
    assert info.value.status == 409 and "exists already" in info.value.message
    assert _partials(files) == []
    receiver = _receive(files, _body(_part("file", "cube.gcode", GCODE * 2)), overwrite=True)
    assert receiver.name == "cube.gcode"
    receiver.abort()


def test_an_upload_that_would_fill_the_disk_is_507_and_removed(tmp_path):
    files = GCodeFiles(tmp_path)
    data = GCODE * (SPACE_CHECK_BYTES // len(GCODE) + 100)
    # A reserve larger than any disk: refused at the first check, after 8 MiB.
    with pytest.raises(ApiError) as info:
        _receive(files, _body(_part("file", "big.gcode", data)), reserve=1 << 62,
                 piece=256 * 1024)
    assert info.value.status == 507
    assert _partials(files) == []


@pytest.mark.parametrize("body, status, message", [
    (_body(_part("other", None, b"x")), 400, "Invalid upload"),
    (_body(_part("upload", "a.gcode", GCODE)), 400, "Invalid upload"),
    (_body(_part("file", "a.gcode", GCODE), _part("file", "b.gcode", GCODE)), 400,
     "Malformed multipart body"),
    (_part("file", "a.gcode", GCODE), 400, "Malformed multipart body"),  # no end
    (_body(*[_part(f"f{i}", None, b"x") for i in range(9)]), 400, "Malformed multipart body"),
    (_body(_part("note", None, b"x" * 5000)), 400, "Malformed multipart body"),
    (_body(_part("file", "a.gcode", b"Dear printer,\nhello\n")), 400, "Invalid upload"),
    (_body(_part("file", "a.gcode", b"")), 400, "Invalid upload"),
])
def test_refusals_leave_nothing_behind(tmp_path, body, status, message):
    files = GCodeFiles(tmp_path)
    with pytest.raises(ApiError) as info:
        _receive(files, body)
    assert (info.value.status, info.value.message) == (status, message)
    assert _partials(files) == []


def test_a_content_type_without_boundary_is_malformed(tmp_path):
    with pytest.raises(ApiError) as info:
        UploadReceiver(GCodeFiles(tmp_path), "multipart/form-data", overwrite=False,
                       reserve_bytes=0)
    assert info.value.status == 400
