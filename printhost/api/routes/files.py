"""G-code file upload, listing and deletion."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import MULTIPART, EndpointSet
from printhost.api.errors import ApiError
from printhost.api.schemas import (FILE_INFO, FILE_LIST, OVERWRITE_PARAM, RESULT_OK,
                                   file_name_field)
from printhost.api.upload_stream import UploadReceiver, free_bytes, insufficient_storage
from printhost.store.files import FileExists, FileNameError, GCodeFiles

endpoints = EndpointSet()

# Body bytes handed to the parser and written at a time, in a worker thread.
_FEED_BYTES = 256 * 1024


def _printing_file(request: Request) -> str | None:
    job = request.app.state.link.status().get("job")
    if job and job.get("state") in ("printing", "pausing", "paused", "cancelling"):
        return job.get("file")
    return None


def _overwrite(request: Request) -> bool:
    values = request.query_params.getlist("overwrite")
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise ApiError(400, "Invalid query parameter",
                       fields={"overwrite": "must be true or false, given once"})
    return values[0] == "true"


def _exists_error(name: str) -> ApiError:
    return ApiError(409, f"A file named {name!r} exists already; upload with "
                         "?overwrite=true to replace it")


@endpoints.route("POST", "/api/v1/files", summary="Upload a G-code file", role="operator",
                 request=MULTIPART, response=FILE_INFO, status=201, errors=(409, 507),
                 rate_limited=True, query_params={"overwrite": OVERWRITE_PARAM})
async def upload(request: Request, _: Principal | None) -> JSONResponse:
    """Multipart upload with the file in the part named `file`. The file must be G-code
    text: an empty file, one of only comments, a binary or another text file is refused
    with 400. A file of the same name is replaced only with `?overwrite=true` (409
    otherwise), and never while it is being printed (409).

    The name must end in `.gcode` (or `.gco`, `.g`) and may not contain a path; letters
    of any script are allowed, and the name is stored in Unicode NFC.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "Content-Type must be multipart/form-data")
    overwrite = _overwrite(request)
    files: GCodeFiles = request.app.state.files
    reserve = request.app.state.settings.server.health_min_free_mb * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        # The body's size bounds the file's: refused before a byte is stored.
        free = await run_in_threadpool(free_bytes, str(files.root))
        if free - int(declared) < reserve:
            raise insufficient_storage(int(declared), reserve)
    receiver = UploadReceiver(files, content_type, overwrite=overwrite, reserve_bytes=reserve)
    try:
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _FEED_BYTES:
                data = bytes(pending)
                pending.clear()
                await run_in_threadpool(receiver.feed, data)
        if pending:
            await run_in_threadpool(receiver.feed, bytes(pending))
        await run_in_threadpool(receiver.finish)
        name, tmp = receiver.name, receiver.tmp
        assert name is not None and tmp is not None
        # Checked after the body: a print may have started while it arrived.
        if overwrite and _printing_file(request) == name:
            raise ApiError(409, "File is being printed")
        try:
            info = await run_in_threadpool(
                lambda: files.commit(tmp, name, replace=overwrite))
        except FileExists:
            raise _exists_error(name) from None
        receiver.tmp = None  # renamed into place
    finally:
        # Whatever happened (refused, too large, client gone), no partial file stays.
        await run_in_threadpool(receiver.abort)
    return JSONResponse(info, status_code=201)


@endpoints.route("GET", "/api/v1/files", summary="List uploaded files", role="viewer",
                 response=FILE_LIST)
async def list_files(request: Request, _: Principal | None) -> dict:
    """Every uploaded file with its size and modification time."""
    return {"files": await run_in_threadpool(request.app.state.files.list)}


@endpoints.route("DELETE", "/api/v1/files/{name}", summary="Delete an uploaded file",
                 role="operator", response=RESULT_OK, errors=(400, 404, 409),
                 path_params={"name": file_name_field("The file's name, URL-encoded")})
async def delete_file(request: Request, _: Principal | None) -> dict:
    """Remove a file; refused with 409 while it is being printed."""
    name = request.path_params["name"]
    files: GCodeFiles = request.app.state.files
    try:
        path = await run_in_threadpool(files.path_for, name)
    except FileNameError as exc:
        raise ApiError(400, "Invalid file name", fields={"name": str(exc)}) from None
    if not await run_in_threadpool(path.is_file):
        raise ApiError(404, "File not found")
    if _printing_file(request) == path.name:
        raise ApiError(409, "File is being printed")
    try:
        await run_in_threadpool(files.delete, name)
    except FileNotFoundError:
        # Another request deleted it since the check above.
        raise ApiError(404, "File not found") from None
    return {"result": "ok"}
