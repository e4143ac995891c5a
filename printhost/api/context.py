"""What the API layers learn about one request, for its log record and its headers.

`RequestContextMiddleware` creates one `RequestContext` per HTTP request and keeps it
in the ASGI scope; the dispatcher fills in the route template and the user, and the
error handlers read the request id so that a log line about a failure can be matched
to the response the client got.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

SCOPE_KEY = "printhost.context"
REQUEST_ID_HEADER = "X-Request-Id"

# An incoming request id is kept only if it is short and made of characters that
# cannot break a header or a log line; anything else is replaced by a fresh id.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")


def sane_request_id(value: str | None) -> str | None:
    if value and _SANE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class RequestContext:
    request_id: str
    method: str
    started: float = field(default_factory=time.perf_counter)
    route: str | None = None        # the path template, e.g. /api/v1/files/{path}
    user: str | None = None
    status: int | None = None


def context_of(scope: Any) -> RequestContext | None:
    ctx = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return ctx if isinstance(ctx, RequestContext) else None


def request_id_of(scope: Any) -> str:
    ctx = context_of(scope)
    return ctx.request_id if ctx is not None else "-"
