"""``secret://vault/MOUNT/PATH#KEY``: HashiCorp Vault's KV version 2 engine over HTTP.

``secret://vault/secret/shop/db#password`` reads ``GET /v1/secret/data/shop/db``
with the ``X-Vault-Token`` header and takes ``password`` from the latest
version's data. A rotation is a new version: the next re-read (``[secrets]
refresh_s``, SIGHUP, ``Kernel.reload_config``) sees it.

Plain ``urllib``: one GET per path and resolution, no client library to pull in.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from organelle.errors import ConfigError
from organelle.secrets.base import SecretRef

__all__ = ["VaultProvider"]


class VaultProvider:
    """Reads KV v2 secrets; each path is fetched once per provider (one resolution).

    Args:
        address: ``http://127.0.0.1:8200`` (``VAULT_ADDR``).
        token: the client token (``VAULT_TOKEN``).
        namespace: Vault Enterprise namespace (``X-Vault-Namespace``), if any.
        timeout_s: per request.
    """

    def __init__(
        self, *, address: str, token: str, namespace: str = "", timeout_s: float = 5.0
    ) -> None:
        self._address = address.rstrip("/")
        self._token = token
        self._namespace = namespace
        self._timeout_s = timeout_s
        self._cache: dict[str, dict[str, Any]] = {}

    def read(self, ref: SecretRef) -> str:
        """The field ``ref.key`` of the secret at ``ref.path`` (its first segment is the mount).

        Raises:
            ConfigError: no ``#KEY``, Vault unreachable or refusing, no such
                path or key.
        """
        mount, _, path = ref.path.strip("/").partition("/")
        if not ref.key or not path:
            raise ConfigError("a Vault reference needs a mount, a path and a key: MOUNT/PATH#KEY")
        data = self._cache.get(ref.path)
        if data is None:
            data = self._cache[ref.path] = self._fetch(mount, path)
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise ConfigError(f"Vault secret {ref.path} has no key {ref.key!r} (keys: {keys})")
        value = data[ref.key]
        return value if isinstance(value, str) else json.dumps(value)

    def _fetch(self, mount: str, path: str) -> dict[str, Any]:
        url = f"{self._address}/v1/{quote(mount)}/data/{quote(path)}"
        headers = {"X-Vault-Token": self._token, "Accept": "application/json"}
        if self._namespace:
            headers["X-Vault-Namespace"] = self._namespace
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - address from config
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                body: Any = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ConfigError(_refused(exc, f"{mount}/{path}")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"Vault at {self._address} is unreachable: {reason}") from None
        except ValueError:
            raise ConfigError(f"Vault at {self._address} answered with invalid JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        inner = data.get("data") if isinstance(data, dict) else None
        if not isinstance(inner, dict):  # a deleted or destroyed latest version has null data
            raise ConfigError(f"Vault secret {mount}/{path} has no data (deleted version?)")
        return inner


def _refused(exc: urllib.error.HTTPError, where: str) -> str:
    try:
        errors = json.loads(exc.read()).get("errors") or []
    except (ValueError, AttributeError, OSError):
        errors = []
    said = f": {'; '.join(str(e) for e in errors)}" if errors else ""
    if exc.code == 404:  # noqa: PLR2004
        return f"Vault has no secret at {where}{said}"
    if exc.code == 403:  # noqa: PLR2004
        return f"Vault refused the token for {where} (403){said}"
    return f"Vault answered {exc.code} for {where}{said}"
