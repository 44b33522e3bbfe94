"""Each provider on its own, and resolving a whole config: values in, keys and references in errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from organelle.config.secrets import MASK, mask
from organelle.errors import ConfigError
from organelle.secrets import (
    EnvProvider,
    FileProvider,
    VaultProvider,
    parse_ref,
    resolve_config,
)
from tests.secrets.vault_server import TOKEN, vault_server

pytestmark = pytest.mark.timeout(30)


def test_a_reference_splits_into_provider_path_and_key() -> None:
    ref = parse_ref("secret://vault/secret/shop/db#password")
    assert (ref.provider, ref.path, ref.key) == ("vault", "secret/shop/db", "password")
    assert parse_ref("secret://file//run/secrets/db").path == "/run/secrets/db"
    for bad in ("secret://", "secret://env", "secret://env/"):
        with pytest.raises(ConfigError, match="not a secret reference"):
            parse_ref(bad)


def test_env_reads_the_variable_at_each_read() -> None:
    environ = {"DB_PW": "env-value-1"}
    provider = EnvProvider(environ)
    assert provider.read(parse_ref("secret://env/DB_PW")) == "env-value-1"
    environ["DB_PW"] = "env-value-2"
    assert provider.read(parse_ref("secret://env/DB_PW")) == "env-value-2"
    with pytest.raises(ConfigError, match="MISSING is not set"):
        provider.read(parse_ref("secret://env/MISSING"))


def test_file_is_relative_to_the_config_folder_or_absolute(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("file-value\n")
    provider = FileProvider(tmp_path)
    assert provider.read(parse_ref("secret://file/pw")) == "file-value"  # one newline dropped
    absolute = FileProvider(Path("/nonexistent-base"))
    assert absolute.read(parse_ref(f"secret://file/{tmp_path}/pw")) == "file-value"
    with pytest.raises(ConfigError, match="does not exist"):
        provider.read(parse_ref("secret://file/nope"))


def test_vault_reads_kv2_fields_once_per_path_and_sees_new_versions() -> None:
    with vault_server() as vault:
        vault.put(
            "secret/shop/db",
            {"user": "shop-user-1", "password": "vault-value-1", "opts": {"n": "vault-nested"}},
        )
        provider = VaultProvider(address=vault.address, token=TOKEN)
        assert provider.read(parse_ref("secret://vault/secret/shop/db#password")) == "vault-value-1"
        assert provider.read(parse_ref("secret://vault/secret/shop/db#user")) == "shop-user-1"
        got = provider.read(parse_ref("secret://vault/secret/shop/db#opts"))
        assert got == '{"n": "vault-nested"}'
        assert vault.requests == ["/v1/secret/data/shop/db"]  # one GET for three fields

        vault.put("secret/shop/db", {"password": "vault-value-2"})
        fresh = VaultProvider(address=vault.address, token=TOKEN)  # a new resolution
        assert fresh.read(parse_ref("secret://vault/secret/shop/db#password")) == "vault-value-2"


def test_vault_failures_say_why_without_the_token() -> None:
    with vault_server() as vault:
        vault.put("secret/shop/db", {"password": "vault-value"})
        good = VaultProvider(address=vault.address, token=TOKEN)
        cases = [
            (good, "secret://vault/secret/shop/db#nope", r"has no key 'nope' \(keys: password\)"),
            (good, "secret://vault/secret/other#password", "no secret at secret/other"),
            (good, "secret://vault/secret/shop/db", "MOUNT/PATH#KEY"),
            (
                VaultProvider(address=vault.address, token="s.wrong-token"),  # noqa: S106
                "secret://vault/secret/shop/db#password",
                "refused the token.*permission denied",
            ),
        ]
        for provider, text, reason in cases:
            with pytest.raises(ConfigError, match=reason) as info:
                provider.read(parse_ref(text))
            assert "s.wrong-token" not in str(info.value)
            assert TOKEN not in str(info.value)
        address = vault.address
    gone = VaultProvider(address=address, token=TOKEN, timeout_s=2)
    with pytest.raises(ConfigError, match="unreachable"):
        gone.read(parse_ref("secret://vault/secret/shop/db#password"))


def test_resolving_replaces_references_anywhere_and_remembers_the_values(tmp_path: Path) -> None:
    (tmp_path / "nats-token").write_text("file-nats-token")
    with vault_server() as vault:
        vault.put("secret/app", {"api": "vault-api-key"})
        config: dict[str, Any] = {
            "kernel": {"transport_options": {"token": "secret://file/nats-token"}},
            "modules": {
                "shop": {"password": "secret://env/SHOP_PW", "hosts": ["secret://env/SHOP_PW"]},
                "api": {"key": "secret://vault/secret/app#api", "plain": "kept"},
            },
            "secrets": {"vault": {"address": vault.address, "token": "secret://env/VT"}},
        }
        env = {"SHOP_PW": "env-shop-password", "VT": TOKEN}
        resolution = resolve_config(config, base_path=tmp_path, environ=env)
    got = resolution.config
    assert got["kernel"]["transport_options"]["token"] == "file-nats-token"  # noqa: S105
    assert got["modules"]["shop"] == {
        "password": "env-shop-password",
        "hosts": ["env-shop-password"],
    }
    assert got["modules"]["api"] == {"key": "vault-api-key", "plain": "kept"}
    assert config["modules"]["shop"]["password"] == "secret://env/SHOP_PW"  # noqa: S105 - untouched
    assert set(resolution.refs.values()) >= {"secret://env/SHOP_PW", "secret://env/VT"}
    assert resolution.refresh_s is None
    # Remembered: masked under any key name, in any section, and inside other text.
    assert mask({"anything": "vault-api-key"}) == {"anything": MASK}
    assert mask("dsn=user:env-shop-password@db") == f"dsn=user:{MASK}@db"
    assert repr(resolution).count("env-shop-password") == 0


def test_every_unresolvable_reference_is_named_with_its_key_never_a_value(tmp_path: Path) -> None:
    config = {
        "kernel": {"storage": "secret://env/NO_SUCH_VAR"},
        "modules": {
            "shop": {"password": "secret://file/missing", "ok": "secret://env/SET"},
            "x": {"y": "secret://ssm/thing"},
        },
    }
    with pytest.raises(ConfigError) as info:
        resolve_config(config, base_path=tmp_path, environ={"SET": "set-secret-value"})
    text = str(info.value)
    assert "kernel.storage: cannot resolve 'secret://env/NO_SUCH_VAR'" in text
    assert "modules.shop.password: cannot resolve 'secret://file/missing'" in text
    assert "modules.x.y: cannot resolve 'secret://ssm/thing': unknown secret provider" in text
    assert info.value.details["keys"] == ["kernel.storage", "modules.shop.password", "modules.x.y"]
    assert "set-secret-value" not in text


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"refresh_s": 0}, "secrets.refresh_s: must be"),
        ({"refresh_s": "soon"}, "secrets.refresh_s: must be"),
        ({"every": 3}, "secrets.every: unknown key"),
        ({"vault": {"adress": "x"}}, "secrets.vault.adress: unknown key"),
        ({"vault": {}}, "secrets.vault.address: not set"),
        ({"vault": {"address": "http://127.0.0.1:1"}}, "secrets.vault.token: not set"),
        (
            {
                "vault": {
                    "address": "http://127.0.0.1:1",
                    "token": "tok-for-timeout",
                    "timeout_s": -1,
                }
            },
            "timeout_s",
        ),
    ],
)
def test_the_secrets_section_is_validated(section: dict[str, object], reason: str) -> None:
    config = {"secrets": section, "modules": {"a": {"b": "secret://vault/secret/a#b"}}}
    with pytest.raises(ConfigError, match=reason):
        resolve_config(config, base_path=Path(), environ={})
