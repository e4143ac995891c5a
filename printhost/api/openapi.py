"""The OpenAPI 3.1 document, generated from the endpoint declarations and schemas.

Nothing here is written by hand per route: paths, methods, parameters, request and
response bodies, every status an operation can answer with, the headers that come with
them and the security requirements all follow from `EndpointSet.route(...)` and the
schemas in `schemas.py`, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from printhost import __version__
from printhost.api.context import REQUEST_ID_HEADER
from printhost.api.endpoint import MULTIPART, Endpoint
from printhost.api.errors import STATUS_DESCRIPTIONS
from printhost.api.schemas import ALL_SCHEMAS, ERROR, FILE_UPLOAD, Schema

_ROLE_TEXT = {"viewer": "viewer (any logged-in user)", "operator": "operator or admin",
              "admin": "admin"}

BEARER = "bearer"
API_KEY = "apiKey"
API_KEY_HEADER = "X-Api-Key"

# Headers documented once under components.headers and referenced by the responses.
_HEADERS: dict[str, dict[str, Any]] = {
    "RequestId": {
        "description": "The request's correlation id: the client's own X-Request-Id if it "
                       "was sane (at most 128 of A-Z a-z 0-9 . _ : + = / -, starting with a "
                       "letter or digit), otherwise one the service made up. Log lines about "
                       "the request carry the same id.",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "RetryAfter": {
        "description": "Whole seconds to wait before trying again (the same number as "
                       "`retry_after` in the body)",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWWAuthenticate": {
        "description": "Always `Bearer realm=\"printhost\"`",
        "required": True,
        "schema": {"type": "string"},
    },
}


def _ref(schema: Schema) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema.name}"}


def _header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def operation_id(ep: Endpoint) -> str:
    path = ep.path.strip("/") or "home"
    for old, new in (("/", "_"), ("{", ""), ("}", ""), (".", "_")):
        path = path.replace(old, new)
    return f"{ep.method.lower()}_{path}"


def _tag(ep: Endpoint) -> str:
    """The first path segment after the version: files, heaters, auth, status, ..."""
    if ep.path == "/":
        return "home"
    parts = ep.path.split("/")
    return parts[3].split(".")[0] if len(parts) > 3 else "api"


def _error_response(code: int, schema: Schema) -> dict[str, Any]:
    headers: dict[str, Any] = {REQUEST_ID_HEADER: _header_ref("RequestId")}
    if code == 429:
        headers["Retry-After"] = _header_ref("RetryAfter")
    if code == 401:
        headers["WWW-Authenticate"] = _header_ref("WWWAuthenticate")
    return {
        "description": STATUS_DESCRIPTIONS[code],
        "headers": headers,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _request_body(ep: Endpoint) -> dict[str, Any] | None:
    if isinstance(ep.request, Schema):
        return {"required": ep.request.name != "Empty",
                "content": {"application/json": {"schema": _ref(ep.request)}}}
    if ep.request == MULTIPART:
        return {"required": True,
                "content": {"multipart/form-data": {"schema": _ref(FILE_UPLOAD)}}}
    return None


def _description(ep: Endpoint) -> str:
    text = " ".join(ep.description.split())
    if ep.role is not None:
        text += f" Requires role: {_ROLE_TEXT[ep.role]}."
    if ep.rate_limited:
        text += (" Rate limited per client address (`server.rate_limit_per_min`, "
                 "`server.rate_limit_burst`): 429 with Retry-After beyond the limit.")
    return text.strip()


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [_tag(ep)],
        "summary": ep.summary,
        "description": _description(ep),
        "operationId": operation_id(ep),
        "responses": {},
    }
    if ep.role is None:
        op["security"] = []
    if ep.deprecated:
        op["deprecated"] = True
    path_params = [seg[1:-1] for seg in ep.path.split("/") if seg.startswith("{")]
    params = [(name, "path", ep.path_param(name)) for name in path_params]
    params += [(name, "query", f) for name, f in ep.query_params.items()]
    if params:
        op["parameters"] = []
        for name, where, f in params:
            param: dict[str, Any] = {"name": name, "in": where,
                                     "required": where == "path" or f.required,
                                     "schema": f.json_schema()}
            if f.description:
                param["description"] = f.description
                param["schema"].pop("description", None)
            op["parameters"].append(param)
    body = _request_body(ep)
    if body is not None:
        op["requestBody"] = body
    ok: dict[str, Any] = {"description": "Success",
                          "headers": {REQUEST_ID_HEADER: _header_ref("RequestId")}}
    if ep.media_type != "application/json":
        ok["content"] = {ep.media_type: {"schema": {"type": "string"}}}
    else:
        ok["content"] = {"application/json": {
            "schema": _ref(ep.response) if ep.response is not None else {"type": "object"}}}
    op["responses"][str(ep.status)] = ok
    for code in ep.all_errors():
        if code in ep.error_bodies:
            op["responses"][str(code)] = _error_response(code, ep.error_bodies[code])
        else:
            op["responses"][str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    return op


def build_openapi(endpoints: list[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    tags = sorted({_tag(ep) for ep in endpoints})
    codes = sorted({code for ep in endpoints for code in ep.all_errors()})
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "printhost API",
            "version": __version__,
            "description": "Control and status of a 3D printer run by printhost. Every error "
                           "is a JSON object with an `error` string (plus `fields` on 400 and "
                           "`retry_after` on 429). Every response carries an X-Request-Id "
                           "header. The major version is in the path (/api/v1); within it "
                           "endpoints and response members may be added, never removed or "
                           "changed in meaning. `info.version` is the printhost release, not "
                           "the API version.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": {s.name: s.json_schema() for s in ALL_SCHEMAS},
            "responses": {f"Error{code}": _error_response(code, ERROR) for code in codes},
            "headers": _HEADERS,
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "An access token from POST /api/v1/auth/login, "
                                        "sent as `Authorization: Bearer <token>`"},
                API_KEY: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                          "description": "An API key, for scripts and other machines"},
            },
        },
        # Either scheme authenticates a request; operations without a token say so with
        # an empty `security` list of their own.
        "security": [{BEARER: []}, {API_KEY: []}],
    }
