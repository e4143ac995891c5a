"""scrypt password hashing: format, verification and rejection of malformed hashes."""

from __future__ import annotations

import base64
import hashlib

import pytest

from printhost.api.auth import passwords
from printhost.api.auth.passwords import dummy_hash, hash_password, verify_password


def test_hash_format_and_round_trip():
    encoded = hash_password("correct horse")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("", encoded)


def test_hash_matches_stdlib_scrypt():
    encoded = hash_password("pw-12345")
    _, n, r, p, salt, digest = encoded.split("$")
    expected = hashlib.scrypt(b"pw-12345", salt=base64.b64decode(salt), n=int(n), r=int(r),
                              p=int(p), dklen=32)
    assert base64.b64decode(digest) == expected


def test_salt_is_random():
    assert hash_password("same password") != hash_password("same password")


def test_unicode_password():
    encoded = hash_password("pässwörd-€")
    assert verify_password("pässwörd-€", encoded)
    assert not verify_password("passwort-€", encoded)


def test_parameters_are_read_from_the_string():
    """A hash made with other (cheaper) parameters still verifies."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"legacy-pw", salt=salt, n=1024, r=4, p=2, dklen=24)
    encoded = (f"scrypt$1024$4$2${base64.b64encode(salt).decode()}"
               f"${base64.b64encode(digest).decode()}")
    assert verify_password("legacy-pw", encoded)
    assert not verify_password("legacy-pX", encoded)


def _swap(encoded: str, index: int, value: str) -> str:
    parts = encoded.split("$")
    parts[index] = value
    return "$".join(parts)


@pytest.fixture(scope="module")
def good() -> str:
    return hash_password("secret-pw")


@pytest.mark.parametrize("mutate", [
    lambda h: "",
    lambda h: "garbage",
    lambda h: h.replace("scrypt$", "bcrypt$", 1),
    lambda h: h + "$extra",
    lambda h: h.rsplit("$", 1)[0],
    lambda h: _swap(h, 1, "16383"),          # n not a power of two
    lambda h: _swap(h, 1, str(2 ** 24)),     # n beyond the accepted bound
    lambda h: _swap(h, 1, "1"),
    lambda h: _swap(h, 1, "+16384"),
    lambda h: _swap(h, 2, "0"),
    lambda h: _swap(h, 2, "1000"),
    lambda h: _swap(h, 3, "abc"),
    lambda h: _swap(h, 4, "!!not base64!!"),
    lambda h: _swap(h, 5, "short"),
    lambda h: _swap(h, 5, base64.b64encode(b"x" * 8).decode()),
], ids=lambda f: "")
def test_malformed_encodings_are_rejected(good, mutate):
    assert verify_password("secret-pw", good)
    assert verify_password("secret-pw", mutate(good)) is False


def test_non_string_hash_is_rejected():
    assert verify_password("secret-pw", None) is False  # type: ignore[arg-type]


def test_unencodable_password():
    with pytest.raises(ValueError):
        hash_password("bad\ud800")
    assert verify_password("bad\ud800", dummy_hash()) is False


def test_dummy_hash_is_lazy_stable_and_valid(monkeypatch):
    monkeypatch.setattr(passwords, "_dummy", None)
    first = passwords.DUMMY_HASH
    assert first == dummy_hash() == passwords.DUMMY_HASH
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("whatever-guess", first) is False
    with pytest.raises(AttributeError):
        passwords.NOT_A_THING  # noqa: B018


# --------------------------------------------------------------------------- parameters


def test_parameters_are_validated():
    from printhost.api.auth.passwords import ScryptParams
    assert ScryptParams.from_log2(14, 8, 1) == passwords.DEFAULT_PARAMS
    assert passwords.DEFAULT_PARAMS.memory_bytes == 16 * 1024 * 1024
    for bad in ((3000, 8, 1), (2 ** 21, 8, 1), (2 ** 14, 0, 1), (2 ** 14, 8, 17),
                (2 ** 20, 8, 1)):
        with pytest.raises(ValueError, match="scrypt parameters"):
            ScryptParams(*bad)


def test_hash_with_other_parameters_and_rehash_decision():
    from printhost.api.auth.passwords import ScryptParams, needs_rehash, params_of
    light = ScryptParams(2 ** 10, 8, 1)
    encoded = hash_password("pw-rehash-1", light)
    assert encoded.startswith("scrypt$1024$8$1$")
    assert params_of(encoded) == light
    # Verification reads the parameters from the string, whatever is configured now.
    assert verify_password("pw-rehash-1", encoded)
    assert needs_rehash(encoded)                       # against the defaults
    assert not needs_rehash(encoded, light)
    assert not needs_rehash(hash_password("pw-rehash-1"))
    assert needs_rehash("not a hash")
    assert params_of("scrypt$3$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==") is None
    # A hash with a shorter digest than printhost makes is renewed too.
    n, r, p, salt, digest = encoded.split("$")[1:]
    short = "$".join(["scrypt", n, r, p, salt, base64.b64encode(
        base64.b64decode(digest)[:16]).decode()])
    assert needs_rehash(short, light)


def test_dummy_hash_follows_the_parameters():
    from printhost.api.auth.passwords import ScryptParams, params_of
    light = ScryptParams(2 ** 10, 8, 1)
    assert params_of(dummy_hash(light)) == light
    assert dummy_hash(light) == dummy_hash(light)
    assert params_of(dummy_hash()) == passwords.DEFAULT_PARAMS


def test_concurrent_hashes_are_bounded(monkeypatch):
    """No more than HASH_SLOTS scrypt runs at once, however many threads ask."""
    import threading
    import time as _time
    running = 0
    peak = 0
    lock = threading.Lock()
    real = hashlib.scrypt

    def slow_scrypt(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        _time.sleep(0.02)
        with lock:
            running -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(passwords.hashlib, "scrypt", slow_scrypt)
    light = passwords.ScryptParams(2 ** 10, 8, 1)
    threads = [threading.Thread(target=hash_password, args=("pw-threads", light))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == passwords.HASH_SLOTS
