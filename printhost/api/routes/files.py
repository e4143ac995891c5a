"""G-code file upload, listing and deletion."""

from __future__ import annotations

import os
import shutil

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import MULTIPART, EndpointSet
from printhost.api.errors import ApiError
from printhost.api.schemas import (FILE_INFO, FILE_LIST, OVERWRITE_PARAM, RESULT_OK,
                                   file_name_field)
from printhost.store.files import FileExists, FileNameError, GCodeFiles
from printhost.store.gcode_check import GCodeCheck, NotGCode

endpoints = EndpointSet()

_COPY_CHUNK = 1024 * 1024


def _spool_upload(files: GCodeFiles, upload: UploadFile) -> str:
    """Copy the spooled upload next to its final place and check that it is G-code;
    returns the temp file's path. The check reads only the start of the file, while
    it is copied (printhost.store.gcode_check)."""
    fh, tmp = files.open_temp()
    try:
        with fh:
            src = upload.file
            src.seek(0)
            check = GCodeCheck()
            while True:
                chunk = src.read(_COPY_CHUNK)
                if not chunk:
                    break
                check.feed(chunk)
                fh.write(chunk)
                if check.decided:
                    break
            check.finish()
            shutil.copyfileobj(src, fh, _COPY_CHUNK)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp
    except NotGCode as exc:
        files.discard(tmp)
        raise ApiError(400, "Invalid upload", fields={"file": str(exc)}) from None
    except BaseException:
        files.discard(tmp)
        raise


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
                 request=MULTIPART, response=FILE_INFO, status=201, errors=(409,),
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
    try:
        form = await request.form(max_files=1, max_fields=8)
    except ApiError:
        raise
    except Exception:
        raise ApiError(400, "Malformed multipart body") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "Invalid upload", fields={"file": "required (a file part named 'file')"})
        files: GCodeFiles = request.app.state.files
        try:
            path = await run_in_threadpool(files.path_for, upload.filename or "")
        except FileNameError as exc:
            raise ApiError(400, "Invalid upload", fields={"file": str(exc)}) from None
        name = path.name  # NFC
        if overwrite and _printing_file(request) == name:
            raise ApiError(409, "File is being printed")
        if not overwrite and await run_in_threadpool(path.exists):
            raise _exists_error(name)
        tmp = await run_in_threadpool(_spool_upload, files, upload)
        try:
            # Checked again: a print may have started while the upload was copied.
            if overwrite and _printing_file(request) == name:
                raise ApiError(409, "File is being printed")
            info = await run_in_threadpool(
                lambda: files.commit(tmp, name, replace=overwrite))
        except FileExists:
            raise _exists_error(name) from None
        finally:
            await run_in_threadpool(files.discard, tmp)
    finally:
        await form.close()
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
