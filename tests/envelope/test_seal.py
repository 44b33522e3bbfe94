"""Signatures: canonical bytes over the headers that matter and the body; rotation by key id."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from organelle.envelope._seal import Keyring, SigningKey, canonical
from organelle.errors import ConfigError, SignatureError, UnauthenticatedError

HEADERS = {
    "organelle-id": "r-1",
    "ce-id": "e-1",
    "ce-source": "/organelle/shop/n1",
    "ce-type": "order.placed",
    "ce-specversion": "1.0",
    "content-type": "application/json",
    "organelle-encoding": "zstd",
}
BODY = b'{"order_id": "o-1"}'


def hmac_key(kid: str, secret: bytes = b"0123456789abcdef-shared") -> SigningKey:
    return SigningKey(kid=kid, alg="hmac-sha256", secret=secret + kid.encode())


def ed_key(kid: str) -> SigningKey:
    return SigningKey(kid=kid, alg="ed25519", private=Ed25519PrivateKey.generate())


def signed(ring: Keyring, headers: dict[str, str] = HEADERS) -> dict[str, str]:
    return {**headers, "organelle-signature": ring.sign(headers, BODY)}


def reason(ring: Keyring, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureError) as err:
        ring.verify(headers, body)
    assert isinstance(err.value, UnauthenticatedError)
    return str(err.value.details["reason"])


def test_canonical_is_sorted_lower_cased_and_skips_uncovered_headers() -> None:
    text = canonical({"CE-Type": " t ", "Nats-Msg-Id": "x", "Organelle-Signature": "s"}, b"B")
    assert text == b"organelle-signature-v1\nce-type:t\n\nB"
    assert canonical({"b-x": "1", "ce-b": "2", "ce-a": "3"}, b"") == (
        b"organelle-signature-v1\nce-a:3\nce-b:2\n\n"
    )


@pytest.mark.parametrize("make", [hmac_key, ed_key])
def test_a_signed_event_verifies_and_any_change_is_caught(make: object) -> None:
    ring = Keyring(keys={"k1": make("k1")}, active="k1")  # type: ignore[operator]
    good = signed(ring)
    assert good["organelle-signature"].startswith("k1:")
    assert ring.verify(good, BODY) == "k1"
    assert ring.verify({**good, "nats-msg-id": "added by a relay"}, BODY) == "k1"
    assert reason(ring, good, BODY + b" ") == "bad_signature"
    assert reason(ring, {**good, "ce-type": "order.refunded"}) == "bad_signature"
    assert reason(ring, {**good, "organelle-roles": "admin"}) == "bad_signature"  # added
    without = {k: v for k, v in good.items() if k != "organelle-encoding"}
    assert reason(ring, without) == "bad_signature"  # removed
    assert reason(ring, HEADERS) == "unsigned"


def test_unknown_kid_alg_confusion_and_garbage_are_refused() -> None:
    signer = Keyring(keys={"k9": hmac_key("k9")}, active="k9")
    verifier = Keyring(keys={"k1": hmac_key("k1")})
    assert reason(verifier, signed(signer)) == "unknown_kid"
    # The header cannot pick the algorithm: k1 is HMAC, a message saying ed25519 fails.
    forged = {**HEADERS, "organelle-signature": "k1:ed25519:" + "A" * 88}
    assert reason(verifier, forged) == "bad_signature"
    assert reason(verifier, {**HEADERS, "organelle-signature": "k1:hmac-sha256:%%%"}) == (
        "bad_signature"
    )
    assert reason(verifier, {**HEADERS, "organelle-signature": "garbage"}) == "unknown_kid"
    assert reason(verifier, {**HEADERS, "ce-x": "a\nb", "organelle-signature": "k1:a:b"}) == (
        "bad_signature"
    )


def test_rotation_a_verifier_with_both_keys_takes_either() -> None:
    k1, k2 = hmac_key("k1"), ed_key("k2")
    verifier = Keyring(keys={"k1": k1, "k2": SigningKey(kid="k2", alg="ed25519", public=k2.public)})
    old, new = Keyring(keys={"k1": k1}, active="k1"), Keyring(keys={"k2": k2}, active="k2")
    assert verifier.verify(signed(old), BODY) == "k1"
    assert verifier.verify(signed(new), BODY) == "k2"
    retired = Keyring(keys={"k2": k2})
    assert reason(retired, signed(old)) == "unknown_kid"


def test_bad_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        SigningKey(kid="k1", alg="hmac-sha256", secret=b"short")
    with pytest.raises(ConfigError, match="key id"):
        SigningKey(kid="k:1", alg="hmac-sha256", secret=b"x" * 32)
    with pytest.raises(ConfigError, match="unknown algorithm"):
        SigningKey(kid="k1", alg="rsa", secret=b"x" * 32)
    with pytest.raises(ConfigError, match="public or private"):
        SigningKey(kid="k1", alg="ed25519")
    with pytest.raises(ConfigError, match="not in the keyring"):
        Keyring(keys={}, active="k1")
    public_only = SigningKey(kid="k1", alg="ed25519", public=ed_key("k1").public)
    with pytest.raises(ConfigError, match="no private key"):
        Keyring(keys={"k1": public_only}, active="k1")
    with pytest.raises(ConfigError, match="no signing key"):
        Keyring(keys={"k1": public_only}).sign(HEADERS, BODY)
