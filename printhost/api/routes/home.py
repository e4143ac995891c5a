"""`GET /`: a small HTML page for people who open the printer's address in a browser.

mDNS announces the service as `_http._tcp` with `path=/`, so a service browser leads
here. The page needs no login and shows only what `GET /api/v1/health` already tells
anyone (name, release, whether the control process runs) plus the printer's state
word; no job, file or user names. Everything is escaped, and the page loads nothing
from anywhere (no scripts, no external styles or images), which its Content Security
Policy enforces.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse

from printhost import __version__
from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet

endpoints = EndpointSet()

OPENAPI_PATH = "/api/v1/openapi.json"
HEALTH_PATH = "/api/v1/health"

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;"
          "padding:0 1em;line-height:1.5}dt{font-weight:bold}code{font-size:0.95em}")


def render_home(name: str, version: str, state: str, control: str) -> str:
    """The page; every value is escaped."""
    e = escape
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(name)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{e(name)}</h1>\n"
        "<dl>\n"
        f"<dt>printhost</dt><dd id=\"version\">{e(version)}</dd>\n"
        f"<dt>Printer state</dt><dd id=\"state\">{e(state)}</dd>\n"
        f"<dt>Control process</dt><dd id=\"control\">{e(control)}</dd>\n"
        "</dl>\n"
        "<p>This printer is driven through its HTTP API under <code>/api/v1</code>. "
        f'The API is described by its OpenAPI document, <a href="{e(OPENAPI_PATH)}">'
        f"{e(OPENAPI_PATH)}</a>; <a href=\"{e(HEALTH_PATH)}\">{e(HEALTH_PATH)}</a> "
        "reports whether the service is ready. Everything else needs a login.</p>\n"
        "</body>\n</html>\n")


@endpoints.route("GET", "/", summary="Home page (HTML)", role=None, response=None,
                 media_type="text/html")
async def home(request: Request, _: Principal | None) -> HTMLResponse:
    """No authentication. A small HTML page with the printer's name, the printhost
    release, the printer's state and links to the OpenAPI document and the health
    check; it loads no scripts or external assets."""
    link = request.app.state.link
    reason = link.unavailable_reason()
    state = str(link.status().get("state") or "unknown")
    name = request.app.state.settings.discovery.display_name()
    page = render_home(name, __version__, state, "running" if reason is None else reason)
    return HTMLResponse(page, headers=_HEADERS)
