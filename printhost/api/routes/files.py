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
from printhost.api.schemas import FILE_INFO, FILE_LIST, RESULT_OK, file_name_field
from printhost.store.files import FileNameError, GCodeFiles

endpoints = EndpointSet()

_COPY_CHUNK = 1024 * 1024


def _store_upload(files: GCodeFiles, upload: UploadFile, name: str) -> dict:
    """Copy the spooled upload next to its final place, check it, then rename atomically."""
    fh, tmp = files.open_temp()
    try:
        with fh:
            src = upload.file
            src.seek(0)
            first = src.read(_COPY_CHUNK)
            if b"\x00" in first:
                raise ApiError(400, "Invalid upload", fields={"file": "not a G-code text file"})
            fh.write(first)
            shutil.copyfileobj(src, fh, _COPY_CHUNK)
            fh.flush()
            os.fsync(fh.fileno())
        return files.commit(tmp, name)
    except BaseException:
        files.discard(tmp)
        raise


def _printing_file(request: Request) -> str | None:
    job = request.app.state.link.status().get("job")
    if job and job.get("state") in ("printing", "pausing", "paused", "cancelling"):
        return job.get("file")
    return None


@endpoints.route("POST", "/api/v1/files", summary="Upload a G-code file", role="operator",
                 request=MULTIPART, response=FILE_INFO, status=201, errors=(409,),
                 rate_limited=True)
async def upload(request: Request, _: Principal | None) -> JSONResponse:
    """Multipart upload with the file in the part named `file`; replaces a file of the same name.

    The name must end in `.gcode` (or `.gco`, `.g`) and may not contain a path.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "Content-Type must be multipart/form-data")
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
        name = upload.filename or ""
        files: GCodeFiles = request.app.state.files
        try:
            await run_in_threadpool(files.path_for, name)
        except FileNameError as exc:
            raise ApiError(400, "Invalid upload", fields={"file": str(exc)}) from None
        if _printing_file(request) == name:
            raise ApiError(409, "File is being printed")
        info = await run_in_threadpool(_store_upload, files, upload, name)
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
    if _printing_file(request) == name:
        raise ApiError(409, "File is being printed")
    try:
        await run_in_threadpool(files.delete, name)
    except FileNotFoundError:
        # Another request deleted it since the check above.
        raise ApiError(404, "File not found") from None
    return {"result": "ok"}
