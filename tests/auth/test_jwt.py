"""Forged and broken tokens: every one rejected as UnauthenticatedError, never another error."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from organelle.auth.jwt import JwtVerifier
from organelle.errors import ConfigError, UnauthenticatedError
from organelle.testing import eventually
from tests.gateway.apps import (
    AUDIENCE,
    ISSUER,
    RSA_PRIVATE_PEM,
    RSA_PUBLIC_PEM,
    SECRET,
    claims,
    rs256,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{signature}"


def hs256_with_public_key() -> str:
    """The RS→HS key-confusion attack: HMAC-sign with the public key's PEM bytes."""
    import hashlib
    import hmac

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = hmac.new(RSA_PUBLIC_PEM.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def tampered() -> str:
    head, _, sig = rs256().split(".")
    return f"{head}.{b64(json.dumps(claims(roles=['admin'])).encode())}.{sig}"


def other_key() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims(), key, algorithm="RS256")


def _now() -> int:
    """Read when a token is made: a module-level time went stale in a slow suite run."""
    return int(time.time())


FORGED: dict[str, Any] = {
    "alg none": lambda: unsigned({"alg": "none", "typ": "JWT"}, claims()),
    "alg None": lambda: unsigned({"alg": "None"}, claims()),
    "alg NONE with signature": lambda: unsigned({"alg": "NONE"}, claims(), "c2ln"),
    "no alg": lambda: unsigned({"typ": "JWT"}, claims(), "c2ln"),
    "HS256 signed with the RS256 public key": hs256_with_public_key,
    "expired": lambda: rs256(exp=_now() - 60, iat=_now() - 600),
    "not yet valid": lambda: rs256(nbf=_now() + 600),
    "wrong audience": lambda: rs256(aud="someone-else"),
    "missing audience": lambda: rs256(aud=None),
    "wrong issuer": lambda: rs256(iss="https://evil.test"),
    "missing issuer": lambda: rs256(iss=None),
    "missing exp": lambda: rs256(exp=None),
    "bad signature": lambda: rs256()[:-6] + "AAAAAA",
    "claims tampered without re-signing": tampered,
    "signed by another key": other_key,
    "garbage": lambda: "not-a-token",
    "empty": lambda: "",
    "three dots of garbage": lambda: "a.b.c",
    "bad base64 header": lambda: "!!!." + rs256().split(".", 1)[1],
    "header is a list": lambda: unsigned([1, 2], claims(), "c2ln"),  # type: ignore[arg-type]
    "payload not json": lambda: b64(b'{"alg":"RS256"}') + "." + b64(b"nope") + ".c2ln",
    "exp is a string": lambda: rs256(exp="tomorrow"),
    "unknown crit header": lambda: jwt.encode(
        claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"crit": ["x-magic"], "x-magic": 1}
    ),
    "jku header to a canary": lambda: unsigned(
        {"alg": "RS256", "jku": "http://127.0.0.1:1/jwks.json", "kid": "x"}, claims(), "c2ln"
    ),
    "10 KB token": lambda: rs256(pad="x" * 10_000),
    "deeply nested header": lambda: b64(b'{"a":' * 5000 + b"1" + b"}" * 5000) + ".e30.c2ln",
}


@pytest.fixture(scope="module")
def verifier() -> JwtVerifier:
    return JwtVerifier(
        algorithms=["RS256"],
        public_key=RSA_PUBLIC_PEM,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_s=5,
    )


@pytest.mark.parametrize("name", list(FORGED))
def test_forged_tokens_are_rejected(verifier: JwtVerifier, name: str) -> None:
    with pytest.raises(UnauthenticatedError):
        verifier.verify(FORGED[name]())


def test_a_valid_token_is_accepted_and_cached(verifier: JwtVerifier) -> None:
    token = rs256()
    assert verifier.verify(token)["sub"] == "ada"
    assert verifier.verify(token) is verifier.verify(token)


def test_leeway_is_honoured_exactly(verifier: JwtVerifier) -> None:
    assert verifier.verify(rs256(exp=int(time.time()) - 2))["sub"] == "ada"
    with pytest.raises(UnauthenticatedError):
        verifier.verify(rs256(exp=int(time.time()) - 7))


async def test_cached_token_still_expires() -> None:
    v = JwtVerifier(algorithms=["HS256"], secret=SECRET, leeway_s=0)
    token = jwt.encode({"sub": "a", "exp": time.time() + 1.2}, SECRET, algorithm="HS256")
    assert v.verify(token)["sub"] == "a"

    def refused() -> None:
        try:
            v.verify(token)
        except UnauthenticatedError:
            return
        raise AssertionError("the cached token is still accepted")

    await eventually(refused, timeout_s=1.3, interval_s=0.05)  # it expires at 1.2 s


def test_jwks_picks_the_key_by_kid_and_binds_its_algorithm(tmp_path: Any) -> None:
    jwk = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(
            jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(
                RSA_PUBLIC_PEM
            )
        )
    )
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    v = JwtVerifier.from_jwks_file(
        path, algorithms=["RS256", "PS256"], issuer=ISSUER, audience=AUDIENCE
    )
    good = jwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"kid": "k1"})
    assert v.verify(good)["sub"] == "ada"
    for bad in (
        jwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"kid": "k2"}),
        jwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="PS256", headers={"kid": "k1"}),
        jwt.encode(
            claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"kid": "../../etc/passwd"}
        ),
    ):
        with pytest.raises(UnauthenticatedError):
            v.verify(bad)


@pytest.mark.parametrize(
    "options",
    [
        {"algorithms": ["none"], "secret": SECRET},
        {"algorithms": ["HS256", "RS256"], "secret": SECRET, "public_key": RSA_PUBLIC_PEM},
        {"algorithms": ["HS256"], "secret": "short"},
        {"algorithms": ["HS256"], "secret": RSA_PUBLIC_PEM},
        {"algorithms": ["RS256"]},
        {"algorithms": []},
        {"algorithms": ["RS256"], "public_key": "not a key"},
        {"algorithms": ["HS256"], "secret": SECRET, "leeway_s": 3600},
    ],
)
def test_unsafe_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        JwtVerifier(**options)


def test_the_jwt_secret_is_masked_in_config_dumps() -> None:
    from organelle import Kernel
    from organelle.gateway import Gateway

    cfg = {
        "modules": {
            "gateway": {"port": 0, "auth": {"jwt": {"algorithms": ["HS256"], "secret": SECRET}}}
        }
    }
    kernel = Kernel([Gateway], cfg)
    assert SECRET not in json.dumps(kernel.config_dump(), default=str)


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def hs_verifier(**options: Any) -> JwtVerifier:
    return JwtVerifier(
        algorithms=["HS256"], secret=SECRET, issuer=ISSUER, audience=AUDIENCE, **options
    )


def test_the_cache_is_a_bounded_lru() -> None:
    v = hs_verifier(cache_size=2)
    a, b, c = hs256(sub="a"), hs256(sub="b"), hs256(sub="c")
    first_a, first_b = v.verify(a), v.verify(b)
    assert v.verify(a) is first_a  # a is now the most recently used
    v.verify(c)  # evicts b, the least recently used
    assert v.verify(a) is first_a
    again_b = v.verify(b)
    assert again_b == first_b
    assert again_b is not first_b  # verified anew


def test_cache_size_zero_verifies_every_time() -> None:
    v = hs_verifier(cache_size=0)
    token = hs256()
    assert v.verify(token) is not v.verify(token)
    with pytest.raises(ConfigError):
        hs_verifier(cache_size=-1)


def test_a_revoked_token_is_refused_even_when_cached() -> None:
    denied: set[str] = set()
    v = hs_verifier(revoked=lambda c: c.get("jti") in denied)
    token = hs256(jti="t-1")
    assert v.verify(token)["jti"] == "t-1"
    assert v.verify(token)["jti"] == "t-1"  # now served from the cache
    denied.add("t-1")
    with pytest.raises(UnauthenticatedError, match="revoked"):
        v.verify(token)
    assert v.verify(hs256(jti="t-2"))["jti"] == "t-2"  # others still get in


def test_a_cached_token_is_refused_before_its_nbf() -> None:
    v = hs_verifier(leeway_s=0)
    token = hs256(nbf=int(time.time()) + 600)
    for _ in range(2):  # not cached as valid by the first refusal
        with pytest.raises(UnauthenticatedError):
            v.verify(token)


async def test_jwt_principals_reuse_a_principal_only_for_the_same_verification() -> None:
    from organelle.auth.factory import AuthConfig, Credentials, JwtPrincipals, principal_factory

    config = AuthConfig.model_validate(
        {
            "jwt": {
                "algorithms": ["HS256"],
                "secret": SECRET,
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "revoked": "tests.auth.test_jwt:is_revoked",
            }
        }
    )
    factory = principal_factory(config)
    assert isinstance(factory, JwtPrincipals)
    token = hs256(jti="p-1", roles=["reader"])
    creds = Credentials(authorization=f"Bearer {token}")
    first = await factory(creds)
    assert first is not None
    assert first.roles == frozenset({"reader"})
    assert await factory(creds) is first
    REVOKED.add("p-1")
    try:
        with pytest.raises(UnauthenticatedError, match="revoked"):
            await factory(creds)
    finally:
        REVOKED.discard("p-1")
    assert config.jwt is not None
    options = {**config.jwt.model_dump(), "secret": SECRET, "cache_size": 0}
    uncached = principal_factory(AuthConfig.model_validate({"jwt": options}))
    assert uncached is not None
    one, two = await uncached(creds), await uncached(creds)
    assert one == two
    assert one is not two


REVOKED: set[str] = set()


def is_revoked(claims: Any) -> bool:
    """A ``jti`` deny-list, named by config as ``tests.auth.test_jwt:is_revoked``."""
    return claims.get("jti") in REVOKED
