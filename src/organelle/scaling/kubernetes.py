"""``KubernetesScaler``: a Deployment's scale subresource through the Kubernetes API.

``GET`` and ``PATCH`` (``application/merge-patch+json``, ``{"spec": {"replicas": N}}``)
on ``/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`` — the call
``kubectl scale`` makes. In a pod it finds the API, its namespace, token and
CA where Kubernetes mounts them for the service account; the account needs
``get`` and ``patch`` on ``deployments/scale``. The standard library's
``urllib`` runs in a worker thread: a scaling decision every few seconds does
not need an HTTP client dependency.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from organelle.errors import (
    ConfigError,
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = ["SERVICE_ACCOUNT", "KubernetesScaler"]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_IN_CLUSTER = "https://kubernetes.default.svc"
_UNAUTHORIZED, _FORBIDDEN, _NOT_FOUND = 401, 403, 404


class KubernetesScaler:
    """Scales Deployments of one namespace.

    Args:
        api: the API server's URL (default: in-cluster, or ``KUBERNETES_SERVICE_HOST``).
        namespace: default: the pod's own namespace.
        token: a bearer token; default: the service account's token file.
        token_file: a file holding the token (re-read on every request: it rotates).
        ca_file: CA bundle for an ``https`` API; default: the service account's.
        timeout_s: per request.

    Example::

        scaler = KubernetesScaler(namespace="shop")
        await scaler.scale("shop-workers", 5)
    """

    def __init__(
        self,
        *,
        api: str | None = None,
        namespace: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.api = (api or _default_api()).rstrip("/")
        self.namespace = namespace or _read(SERVICE_ACCOUNT / "namespace")
        if not self.namespace:
            raise ConfigError("KubernetesScaler: no namespace given and none mounted")
        self._token = token
        default_token = SERVICE_ACCOUNT / "token"
        self._token_file = Path(token_file) if token_file else default_token
        self.timeout_s = timeout_s
        self._ssl: ssl.SSLContext | None = None
        if self.api.startswith("https://"):
            ca = Path(ca_file) if ca_file else SERVICE_ACCOUNT / "ca.crt"
            self._ssl = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)

    def _url(self, target: str) -> str:
        ns, name = quote(self.namespace, safe=""), quote(target, safe="")
        return f"{self.api}/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"

    async def replicas(self, target: str) -> int:
        """``spec.replicas`` of the Deployment's scale."""
        body = await asyncio.to_thread(self._request, "GET", target, None)
        return int(body.get("spec", {}).get("replicas", 0))

    async def scale(self, target: str, replicas: int) -> None:
        """Merge-patch the Deployment's scale to ``replicas``."""
        patch = {"spec": {"replicas": replicas}}
        await asyncio.to_thread(self._request, "PATCH", target, patch)

    def _request(self, method: str, target: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        token = self._token or _read(self._token_file)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json"
        request = urllib.request.Request(  # noqa: S310 - the URL is the configured API server
            self._url(target), data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - http(s) only, see above
                request, timeout=self.timeout_s, context=self._ssl
            ) as response:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            raise _error(exc, target, self.namespace) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise UnavailableError(f"Kubernetes API {self.api}: {exc}") from None


def _error(exc: urllib.error.HTTPError, target: str, namespace: str) -> Exception:
    what = f"deployment {namespace}/{target}"
    if exc.code == _NOT_FOUND:
        return NotFoundError(f"{what}: not found")
    if exc.code == _UNAUTHORIZED:
        return UnauthenticatedError(f"{what}: the API refused the token")
    if exc.code == _FORBIDDEN:
        return ForbiddenError(f"{what}: the service account may not get or patch deployments/scale")
    return UnavailableError(f"{what}: HTTP {exc.code} from the API")


def _default_api() -> str:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if host and port:
        return f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
    return _IN_CLUSTER


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
