"""KubernetesScaler against a local stand-in of the API that records what it is sent."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from organelle.errors import (
    ConfigError,
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from organelle.scaling.kubernetes import KubernetesScaler
from tests.scaling.kube_standin import kube_api

TOKEN = "a-test-token"  # noqa: S105 - the stand-in takes any token


async def test_reads_and_patches_the_scale_subresource(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    with kube_api({("shop", "shop-workers"): 2}) as api:
        scaler = KubernetesScaler(api=api.url, namespace="shop", token_file=token)
        assert await scaler.replicas("shop-workers") == 2
        await scaler.scale("shop-workers", 5)
        token.write_text("rotated-token\n")  # service account tokens rotate: read per request
        assert await scaler.replicas("shop-workers") == 5
        get, patch, again = api.requests
    path = "/apis/apps/v1/namespaces/shop/deployments/shop-workers/scale"
    assert (get.method, get.path, get.body) == ("GET", path, None)
    assert get.headers["Authorization"] == "Bearer first-token"
    assert (patch.method, patch.path) == ("PATCH", path)
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.body == {"spec": {"replicas": 5}}
    assert again.headers["Authorization"] == "Bearer rotated-token"
    assert api.replicas[("shop", "shop-workers")] == 5


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (404, NotFoundError, "deployment shop/web: not found"),
        (401, UnauthenticatedError, "refused the token"),
        (403, ForbiddenError, "may not get or patch deployments/scale"),
        (500, UnavailableError, "HTTP 500"),
    ],
)
async def test_api_errors_become_typed_errors(
    status: int, error: type[Exception], message: str
) -> None:
    with kube_api({("shop", "web"): 1}) as api:
        api.status = status
        scaler = KubernetesScaler(api=api.url, namespace="shop", token=TOKEN)
        with pytest.raises(error, match=message):
            await scaler.scale("web", 3)


async def test_an_unknown_deployment_is_not_found() -> None:
    with kube_api({}) as api:
        scaler = KubernetesScaler(api=api.url, namespace="shop", token=TOKEN)
        with pytest.raises(NotFoundError):
            await scaler.replicas("ghost")


async def test_an_unreachable_api_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scaler = KubernetesScaler(
        api=f"http://127.0.0.1:{port}", namespace="shop", token=TOKEN, timeout_s=2
    )
    with pytest.raises(UnavailableError):
        await scaler.replicas("web")


def test_outside_a_pod_a_namespace_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("organelle.scaling.kubernetes.SERVICE_ACCOUNT", Path("/nonexistent"))
    with pytest.raises(ConfigError, match="no namespace"):
        KubernetesScaler(api="http://127.0.0.1:1")
