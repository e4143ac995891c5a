"""Stored G-code files: upload, folders, listing, what the slicer wrote, thumbnails,
download (also by one-time link), move/rename and deletion.

Files are addressed by their path below the files' root (`parts/left.gcode`); a path
parameter may hold `/` (or `%2F`). The routes with a suffix after the path
(`/content`, `/thumbnails/...`, `/download-token`) are declared before the bare
`/api/v1/files/{path}`, which would otherwise match them too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import MULTIPART, EndpointSet
from printhost.api.errors import ApiError
from printhost.api.schemas import (FILE_INFO, OVERWRITE_PARAM, RESULT_OK, Field,
                                   file_path_field, folder_path_field, read_json)
from printhost.api.schemas_files import (DOWNLOAD_TOKEN, FILE_DETAILS, FILE_LIST, FOLDER_INFO,
                                         FOLDER_REQUEST, MOVE_REQUEST)
from printhost.api.upload_stream import (UploadReceiver, free_bytes, insufficient_storage,
                                         over_quota)
from printhost.store.files import FileExists, FileNameError, FolderNotEmpty, GCodeFiles
from printhost.store.jobs import IN_PROGRESS

endpoints = EndpointSet()

# Body bytes handed to the parser and written at a time, in a worker thread.
_FEED_BYTES = 256 * 1024


def _printing_file(request: Request) -> str | None:
    job = request.app.state.link.status().get("job")
    if job and job.get("state") in IN_PROGRESS:
        return job.get("file")
    return None


FILE_PATH = {"path": file_path_field("The file's path, URL-encoded")}
FOLDER_PARAM = Field("string", "A folder's path (`parts/brackets`); the root when absent",
                     required=False, max_length=1024)
RECURSIVE_PARAM = Field("boolean", "true also removes everything in the folder; without "
                        "it a folder that holds anything is refused with 409", required=False)
_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")


@dataclass(frozen=True)
class DownloadGrant:
    """What a one-time download link serves: one file as it was when the link was made."""
    path: str
    size: int
    mtime_ns: int


def _files(request: Request) -> GCodeFiles:
    return request.app.state.files


def _under(path: str | None, folder: str) -> bool:
    return path is not None and (path == folder or path.startswith(folder + "/"))


def _bool_param(request: Request, name: str) -> bool:
    values = request.query_params.getlist(name)
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise ApiError(400, "Invalid query parameter",
                       fields={name: "must be true or false, given once"})
    return values[0] == "true"


def _folder_param(request: Request) -> str:
    values = request.query_params.getlist("folder")
    if not values:
        return ""
    if len(values) > 1:
        raise ApiError(400, "Invalid query parameter", fields={"folder": "given more than once"})
    return values[0]


async def _existing_file(request: Request, path: str):
    """The checked absolute path of a stored file: 400 for a path that is not allowed,
    404 when there is no such file."""
    try:
        full = await run_in_threadpool(_files(request).path_for, path)
    except FileNameError as exc:
        raise ApiError(400, "Invalid file path", fields={"path": str(exc)}) from None
    if not await run_in_threadpool(full.is_file):
        raise ApiError(404, "File not found")
    return full


def storage_of(files: GCodeFiles, settings, used: int | None = None) -> dict:
    """Storage used and available, as GET /files and GET /stats report it."""
    return files.storage(settings.server.storage_quota_mb * 1024 * 1024,
                         settings.server.health_min_free_mb * 1024 * 1024, used)


def _exists_error(name: str) -> ApiError:
    return ApiError(409, f"A file named {name!r} exists already; upload with "
                         "?overwrite=true to replace it")


async def _file_response(full, media_type: str, attachment: bool = False) -> FileResponse:
    """A file, with its validators (ETag, Last-Modified) set now, so that a conditional
    request can be answered 304 before anything is read."""
    st = await run_in_threadpool(os.stat, full)
    return FileResponse(full, media_type=media_type, stat_result=st,
                        filename=full.name if attachment else None)


def _with_urls(doc: dict) -> dict:
    base = "/api/v1/files/" + quote(doc["path"])
    for thumb in doc["metadata"]["thumbnails"]:
        thumb["url"] = f"{base}/thumbnails/{thumb['width']}x{thumb['height']}"
    return doc


@endpoints.route("POST", "/api/v1/files", summary="Upload a G-code file", role="operator",
                 request=MULTIPART, response=FILE_INFO, status=201, errors=(409, 507),
                 rate_limited=True, query_params={"overwrite": OVERWRITE_PARAM,
                                                  "folder": FOLDER_PARAM})
async def upload(request: Request, _: Principal | None) -> JSONResponse:
    """Multipart upload with the file in the part named `file`. The file must be G-code
    text: an empty file, one of only comments, a binary or another text file is refused
    with 400. A file of the same name is replaced only with `?overwrite=true` (409
    otherwise), and never while it is being printed (409).

    The name must end in `.gcode` (or `.gco`, `.g`) and may not contain a path; letters
    of any script are allowed, and the name is stored in Unicode NFC. The folder to
    store it in (made if missing) is the `folder` field or query parameter.

    A `checksum` field with the file's SHA-256 (hex) is verified: on a mismatch nothing
    is stored (400). The response's `path` is where the file was stored. What the slicer
    wrote is parsed before the response (`GET /api/v1/files/{path}`). Uploads beyond
    `server.storage_quota_mb`, or that would leave less than `server.health_min_free_mb`
    free, get 507.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "Content-Type must be multipart/form-data")
    overwrite = _bool_param(request, "overwrite")
    folder = _folder_param(request)
    files: GCodeFiles = request.app.state.files
    server = request.app.state.settings.server
    reserve = server.health_min_free_mb * 1024 * 1024
    quota = server.storage_quota_mb * 1024 * 1024
    used = await run_in_threadpool(files.usage_bytes) if quota else 0
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        # The body's size bounds the file's: refused before a byte is stored.
        free = await run_in_threadpool(free_bytes, str(files.root))
        if free - int(declared) < reserve:
            raise insufficient_storage(int(declared), reserve)
    if quota and used >= quota:
        raise over_quota(used, quota)
    receiver = UploadReceiver(files, content_type, overwrite=overwrite, reserve_bytes=reserve,
                              folder=folder, quota_bytes=quota, used_bytes=used)
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
                lambda: files.commit(tmp, name, replace=overwrite, sha256=receiver.sha256))
        except FileExists as exc:
            raise _exists_error(str(exc)) from None
        receiver.tmp = None  # renamed into place
    finally:
        # Whatever happened (refused, too large, client gone), no partial file stays.
        await run_in_threadpool(receiver.abort)
    return JSONResponse(info, status_code=201)


@endpoints.route("GET", "/api/v1/files", summary="List stored files and folders",
                 role="viewer", response=FILE_LIST, errors=(400, 404),
                 query_params={"folder": FOLDER_PARAM})
async def list_files(request: Request, _: Principal | None) -> dict:
    """Every stored file (size, modification time) and folder below `folder` (the root
    by default), all folders deep, with the storage used and available."""
    files = _files(request)
    folder = _folder_param(request)

    def listing() -> dict:
        try:
            listed = files.list(folder)
            folders = files.folders(folder)
        except FileNameError as exc:
            raise ApiError(400, "Invalid query parameter", fields={"folder": str(exc)}) from None
        except FileNotFoundError:
            raise ApiError(404, "Folder not found") from None
        used = listed if not folder else files.list()
        return {"files": listed, "folders": folders,
                "storage": storage_of(files, request.app.state.settings,
                                      sum(f["size"] for f in used))}
    return await run_in_threadpool(listing)


@endpoints.route("GET", "/api/v1/files/{path}/content", summary="Download a stored file",
                 role="viewer", response=None, errors=(400, 404), path_params=FILE_PATH,
                 media_type="text/x-gcode")
async def download(request: Request, _: Principal | None) -> FileResponse:
    """The file's content as stored (HTTP range requests are honoured)."""
    full = await _existing_file(request, request.path_params["path"])
    return await _file_response(full, "text/x-gcode", attachment=True)


@endpoints.route("GET", "/api/v1/files/{path}/thumbnails/{size}",
                 summary="A thumbnail the slicer embedded", role="viewer", response=None,
                 errors=(400, 404), media_type="image/png",
                 path_params={**FILE_PATH, "size": Field(
                     "string", "Width x height in pixels, as listed in the file's "
                     "metadata (`300x300`)", pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$",
                     examples=("300x300",))})
async def thumbnail(request: Request, _: Principal | None) -> FileResponse:
    """The PNG, as embedded by the slicer; 404 when the file has no thumbnail of that size."""
    await _existing_file(request, request.path_params["path"])
    size = _SIZE.fullmatch(request.path_params["size"])
    if size is None:
        raise ApiError(400, "Invalid thumbnail size",
                       fields={"size": "must be WIDTHxHEIGHT in pixels, e.g. 300x300"})
    try:
        png = await run_in_threadpool(_files(request).thumbnail, request.path_params["path"],
                                      int(size[1]), int(size[2]))
    except FileNotFoundError:
        raise ApiError(404, "The file has no thumbnail of that size") from None
    return await _file_response(png, "image/png")


@endpoints.route("POST", "/api/v1/files/{path}/download-token",
                 summary="A one-time download link", role="viewer", response=DOWNLOAD_TOKEN,
                 status=201, errors=(400, 404), path_params=FILE_PATH, rate_limited=True)
async def download_token(request: Request, _: Principal | None) -> dict:
    """A link that downloads the file once, without authentication, within
    `server.download_token_ttl_s` (5 minutes by default): for a browser link, a slicer or
    a phone, which cannot send the `Authorization` header. It serves the file only as it
    is now: replaced or moved, the link gives 404."""
    full = await _existing_file(request, request.path_params["path"])
    st = await run_in_threadpool(full.stat)
    token, expires_at = request.app.state.download_tokens.issue(
        DownloadGrant(_files(request).relative(full), st.st_size, st.st_mtime_ns))
    expires = datetime.fromtimestamp(expires_at, tz=timezone.utc)
    return {"token": token, "url": f"/api/v1/downloads/{token}",
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}


@endpoints.route("GET", "/api/v1/downloads/{token}", summary="Download by one-time link",
                 role=None, response=None, errors=(404,), media_type="text/x-gcode",
                 path_params={"token": Field("string", "From POST "
                                             "/api/v1/files/{path}/download-token",
                                             max_length=128)})
async def download_by_token(request: Request, _: Principal | None) -> FileResponse:
    """The file the link was made for, once; 404 for a link that is unknown, used,
    expired, or whose file has since been replaced, moved or deleted."""
    grant = request.app.state.download_tokens.redeem(request.path_params["token"])
    gone = ApiError(404, "Download link unknown, used or expired; ask for a new one")
    if grant is None:
        raise gone
    files = _files(request)
    try:
        full = await run_in_threadpool(files.path_for, grant.path)
        st = await run_in_threadpool(full.stat)
    except (FileNameError, OSError):
        raise gone from None
    if (st.st_size, st.st_mtime_ns) != (grant.size, grant.mtime_ns):
        raise gone
    return FileResponse(full, media_type="text/x-gcode", filename=full.name, stat_result=st)


@endpoints.route("GET", "/api/v1/files/{path}", summary="A file's details and metadata",
                 role="viewer", response=FILE_DETAILS, errors=(400, 404), path_params=FILE_PATH)
async def file_details(request: Request, _: Principal | None) -> dict:
    """Size, modification time, SHA-256 and what the slicer wrote in the file: estimated
    time, filament, layer and object height, first-layer temperatures, slicer and
    version, and the embedded thumbnails with their URLs. A file stored by other means is
    parsed when first asked about."""
    await _existing_file(request, request.path_params["path"])
    try:
        doc = await run_in_threadpool(_files(request).metadata, request.path_params["path"])
    except FileNotFoundError:
        raise ApiError(404, "File not found") from None
    return _with_urls(doc)


@endpoints.route("DELETE", "/api/v1/files/{path}", summary="Delete a stored file",
                 role="operator", response=RESULT_OK, errors=(400, 404, 409),
                 path_params=FILE_PATH)
async def delete_file(request: Request, _: Principal | None) -> dict:
    """Remove a file; refused with 409 while it is being printed."""
    full = await _existing_file(request, request.path_params["path"])
    files = _files(request)
    if _printing_file(request) == files.relative(full):
        raise ApiError(409, "File is being printed")
    try:
        await run_in_threadpool(files.delete, files.relative(full))
    except FileNotFoundError:
        # Another request deleted it since the check above.
        raise ApiError(404, "File not found") from None
    return {"result": "ok"}


@endpoints.route("POST", "/api/v1/files/move", summary="Move or rename a file or folder",
                 role="operator", request=MOVE_REQUEST, response=FILE_INFO,
                 errors=(404, 409))
async def move(request: Request, _: Principal | None) -> dict:
    """Move or rename a file (the answer is its new info) or a folder with everything in
    it (the answer has its new `path`). Missing folders on the way are made. Refused with
    409 when the destination exists, and when the file, or a file in the folder, is
    being printed."""
    body = await read_json(request, MOVE_REQUEST)
    files = _files(request)
    printing = _printing_file(request)

    def do_move() -> dict:
        try:
            src = files.path_for(body["source"], folder=True)
        except FileNameError as exc:
            raise ApiError(400, "Invalid request body", fields={"source": str(exc)}) from None
        if src == files.root or not src.exists():
            raise ApiError(404, "File or folder not found")
        try:
            if _under(printing, files.relative(src)):
                raise ApiError(409, "File is being printed")
            return files.move(body["source"], body["dest"])
        except FileNameError as exc:
            raise ApiError(400, "Invalid request body", fields={"dest": str(exc)}) from None
        except FileNotFoundError:
            raise ApiError(404, "File or folder not found") from None
        except FileExists as exc:
            raise ApiError(409, f"{str(exc)!r} exists already") from None
    result = await run_in_threadpool(do_move)
    if "name" not in result:  # a folder
        result = {"name": os.path.basename(result["path"]), "path": result["path"],
                  "size": 0, "modified": result["modified"]}
    return result


@endpoints.route("POST", "/api/v1/folders", summary="Create a folder", role="operator",
                 request=FOLDER_REQUEST, response=FOLDER_INFO, status=201, errors=(409,))
async def make_folder(request: Request, _: Principal | None) -> dict:
    """Create a folder for files, with any missing parents; 409 if it exists."""
    body = await read_json(request, FOLDER_REQUEST)

    def do_make() -> dict:
        try:
            return _files(request).make_folder(body["path"])
        except FileExists:
            raise ApiError(409, "A file or folder of that path exists already") from None
    return await run_in_threadpool(do_make)


@endpoints.route("DELETE", "/api/v1/folders/{path}", summary="Delete a folder",
                 role="operator", response=RESULT_OK, errors=(400, 404, 409),
                 path_params={"path": folder_path_field("The folder's path, URL-encoded")},
                 query_params={"recursive": RECURSIVE_PARAM})
async def delete_folder(request: Request, _: Principal | None) -> dict:
    """Remove an empty folder, or with `?recursive=true` the folder and everything in it;
    409 when it holds the file being printed."""
    recursive = _bool_param(request, "recursive")
    path = request.path_params["path"]
    files = _files(request)
    printing = _printing_file(request)

    def do_delete() -> None:
        try:
            full = files.path_for(path, folder=True)
            if full == files.root or not full.is_dir():
                raise FileNotFoundError(path)
            if _under(printing, files.relative(full)):
                raise ApiError(409, "The folder holds the file being printed")
            files.delete_folder(path, recursive=recursive)
        except FileNameError as exc:
            raise ApiError(400, "Invalid folder path", fields={"path": str(exc)}) from None
        except FileNotFoundError:
            raise ApiError(404, "Folder not found") from None
        except FolderNotEmpty:
            raise ApiError(409, "Folder is not empty; delete with ?recursive=true to remove "
                                "everything in it") from None
    await run_in_threadpool(do_delete)
    return {"result": "ok"}
