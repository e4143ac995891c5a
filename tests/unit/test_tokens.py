"""JWT issue/decode, key ids and the keyring, and every way a token must be rejected."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import jwt
import pytest

from printhost.api.auth.tokens import (ACCESS, REFRESH, InvalidToken, KeyRing, SigningKey,
                                       TokenService, key_id)
from tests.auth_support import Clock, b64json as _b64, forge_hs256 as _hs256

SECRET = b"k" * 64
OTHER_SECRET = b"z" * 64
T0 = 1_700_000_000


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def service(clock) -> TokenService:
    return TokenService(SECRET, "printhost", 3600, clock=clock, refresh_ttl_s=86400)


_DROP = object()


def _claims(**overrides):
    claims = {"sub": "alice", "roles": ["operator"], "ver": 2, "iss": "printhost",
              "aud": "printhost", "iat": T0, "nbf": T0, "exp": T0 + 3600, "jti": "abc123",
              "sid": "session1", "typ": "access"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


def _sign(claims, key=SECRET, alg="HS256", headers=None, kid=_DROP):
    hdrs = {"kid": key_id(key) if kid is _DROP else kid}
    hdrs.update(headers or {})
    if hdrs["kid"] is None:
        del hdrs["kid"]
    return jwt.encode(claims, key, algorithm=alg, headers=hdrs)


# --------------------------------------------------------------------------- issuing


def test_issue_and_decode_round_trip(service):
    token, expires = service.issue("alice", ["operator"], 2)
    assert expires == datetime.fromtimestamp(T0 + 3600, tz=timezone.utc)
    claims = service.decode(token)
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["operator"]
    assert claims["ver"] == 2
    assert claims["typ"] == ACCESS
    assert claims["iss"] == claims["aud"] == "printhost"
    assert claims["iat"] == claims["nbf"] == T0
    assert claims["exp"] == T0 + 3600
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert isinstance(claims["sid"], str) and len(claims["sid"]) >= 12
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": key_id(SECRET)}


def test_key_id_is_a_stable_fingerprint_that_hides_the_secret():
    assert key_id(SECRET) == key_id(b"k" * 64)
    assert key_id(SECRET) != key_id(OTHER_SECRET)
    assert key_id(SECRET).startswith("k") and len(key_id(SECRET)) == 17
    assert SECRET.decode()[:8] not in key_id(SECRET)


def test_pair_shares_the_session_and_has_its_own_lifetimes(service, clock):
    pair = service.issue_pair("alice", ["viewer"], 7)
    access = service.decode(pair.access_token)
    refresh = service.decode(pair.refresh_token, REFRESH)
    assert access["sid"] == refresh["sid"] == pair.sid
    assert access["jti"] != refresh["jti"]
    assert access["exp"] == T0 + 3600 and refresh["exp"] == T0 + 86400
    assert pair.refresh_expires == datetime.fromtimestamp(T0 + 86400, tz=timezone.utc)
    again = service.issue_pair("alice", ["viewer"], 7, sid=pair.sid)
    assert service.decode(again.access_token)["sid"] == pair.sid


def test_each_token_has_a_unique_jti_and_session(service):
    a, _ = service.issue("alice", ["admin"], 0)
    b, _ = service.issue("alice", ["admin"], 0)
    assert service.decode(a)["jti"] != service.decode(b)["jti"]
    assert service.decode(a)["sid"] != service.decode(b)["sid"]


def test_refresh_is_not_an_access_token_and_vice_versa(service):
    pair = service.issue_pair("alice", ["admin"], 0)
    with pytest.raises(InvalidToken, match="'refresh' token where 'access'"):
        service.decode(pair.refresh_token)
    with pytest.raises(InvalidToken, match="'access' token where 'refresh'"):
        service.decode(pair.access_token, REFRESH)
    with pytest.raises(InvalidToken):
        service.decode(_sign(_claims(typ="id")))
    with pytest.raises(ValueError):
        service.issue("alice", ["admin"], 0, token_type="id")


# --------------------------------------------------------------------------- times


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


# --------------------------------------------------------------------------- algorithms


def test_alg_none(service):
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': key_id(SECRET)})}.{_b64(_claims())}."
    with pytest.raises(InvalidToken, match="algorithm"):
        service.decode(unsigned)
    # Same, but with the HS256 signature of the payload kept in place.
    signed = _sign(_claims())
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{signed.split('.', 1)[1]}"
    with pytest.raises(InvalidToken):
        service.decode(forged)
    for alg in ("None", "NONE", "", None):
        with pytest.raises(InvalidToken, match="algorithm"):
            service.decode(f"{_b64({'alg': alg, 'kid': key_id(SECRET)})}.{_b64(_claims())}.")


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms(service, alg):
    with pytest.raises(InvalidToken, match="algorithm"):
        service.decode(_sign(_claims(), alg=alg))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA"])
def test_algorithm_confusion_with_a_correct_hmac(service, alg):
    """The classic confusion: a header naming an asymmetric algorithm over a payload MACed
    with a key the server has. The allow-list refuses it before any key is used."""
    token = _hs256({"alg": alg, "typ": "JWT", "kid": key_id(SECRET)}, _claims(), SECRET)
    with pytest.raises(InvalidToken, match="algorithm"):
        service.decode(token)


@pytest.mark.parametrize("extra", [{"jku": "http://evil/jwks"}, {"jwk": {"kty": "oct"}},
                                   {"x5u": "http://evil/cert"}, {"crit": ["exp"]},
                                   {"typ": "at+jwt"}])
def test_unexpected_header_members(service, extra):
    header = {"alg": "HS256", "typ": "JWT", "kid": key_id(SECRET), **extra}
    with pytest.raises(InvalidToken):
        service.decode(_hs256(header, _claims(), SECRET))


# --------------------------------------------------------------------------- keys


def test_signed_with_another_secret_has_an_unknown_kid(service):
    with pytest.raises(InvalidToken, match="unknown or retired key"):
        service.decode(_sign(_claims(), key=OTHER_SECRET))


def test_right_kid_wrong_key_is_a_bad_signature(service):
    with pytest.raises(InvalidToken, match="signature"):
        service.decode(_sign(_claims(), key=OTHER_SECRET, kid=key_id(SECRET)))


@pytest.mark.parametrize("kid", [None, "", 5, "k" + "0" * 16])
def test_missing_or_unknown_kid(service, kid):
    header = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    with pytest.raises(InvalidToken, match="(?i)key id"):
        service.decode(_hs256(header, _claims(), SECRET))


def test_token_from_another_service_instance_with_other_secret(clock):
    foreign = TokenService(OTHER_SECRET, "printhost", 3600, clock=clock)
    token, _ = foreign.issue("alice", ["admin"], 0)
    with pytest.raises(InvalidToken):
        TokenService(SECRET, "printhost", 3600, clock=clock).decode(token)


def test_keyring_accepts_retired_keys_until_their_deadline(clock):
    old = TokenService(OTHER_SECRET, "printhost", 3600, clock=clock)
    old_token, _ = old.issue("alice", ["admin"], 0)
    ring = KeyRing(SECRET, [SigningKey(OTHER_SECRET, accept_until=T0 + 100)])
    service = TokenService(ring, "printhost", 3600, clock=clock)
    new_token, _ = service.issue("alice", ["admin"], 0)
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(SECRET)
    assert service.decode(old_token)["sub"] == "alice"
    assert service.decode(new_token)["sub"] == "alice"
    clock.now = T0 + 100
    with pytest.raises(InvalidToken, match="retired"):
        service.decode(old_token)
    assert service.decode(new_token)["sub"] == "alice"
    assert set(ring.kids()) == {key_id(SECRET), key_id(OTHER_SECRET)}


def test_keyring_provider_is_asked_every_time(clock):
    rings = [KeyRing(SECRET)]
    service = TokenService(lambda: rings[-1], "printhost", 3600, clock=clock)
    first, _ = service.issue("alice", ["admin"], 0)
    rings.append(KeyRing(OTHER_SECRET, [SigningKey(SECRET, T0 + 10)]))
    second, _ = service.issue("alice", ["admin"], 0)
    assert jwt.get_unverified_header(second)["kid"] == key_id(OTHER_SECRET)
    assert service.decode(first)["sub"] == service.decode(second)["sub"] == "alice"
    rings.append(KeyRing(OTHER_SECRET))
    with pytest.raises(InvalidToken):
        service.decode(first)


def test_short_keys_are_refused_or_ignored():
    with pytest.raises(ValueError):
        KeyRing(b"short")
    ring = KeyRing(SECRET, [SigningKey(b"tiny")])
    assert ring.kids() == [key_id(SECRET)]


# --------------------------------------------------------------------------- tampering


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
                                   "jti", "sid", "typ"])
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
    {"jti": "x" * 65},
    {"sid": 3},
    {"exp": "later"},
])
def test_wrongly_typed_claims(service, overrides):
    with pytest.raises(InvalidToken):
        service.decode(_sign(_claims(**overrides)))


def test_valid_hand_made_token_is_accepted(service):
    """The rejection tests above differ from this one only in the defect they add."""
    assert service.decode(_sign(_claims()))["ver"] == 2
    assert service.decode(_hs256({"alg": "HS256", "kid": key_id(SECRET)}, _claims(),
                                 SECRET))["sub"] == "alice"


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
    {"refresh_ttl_s": -1},
])
def test_constructor_rejects_bad_arguments(kwargs):
    args = {"secret": SECRET, "issuer": "printhost", "ttl_s": 60} | kwargs
    with pytest.raises(ValueError):
        TokenService(**args)


def test_a_verified_access_token_is_checked_again_on_every_use(service, clock):
    """The signature of an access token is verified once per token text; its times and
    key are checked on every use, and what a caller does to the claims stays its own."""
    token, _ = service.issue("alice", ["viewer"], 0)
    first = service.decode(token)
    first["sub"] = "mallory"
    assert service.decode(token)["sub"] == "alice"
    assert "_kid" not in service.decode(token)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        service.decode(tampered)
    clock.now = T0 + 3600
    with pytest.raises(InvalidToken, match="expired"):
        service.decode(token)
