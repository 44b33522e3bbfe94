"""A kernel's references: resolved when built, re-read on reload and on an interval, or refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from organelle import ConfigError, Kernel, Module
from organelle.config.secrets import MASK
from organelle.testing import capture, eventually, running
from tests.secrets.vault_server import TOKEN, vault_server

pytestmark = pytest.mark.timeout(30)


class Db(Module):
    """Keeps every password it was given; refuses one starting with ``reject-``."""

    name = "db"
    version = "1.0.0"

    class Config(pydantic.BaseModel):
        password: pydantic.SecretStr = pydantic.SecretStr("")
        user: str = "app"

    config: Config

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def on_config_changed(self, old: Config, new: Config) -> None:
        value = new.password.get_secret_value()
        if value.startswith("reject-"):
            raise RuntimeError("the database refused the new password")
        self.seen.append(value)


def password(kernel: Kernel) -> str:
    db = kernel.module("db")
    assert isinstance(db, Db)
    return db.config.password.get_secret_value()


def seen(kernel: Kernel) -> list[str]:
    db = kernel.module("db")
    assert isinstance(db, Db)
    return db.seen


def app(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text('[kernel]\nstorage = "memory://"\n' + body)
    return path


def test_references_resolve_when_the_kernel_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_USER_T", "env-db-user")
    store = f"sqlite:///{tmp_path / 'store.db'}"  # unique: a resolved value is masked process-wide
    monkeypatch.setenv("STORE_URL_T", store)
    (tmp_path / "db.pw").write_text("file-db-password\n")
    path = app(
        tmp_path,
        'transport = "memory://"\n[modules.db]\npassword = "secret://file/db.pw"\n'
        'user = "secret://env/DB_USER_T"\n',
    )
    kernel = Kernel.from_config(path, modules=[Db])
    assert password(kernel) == "file-db-password"
    assert kernel.module("db").config.user == "env-db-user"
    dump = kernel.config_dump()
    assert dump["modules"]["db"] == {"password": MASK, "user": MASK}  # a plain str masked too
    built = Kernel([Db], {"kernel": {"storage": "secret://env/STORE_URL_T"}})
    assert built.settings.storage == store
    assert built.config_dump()["kernel"]["storage"] == MASK  # any [kernel] key, by value


def test_an_unresolvable_reference_fails_the_build_naming_key_and_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_T", raising=False)
    path = app(tmp_path, '[modules.db]\npassword = "secret://env/NOT_SET_T"\n')
    with pytest.raises(ConfigError, match=r"modules\.db\.password: cannot resolve "):
        Kernel.from_config(path, modules=[Db])


async def test_a_reload_rereads_a_rotated_file_secret(tmp_path: Path) -> None:
    secret = tmp_path / "db.pw"
    secret.write_text("file-password-1")
    path = app(tmp_path, '[modules.db]\npassword = "secret://file/db.pw"\n')
    async with Kernel.from_config(path, modules=[Db]) as kernel:
        events = capture(kernel, "kernel.config.>")
        secret.write_text("file-password-2")
        result = await kernel.reload_config()
        assert result.changed == ("db",)
        assert result.diff == ({"key": "modules.db.password", "old": MASK, "new": MASK},)
        assert password(kernel) == "file-password-2"
        assert seen(kernel) == ["file-password-2"]

        secret.unlink()  # rotation that breaks: rejected, the old value kept
        with pytest.raises(ConfigError, match="modules.db.password: cannot resolve") as info:
            await kernel.reload_config()
        assert "file-password" not in str(info.value)
        assert password(kernel) == "file-password-2"

        secret.write_text("reject-this-password")  # the module refuses it: rolled back
        with pytest.raises(ConfigError, match="rolled back"):
            await kernel.reload_config()
        assert password(kernel) == "file-password-2"
        await eventually(lambda: len(events) >= 3)
        assert [topic for topic, _ in events] == [
            "kernel.config.reloaded",
            "kernel.config.rejected",
            "kernel.config.rejected",
        ]
        assert "file-password" not in repr(events)


async def test_refresh_s_rereads_and_a_changed_value_reaches_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROTATING_T", "env-password-1")
    config: dict[str, Any] = {
        "kernel": {"storage": "memory://"},
        "secrets": {"refresh_s": 0.05},
        "modules": {"db": {"password": "secret://env/ROTATING_T"}},
    }
    async with running(Db, config=config) as kernel:
        events = capture(kernel, "kernel.config.>")
        assert password(kernel) == "env-password-1"
        monkeypatch.setenv("ROTATING_T", "env-password-2")
        await eventually(lambda: seen(kernel) == ["env-password-2"], timeout_s=5)

        monkeypatch.delenv("ROTATING_T")  # no longer resolves: rejected, old value kept
        await eventually(lambda: any(t == "kernel.config.rejected" for t, _ in events))
        assert password(kernel) == "env-password-2"

        monkeypatch.setenv("ROTATING_T", "env-password-3")  # back: applied on the next pass
        await eventually(lambda: seen(kernel)[-1] == "env-password-3", timeout_s=5)
        reloaded = [p for t, p in events if t == "kernel.config.reloaded"]
        assert len(reloaded) == 2
        assert "env-password" not in repr(events)


async def test_refresh_s_rotates_a_vault_secret_by_version() -> None:
    with vault_server() as vault:
        vault.put("secret/shop/db", {"password": "vault-password-1"})
        config: dict[str, Any] = {
            "kernel": {"storage": "memory://"},
            "secrets": {"refresh_s": 0.05, "vault": {"address": vault.address, "token": TOKEN}},
            "modules": {"db": {"password": "secret://vault/secret/shop/db#password"}},
        }
        async with running(Db, config=config) as kernel:
            assert password(kernel) == "vault-password-1"
            assert kernel.config_dump()["modules"]["db"]["password"] == MASK
            vault.put("secret/shop/db", {"password": "vault-password-2"})
            await eventually(lambda: seen(kernel) == ["vault-password-2"], timeout_s=5)
        requests = len(vault.requests)
    assert requests >= 2
