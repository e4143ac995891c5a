"""The API side: listener, limits and state directory (`[server]`), authentication (`[auth]`),
mDNS discovery (`[discovery]`) and the job queue (`[jobs]`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from printhost.config.fields import ConfigError, setting


@dataclass(frozen=True)
class ServerSettings:
    """HTTP API listener and where persistent state lives."""
    host: str = setting("0.0.0.0", doc="address the API listens on")
    port: int = setting(7130, min=1, max=65535, doc="TCP port of the API")
    state_dir: str = setting("~/.local/state/printhost",
                             doc="directory for the store, uploaded files and secrets")
    max_body_bytes: int = setting(65536, min=1024, max=16 * 1024 * 1024,
                                  doc="largest JSON request body accepted (413 above)")
    max_upload_bytes: int = setting(256 * 1024 * 1024, min=1024, max=8 * 1024 ** 3,
                                    doc="largest G-code upload accepted (413 above)")
    log_level: str = setting("info", choices=("debug", "info", "warning", "error"),
                             doc="log verbosity")
    max_json_depth: int = setting(16, min=2, max=256,
                                  doc="deepest nesting of arrays and objects accepted in a JSON "
                                      "request body (413 deeper)")
    rate_limit_per_min: float = setting(
         30.0, min=0.0, max=100000.0,
         doc="sustained requests per minute one client address may make to each expensive "
             "endpoint (upload, print start, PID tune start and save); 429 with Retry-After "
             "beyond it; 0 switches the limit off")
    rate_limit_burst: int = setting(10, min=1, max=100000,
                                    doc="requests a client may make to one expensive endpoint "
                                        "in a quick burst before rate_limit_per_min applies")
    cors_origins: list = setting([], doc="web origins (scheme://host[:port]) whose pages may "
                                         "call the API from a browser; empty: none")
    cors_max_age_s: int = setting(600, min=0, max=86400,
                                  doc="how long a browser may cache a CORS preflight answer")
    health_min_free_mb: int = setting(100, min=0, max=1024 * 1024,
                                      doc="free space in the state directory below which "
                                          "GET /api/v1/health reports the disk degraded")
    storage_quota_mb: int = setting(0, min=0, max=16 * 1024 * 1024,
                                    doc="most the stored G-code files may hold together "
                                        "(uploads beyond it get 507); 0 for no quota but "
                                        "the disk's free space")
    ws_status_hz: float = setting(4.0, min=0.5, max=20.0,
                                  doc="how often WebSocket clients (/api/v1/ws) are sent "
                                      "what changed in the status")
    max_websockets: int = setting(64, min=1, max=1024,
                                  doc="WebSocket clients connected at once; one more is "
                                      "closed with 1013 (try again later)")
    download_token_ttl_s: float = setting(300.0, min=5.0, max=86400.0,
                                          doc="how long a one-time download link "
                                              "(POST /api/v1/files/{path}/download-token) "
                                              "stays valid")
    max_connections: int = setting(
         256, min=4, max=16384,
         doc="open client connections held at once; at the limit a new connection replaces "
             "the one that has waited longest without sending a request, or is refused with "
             "503 when every connection is busy (keep well below the unit's LimitNOFILE)")
    header_timeout_s: float = setting(
         10.0, min=0.1, max=600.0,
         doc="time a client has to send a complete request head (line and headers) after it "
             "connects or starts a request; the connection is closed after it (408 if it "
             "sent part of a head)")
    body_idle_timeout_s: float = setting(
         30.0, min=0.1, max=3600.0,
         doc="longest pause allowed between two pieces of a request body (an upload); the "
             "connection is closed after it")
    keep_alive_timeout_s: float = setting(
         5.0, min=0.1, max=600.0,
         doc="how long an idle connection is kept open after a response for the client's "
             "next request")
    access_log: str = setting("errors", choices=("all", "errors", "off"),
                              doc="the JSON record logged per request (logger "
                                  "printhost.api.access): for every request, only for those "
                                  "answered with an error status (400 and above: the "
                                  "default, so a Pi's SD card and journal are not worn by "
                                  "status polling), or none")

    def __post_init__(self) -> None:
        # A web origin as browsers send it: scheme, host (name, IPv4 or [IPv6]), optional port.
        import re
        origin_re = re.compile(r"https?://(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"
                               r"(?::[0-9]{1,5})?", re.IGNORECASE)
        for origin in self.cors_origins:
            if not isinstance(origin, str) or not origin_re.fullmatch(origin):
                raise ConfigError(f"server.cors_origins: {origin!r} is not an origin "
                                  "like https://example.net or http://10.0.0.5:8080 "
                                  "(scheme, host and optional port; no path, no wildcard)")


@dataclass(frozen=True)
class AuthSettings:
    """Users, tokens, API keys and brute-force protection (docs/security.md)."""
    backend: str = setting("store", choices=("store", "file", "http"),
                           doc="where users and passwords come from: store (the users in the "
                               "state directory, managed with the API and `printhost user`), "
                               "file (the read-only TOML file users_file) or http (an external "
                               "service at http_url)")
    users_file: str = setting("", doc="TOML file of users for backend = \"file\" "
                                      "(docs/security.md has the format)")
    http_url: str = setting("", doc="http(s) URL that checks a user name and password, for "
                                    "backend = \"http\" (docs/security.md has the protocol)")
    http_timeout_s: float = setting(5.0, min=0.5, max=60.0,
                                    doc="how long a login waits for the http backend")
    http_token_file: str = setting("", doc="file holding a bearer token sent to http_url; "
                                           "empty sends none")
    token_ttl_s: int = setting(3600, min=60, max=30 * 86400,
                               doc="lifetime of an access token, s")
    refresh_ttl_s: int = setting(7 * 86400, min=300, max=90 * 86400,
                                 doc="lifetime of a refresh token, s; also how long a rotated-out "
                                     "signing key is still accepted")
    issuer: str = setting("printhost", doc="JWT `iss` and `aud` claim")
    jwt_secret_file: str = setting(
         "", doc="file holding the token signing secret (further lines: earlier secrets still "
                 "accepted); empty means <state_dir>/jwt_secret. The environment variable "
                 "PRINTHOST_JWT_SECRET overrides both")
    password_scrypt_log2_n: int = setting(14, min=10, max=20,
                                          doc="scrypt cost: N = 2^this; memory per hash is "
                                              "128 * r * N bytes (16 MiB by default)")
    password_scrypt_r: int = setting(8, min=1, max=32, doc="scrypt block size r")
    password_scrypt_p: int = setting(1, min=1, max=16, doc="scrypt parallelism p")
    login_max_failures: int = setting(5, min=1, max=1000,
                                      doc="failed logins for one user name from one address "
                                          "before lockout (four times as many for a user name "
                                          "from anywhere, or for an address)")
    login_window_s: float = setting(300.0, min=1.0, max=86400.0,
                                    doc="window in which failed logins are counted")
    login_lockout_s: float = setting(60.0, min=1.0, max=86400.0,
                                     doc="first lockout; each further lockout of the same key "
                                         "doubles it")
    login_lockout_max_s: float = setting(3600.0, min=1.0, max=7 * 86400.0,
                                         doc="longest lockout; a key without failures for this "
                                             "long starts again from login_lockout_s")
    setup_code_ttl_s: int = setting(3600, min=60, max=7 * 86400,
                                    doc="how long a first-boot setup code is valid")
    api_key_ttl_days: int = setting(365, min=1, max=3650,
                                    doc="lifetime of an API key when its creator gives none")

    def __post_init__(self) -> None:
        if 128 * self.password_scrypt_r * 2 ** self.password_scrypt_log2_n > 256 * 1024 ** 2:
            raise ConfigError("auth.password_scrypt_r: 128 * r * 2^password_scrypt_log2_n "
                              "must not exceed 256 MiB")
        if self.login_lockout_max_s < self.login_lockout_s:
            raise ConfigError("auth.login_lockout_max_s: must not be below login_lockout_s")
        if self.backend == "file" and not self.users_file:
            raise ConfigError("auth.users_file: required with backend = \"file\"")
        if self.backend == "http" and not self.http_url.startswith(("http://", "https://")):
            raise ConfigError("auth.http_url: an http:// or https:// URL is required with "
                              "backend = \"http\"")


@dataclass(frozen=True)
class DiscoverySettings:
    """mDNS/DNS-SD advertisement on the LAN."""
    enabled: bool = setting(True, doc="advertise _printhost._tcp and _http._tcp")
    instance_name: str = setting("", doc="service instance name; empty means 'printhost on <hostname>'")

    def display_name(self) -> str:
        """The name announced over mDNS and shown on the home page."""
        return self.instance_name or f"printhost on {os.uname().nodename}"


@dataclass(frozen=True)
class JobsSettings:
    """The job queue (docs/api.md, Jobs)."""
    auto_start: bool = setting(
        False, doc="start the oldest queued job by itself when the printer is idle: on "
                   "submission, and after a job completes. Only for printers that clear "
                   "their bed themselves (a belt printer, an ejection routine): otherwise "
                   "the next part is printed onto the last")
    max_queued_per_user: int = setting(20, min=1, max=10000,
                                       doc="jobs one user may have queued at once (429 "
                                           "beyond)")
    checkpoint_interval_s: float = setting(
        5.0, min=0.5, max=10.0,
        doc="while a job prints, its power-loss checkpoint is saved this often (when it "
            "changed), s; a resume repeats at most about this much printing more")
