"""JWT issue/decode and every way a token must be rejected."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import jwt
import pytest

from printhost.api.auth.tokens import InvalidToken, TokenService

SECRET = b"k" * 64
OTHER_SECRET = b"z" * 64
T0 = 1_700_000_000


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock) -> TokenService:
    return TokenService(SECRET, "printhost", 3600, clock=clock)


def _claims(**overrides):
    claims = {"sub": "alice", "roles": ["operator"], "ver": 2, "iss": "printhost",
              "aud": "printhost", "iat": T0, "nbf": T0, "exp": T0 + 3600, "jti": "abc123"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


_DROP = object()


def _sign(claims, key=SECRET, alg="HS256", headers=None):
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_issue_and_decode_round_trip(service):
    token, expires = service.issue("alice", ["operator"], 2)
    assert expires == datetime.fromtimestamp(T0 + 3600, tz=timezone.utc)
    claims = service.decode(token)
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["operator"]
    assert claims["ver"] == 2
    assert claims["iss"] == claims["aud"] == "printhost"
    assert claims["iat"] == claims["nbf"] == T0
    assert claims["exp"] == T0 + 3600
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_has_a_unique_jti(service):
    a, _ = service.issue("alice", ["admin"], 0)
    b, _ = service.issue("alice", ["admin"], 0)
    assert service.decode(a)["jti"] != service.decode(b)["jti"]


def test_expiry_boundary_has_no_leeway(service, clock):
    token, _ = service.issue("alice", ["viewer"], 0)
    clock.now = T0 + 3599.999
    assert service.decode(token)["sub"] == "alice"
    clock.now = T0 + 3600
    with pytest.raises(InvalidToken, match="expired"):
        service.decode(token)


def test_not_yet_valid(service, clock):
    token = _sign(_claims(nbf=T0 + 10))
    with pytest.raises(InvalidToken, match="not valid yet"):
        service.decode(token)
    clock.now = T0 + 10
    assert service.decode(token)["sub"] == "alice"


def test_issued_in_the_future(service):
    with pytest.raises(InvalidToken, match="future"):
        service.decode(_sign(_claims(iat=T0 + 5)))


def test_signed_with_another_secret(service):
    with pytest.raises(InvalidToken, match="signature"):
        service.decode(_sign(_claims(), key=OTHER_SECRET))


def test_token_from_another_service_instance_with_other_secret(clock):
    foreign = TokenService(OTHER_SECRET, "printhost", 3600, clock=clock)
    token, _ = foreign.issue("alice", ["admin"], 0)
    with pytest.raises(InvalidToken):
        TokenService(SECRET, "printhost", 3600, clock=clock).decode(token)


def test_alg_none(service):
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    with pytest.raises(InvalidToken, match="algorithm"):
        service.decode(unsigned)
    # Same, but with the HS256 signature of the payload kept in place.
    signed = _sign(_claims())
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{signed.split('.', 1)[1]}"
    with pytest.raises(InvalidToken):
        service.decode(forged)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms(service, alg):
    with pytest.raises(InvalidToken, match="algorithm"):
        service.decode(_sign(_claims(), alg=alg))


def test_tampered_payload(service):
    token, _ = service.issue("alice", ["viewer"], 0)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    with pytest.raises(InvalidToken, match="signature"):
        service.decode(f"{header}.{_b64(claims)}.{signature}")


def test_tampered_signature(service):
    token, _ = service.issue("alice", ["viewer"], 0)
    head, sig = token.rsplit(".", 1)
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(InvalidToken):
        service.decode(f"{head}.{flipped}")


@pytest.mark.parametrize("token", ["", "not a token", "a.b", "a.b.c", "....",
                                   "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"])
def test_malformed(service, token):
    with pytest.raises(InvalidToken):
        service.decode(token)


def test_non_string_token(service):
    with pytest.raises(InvalidToken):
        service.decode(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("claim", ["sub", "roles", "ver", "iss", "aud", "iat", "nbf", "exp",
                                   "jti"])
def test_missing_claim(service, claim):
    with pytest.raises(InvalidToken):
        service.decode(_sign(_claims(**{claim: _DROP})))


@pytest.mark.parametrize("overrides", [
    {"iss": "someone-else"},
    {"aud": "someone-else"},
    {"aud": ["printhost", "other"]},
])
def test_wrong_issuer_or_audience(service, overrides):
    with pytest.raises(InvalidToken):
        service.decode(_sign(_claims(**overrides)))


@pytest.mark.parametrize("overrides", [
    {"sub": ""},
    {"sub": 42},
    {"roles": "admin"},
    {"roles": [1]},
    {"ver": "2"},
    {"ver": True},
    {"ver": 1.5},
    {"jti": ""},
])
def test_wrongly_typed_claims(service, overrides):
    with pytest.raises(InvalidToken):
        service.decode(_sign(_claims(**overrides)))


def test_valid_hand_made_token_is_accepted(service):
    """The rejection tests above differ from this one only in the defect they add."""
    assert service.decode(_sign(_claims()))["ver"] == 2


def test_issuer_setting_is_honoured(clock):
    service = TokenService(SECRET, "shop-printer", 60, clock=clock)
    token, _ = service.issue("bob", ["viewer"], 1)
    assert service.decode(token)["aud"] == "shop-printer"
    with pytest.raises(InvalidToken):
        TokenService(SECRET, "printhost", 60, clock=clock).decode(token)


@pytest.mark.parametrize("kwargs", [
    {"secret": b"short"},
    {"secret": "k" * 48},
    {"issuer": ""},
    {"ttl_s": 0},
])
def test_constructor_rejects_bad_arguments(kwargs):
    args = {"secret": SECRET, "issuer": "printhost", "ttl_s": 60} | kwargs
    with pytest.raises(ValueError):
        TokenService(**args)
