"""Resolving every ``secret://`` reference of an app config, or failing with the key.

The ``[secrets]`` section configures the providers and is resolved first, with
``env`` and ``file`` only, so the Vault token may itself be a reference.
Every value read is remembered by the masking registry
(``organelle.config.secrets``) before anything can print it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from organelle.config.secrets import remember
from organelle.errors import ConfigError
from organelle.secrets.base import SecretProvider, is_ref, parse_ref
from organelle.secrets.env import EnvProvider
from organelle.secrets.file import FileProvider

__all__ = ["Key", "Resolution", "label", "resolve_config"]

Key = tuple[str | int, ...]
_VAULT_KEYS = frozenset({"address", "token", "token_file", "namespace", "timeout_s"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """A config with its references replaced by their values.

    Attributes:
        config: the resolved config (values in place of references).
        refs: each key that held a reference, with the reference (no values).
        refresh_s: ``[secrets] refresh_s``: how often to re-read them, if at all.
    """

    config: dict[str, Any] = field(repr=False)
    refs: dict[Key, str] = field(default_factory=dict)
    refresh_s: float | None = None


def label(key: Key) -> str:
    """``("modules", "db", "hosts", 0)`` → ``modules.db.hosts[0]``."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def resolve_config(
    config: Mapping[str, Any], *, base_path: Path, environ: Mapping[str, str] | None = None
) -> Resolution:
    """Replace every reference in ``config`` by its value.

    Args:
        config: the app config (not changed).
        base_path: the config file's folder (``secret://file/`` paths are relative to it).
        environ: the environment (default: ``os.environ``).

    Raises:
        ConfigError: each reference that cannot be resolved, naming its key and
            the reference (never a value); ``details["keys"]`` lists the keys.
    """
    environ = os.environ if environ is None else environ
    providers: dict[str, SecretProvider] = {
        "env": EnvProvider(environ),
        "file": FileProvider(base_path),
    }
    refs: dict[Key, str] = {}
    errors: list[tuple[str, str]] = []
    raw_section = config.get("secrets") or {}
    if not isinstance(raw_section, Mapping):
        raise ConfigError("secrets: the [secrets] section must be a table")
    section = _walk(raw_section, ("secrets",), providers, refs, errors)
    _raise(errors)
    refresh_s = _refresh_s(section)
    if _needs_vault(config):
        providers["vault"] = _vault(section.get("vault") or {}, environ, base_path)
    resolved = {
        k: (section if k == "secrets" else _walk(v, (k,), providers, refs, errors))
        for k, v in config.items()
    }
    _raise(errors)
    return Resolution(config=resolved, refs=refs, refresh_s=refresh_s)


def _walk(
    value: Any,
    key: Key,
    providers: Mapping[str, SecretProvider],
    refs: dict[Key, str],
    errors: list[tuple[str, str]],
) -> Any:
    if isinstance(value, Mapping):
        return {k: _walk(v, (*key, str(k)), providers, refs, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*key, i), providers, refs, errors) for i, v in enumerate(value)]
    if not is_ref(value):
        return value
    refs[key] = value
    try:
        ref = parse_ref(value)
        secret = _provider(providers, ref.provider).read(ref)
    except ConfigError as exc:
        errors.append((label(key), f"{label(key)}: cannot resolve {value!r}: {exc.message}"))
        return value
    remember(secret)
    return secret


def _provider(providers: Mapping[str, SecretProvider], name: str) -> SecretProvider:
    provider = providers.get(name)
    if provider is None:
        raise ConfigError(f"unknown secret provider {name!r} (use env, file or vault)")
    return provider


def _raise(errors: list[tuple[str, str]]) -> None:
    if errors:
        raise ConfigError(
            "; ".join(text for _, text in errors), details={"keys": [k for k, _ in errors]}
        )


def _refresh_s(section: Mapping[str, Any]) -> float | None:
    unknown = sorted(set(section) - {"refresh_s", "vault"})
    if unknown:
        raise ConfigError(f"secrets.{unknown[0]}: unknown key (use refresh_s, vault)")
    refresh = section.get("refresh_s")
    if refresh is None:
        return None
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or refresh <= 0:
        raise ConfigError("secrets.refresh_s: must be a number of seconds > 0")
    return float(refresh)


def _needs_vault(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_needs_vault(v) for k, v in value.items() if k != "secrets")
    if isinstance(value, list):
        return any(_needs_vault(v) for v in value)
    return is_ref(value) and value.removeprefix("secret://").startswith("vault/")


def _vault(section: Any, environ: Mapping[str, str], base: Path) -> SecretProvider:
    from organelle.secrets.vault import VaultProvider

    if not isinstance(section, Mapping):
        raise ConfigError("secrets.vault: must be a table")
    unknown = sorted(set(section) - _VAULT_KEYS)
    if unknown:
        raise ConfigError(f"secrets.vault.{unknown[0]}: unknown key")
    address = section.get("address") or environ.get("VAULT_ADDR", "")
    if not address:
        raise ConfigError(
            "secrets.vault.address: not set (nor VAULT_ADDR) but a reference needs Vault"
        )
    token = section.get("token") or ""
    if not token and section.get("token_file"):
        path = base / str(section["token_file"])
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(f"secrets.vault.token_file: cannot read {str(path)!r}") from None
    token = token or environ.get("VAULT_TOKEN", "")
    if not token:
        raise ConfigError("secrets.vault.token: not set (nor token_file, nor VAULT_TOKEN)")
    timeout_s = section.get("timeout_s", 5.0)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ConfigError("secrets.vault.timeout_s: must be a number of seconds > 0")
    remember(str(token))
    return VaultProvider(
        address=str(address),
        token=str(token),
        namespace=str(section.get("namespace") or ""),
        timeout_s=float(timeout_s),
    )
