"""The OpenAPI 3.1 document, generated from the endpoint declarations and schemas."""

from __future__ import annotations

from typing import Any

from printhost import __version__
from printhost.api.endpoint import MULTIPART, Endpoint
from printhost.api.errors import STATUS_DESCRIPTIONS
from printhost.api.schemas import ALL_SCHEMAS, Schema

_ROLE_TEXT = {"viewer": "viewer (any logged-in user)", "operator": "operator or admin",
              "admin": "admin"}


def _ref(schema: Schema) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema.name}"}


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": ep.summary,
        "description": " ".join(ep.description.split()),
        "operationId": f"{ep.method.lower()}_{ep.path.strip('/').replace('/', '_').replace('{', '').replace('}', '').replace('.', '_')}",
        "responses": {},
    }
    if ep.role is None:
        op["security"] = []
    else:
        op["description"] += f" Requires role: {_ROLE_TEXT[ep.role]}."
    if isinstance(ep.request, Schema):
        op["requestBody"] = {"required": ep.request.name != "Empty",
                             "content": {"application/json": {"schema": _ref(ep.request)}}}
    elif ep.request == MULTIPART:
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream",
                                    "description": "The G-code file"}}}}}}
    ok: dict[str, Any] = {"description": "Success"}
    if ep.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(ep.response)}}
    else:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    op["responses"][str(ep.status)] = ok
    for code in ep.all_errors():
        op["responses"][str(code)] = {
            "description": STATUS_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": _ref(ALL_SCHEMAS[0])}},
        }
    path_params = [seg[1:-1] for seg in ep.path.split("/") if seg.startswith("{")]
    if path_params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string"}} for p in path_params]
    return op


def build_openapi(endpoints: list[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "printhost API",
            "version": __version__,
            "description": "Control and status of a 3D printer run by printhost. Every error "
                           "is a JSON object with an `error` string. The major version is in "
                           "the path (/api/v1); fields may be added within a version, never "
                           "removed or changed in meaning.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {s.name: s.json_schema() for s in ALL_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
