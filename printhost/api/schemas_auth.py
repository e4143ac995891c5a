"""Request and response schemas of the authentication, user and API-key endpoints.

Declared like those in schemas.py (one declaration validates requests and documents
them) and added to `schemas.ALL_SCHEMAS` on import, so the OpenAPI document's
components list them next to the others.
"""

from __future__ import annotations

from printhost.api.schemas import ALL_SCHEMAS, Field, Schema
from printhost.store.users import PASSWORD_MAX, PASSWORD_MIN, ROLES, USERNAME_MAX

_ROLE = "One of viewer, operator, admin (each may do what the ones before it may)"

TOKEN_PAIR = Schema("TokenPair", {
    "token": Field("string", "Access token (JWT) to send as `Authorization: Bearer <token>`"),
    "token_type": Field("string", "Always \"bearer\"", enum=("bearer",)),
    "expires_at": Field("string", "UTC ISO 8601 expiry time of the access token"),
    "refresh_token": Field("string", "Refresh token for `POST /api/v1/auth/refresh`; "
                           "single-use, never accepted as a bearer token"),
    "refresh_expires_at": Field("string", "UTC ISO 8601 expiry time of the refresh token"),
}, "A login session's access and refresh tokens")

REFRESH_REQUEST = Schema("RefreshRequest", {
    "refresh_token": Field("string", "The refresh token from the last login or refresh",
                           min_length=1, max_length=4096),
})

PASSWORD_CHANGE_REQUEST = Schema("PasswordChangeRequest", {
    "current_password": Field("string", "The password in use now", min_length=1,
                              max_length=PASSWORD_MAX),
    "new_password": Field("string", "The new password", min_length=PASSWORD_MIN,
                          max_length=PASSWORD_MAX),
})

SETUP_STATUS = Schema("SetupStatus", {
    "setup_required": Field("boolean", "True while no user exists and the first admin "
                            "can be created with the setup code"),
    "expires_at": Field("string", "UTC ISO 8601 expiry of the current setup code; null "
                        "when setup is not required", nullable=True),
}, "Whether first-boot setup is pending (the code itself is never sent)")

SETUP_REQUEST = Schema("SetupRequest", {
    "code": Field("string", "The setup code from the service log or "
                  "<state dir>/setup_code.json; case and dashes do not matter",
                  min_length=1, max_length=64),
    "username": Field("string", "Name of the first admin", min_length=1,
                      max_length=USERNAME_MAX),
    "password": Field("string", "Password of the first admin", min_length=PASSWORD_MIN,
                      max_length=PASSWORD_MAX),
})

USER = Schema("User", {
    "username": Field("string", "User name"),
    "role": Field("string", _ROLE, enum=ROLES),
    "active": Field("boolean", "False for a deactivated user, who can neither log in nor "
                    "use tokens"),
    "created_at": Field("string", "UTC ISO 8601 creation time; null when the backend "
                        "does not know", nullable=True),
}, "A user account (never its password hash)")

USER_LIST = Schema("UserList", {"users": Field("array", "Every user, in creation order",
                                               items=USER)})

USER_CREATE_REQUEST = Schema("UserCreateRequest", {
    "username": Field("string", "1 to 32 letters, digits, '_', '.' or '-'; unique "
                      "ignoring case", min_length=1, max_length=USERNAME_MAX),
    "role": Field("string", _ROLE, enum=ROLES),
    "password": Field("string", "Initial password", min_length=PASSWORD_MIN,
                      max_length=PASSWORD_MAX),
})

USER_UPDATE_REQUEST = Schema("UserUpdateRequest", {
    "role": Field("string", "New role", required=False, enum=ROLES),
    "active": Field("boolean", "false deactivates the user (and revokes their tokens), "
                    "true reactivates", required=False),
}, "At least one of role and active")

PASSWORD_RESET_REQUEST = Schema("PasswordResetRequest", {
    "password": Field("string", "The user's new password", min_length=PASSWORD_MIN,
                      max_length=PASSWORD_MAX),
})

_API_KEY_FIELDS = {
    "id": Field("string", "The key's id (12 hex digits), used to revoke it"),
    "name": Field("string", "What the key is for"),
    "role": Field("string", _ROLE, enum=ROLES),
    "created_at": Field("string", "UTC ISO 8601 creation time"),
    "created_by": Field("string", "The admin who created it", nullable=True),
    "expires_at": Field("string", "UTC ISO 8601 expiry time"),
}

API_KEY = Schema("ApiKey", dict(_API_KEY_FIELDS), "An API key (never the key itself)")

API_KEY_LIST = Schema("ApiKeyList", {"api_keys": Field("array", "Every key, oldest first",
                                                       items=API_KEY)})

API_KEY_CREATE_REQUEST = Schema("ApiKeyCreateRequest", {
    "name": Field("string", "What the key is for: 1 to 64 letters, digits, spaces or "
                  "_ . : @ -", min_length=1, max_length=64),
    "role": Field("string", "The role requests with this key get", enum=ROLES),
    "expires_in_days": Field("integer", "Lifetime in days (default auth.api_key_ttl_days)",
                             required=False, minimum=1, maximum=3650),
})

API_KEY_CREATED = Schema("ApiKeyCreated", {
    **_API_KEY_FIELDS,
    "key": Field("string", "The key, to send as `X-Api-Key: <key>`; shown only in this "
                 "response"),
}, "A new API key, with the key itself (shown once)")

AUTH_SCHEMAS = [TOKEN_PAIR, REFRESH_REQUEST, PASSWORD_CHANGE_REQUEST, SETUP_STATUS,
                SETUP_REQUEST, USER, USER_LIST, USER_CREATE_REQUEST, USER_UPDATE_REQUEST,
                PASSWORD_RESET_REQUEST, API_KEY, API_KEY_LIST, API_KEY_CREATE_REQUEST,
                API_KEY_CREATED]

_published = {s.name for s in ALL_SCHEMAS}
ALL_SCHEMAS.extend(s for s in AUTH_SCHEMAS if s.name not in _published)
