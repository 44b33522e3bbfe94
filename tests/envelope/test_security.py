"""``transport_options.security``: validated with a ConfigError naming the key; keys resolved."""
# ruff: noqa: S105 - made-up keys and passwords

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from organelle.envelope import EventSecurity, parse_security
from organelle.envelope._compress import zstd_available
from organelle.errors import ConfigError

LABEL = "kernel.transport_options.security"
SECRET = "a-shared-secret-of-some-length"
AES = "base64:" + base64.b64encode(b"f" * 32).decode()


def test_nothing_said_means_compression_only() -> None:
    sec = parse_security(None)
    assert sec == EventSecurity.default()
    assert sec.compression == ("zstd" if zstd_available() else "gzip")
    assert sec.compress_above == 16384
    assert sec.signing.active is None
    assert not sec.require_signatures
    assert sec.fields.active is None
    assert parse_security({"compression": "none"}).compression is None
    assert parse_security({"compression": "gzip", "compress_above": 0}).compress_above == 0


def test_keys_from_literals_env_files_base64_hex_and_pem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORG_TEST_K2", "hex:" + "ab" * 20)
    seed = tmp_path / "k3.pem"
    private = Ed25519PrivateKey.generate()
    seed.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = base64.b64encode(private.public_key().public_bytes_raw()).decode()
    sec = parse_security(
        {
            "sign_kid": "k3",
            "require_signatures": True,
            "keys": {
                "k1": SECRET,
                "k2": {"alg": "hmac", "secret": "env:ORG_TEST_K2"},
                "k3": {"alg": "ed25519", "private": f"file:{seed}", "public": f"base64:{public}"},
                "k4": {"alg": "ed25519", "public": f"base64:{public}"},
            },
            "field_kid": "f1",
            "field_keys": {"f1": AES, "f0": "hex:" + "00" * 16},
        }
    )
    ring = sec.signing
    assert ring.active == "k3"
    assert ring.keys["k1"].secret == SECRET.encode()
    assert ring.keys["k2"].secret == bytes.fromhex("ab" * 20)
    assert ring.keys["k3"].alg == ring.keys["k4"].alg == "ed25519"
    assert sec.fields.active == "f1"
    assert set(sec.fields.keys) == {"f0", "f1"}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("not a table", LABEL),
        ({"nope": 1}, f"{LABEL}.nope"),
        ({"compress_above": "big"}, f"{LABEL}.compress_above"),
        ({"compress_above": -1}, f"{LABEL}.compress_above"),
        ({"max_decompressed_bytes": -1}, f"{LABEL}.max_decompressed_bytes"),
        ({"log_interval_s": 0}, f"{LABEL}.log_interval_s"),
        ({"compression": "brotli"}, f"{LABEL}.compression"),
        ({"sign_kid": "k9", "keys": {"k1": SECRET}}, f"{LABEL}.sign_kid"),
        ({"require_signatures": True}, f"{LABEL}.require_signatures"),
        ({"keys": {"k1": "short"}}, f"{LABEL}.keys.k1"),
        ({"keys": {"k:1": SECRET}}, f"{LABEL}.keys.k:1"),
        ({"keys": {"k1": "env:ORG_TEST_UNSET_VARIABLE"}}, f"{LABEL}.keys.k1.secret"),
        ({"keys": {"k1": "file:/nonexistent/key"}}, f"{LABEL}.keys.k1.secret"),
        ({"keys": {"k1": "base64:%%%"}}, f"{LABEL}.keys.k1.secret"),
        ({"keys": {"k1": {"alg": "rsa", "secret": SECRET}}}, f"{LABEL}.keys.k1.alg"),
        ({"keys": {"k1": {"alg": "ed25519"}}}, f"{LABEL}.keys.k1"),
        ({"keys": {"k1": {"alg": "ed25519", "secret": SECRET}}}, f"{LABEL}.keys.k1"),
        ({"keys": {"k1": {"alg": "ed25519", "public": "hex:00"}}}, f"{LABEL}.keys.k1.public"),
        ({"keys": {"k1": {"alg": "hmac", "public": SECRET}}}, f"{LABEL}.keys.k1"),
        ({"field_keys": {"f1": "too short"}}, f"{LABEL}.field_keys"),
        ({"field_keys": {"f1": AES}, "field_kid": "f2"}, f"{LABEL}.field_kid"),
        ({"field_keys": {"f 1": AES}}, f"{LABEL}.field_keys.f 1"),
    ],
)
def test_bad_settings_name_the_key(raw: object, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_security(raw)
    assert err.value.details["key"] == key, err.value


def test_a_verify_only_ed25519_key_cannot_sign() -> None:
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    raw = {"sign_kid": "k1", "keys": {"k1": {"alg": "ed25519", "public": "hex:" + public.hex()}}}
    with pytest.raises(ConfigError, match="no private key") as err:
        parse_security(raw)
    assert err.value.details["key"] == f"{LABEL}.sign_kid"


def test_a_public_key_that_is_not_the_private_keys_is_refused() -> None:
    one, two = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    raw = {
        "keys": {
            "k1": {
                "alg": "ed25519",
                "private": "hex:" + one.private_bytes_raw().hex(),
                "public": "hex:" + two.public_key().public_bytes_raw().hex(),
            }
        }
    }
    with pytest.raises(ConfigError, match="not the private key's"):
        parse_security(raw)
