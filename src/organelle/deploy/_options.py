"""What a Kubernetes deployment of an app is rendered with: the ``[deploy.k8s]`` section.

Every option has a default that renders a working deployment; the app config's
``[deploy.k8s]`` section sets the app's own, and the command line overrides
both. The kernel ignores the ``[deploy]`` section, so one file describes the
app and how it is deployed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import msgspec

from organelle.errors import ConfigError

__all__ = ["Autoscaler", "K8sOptions", "NodeGroup", "dns_name"]

Autoscaler = Literal["auto", "hpa", "keda", "none"]

_DNS = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_NAME = 52  # a Deployment's name plus the 11 characters its pods' names add stay ≤ 63


def dns_name(raw: str, *, what: str) -> str:
    """``raw`` as a Kubernetes object name (RFC 1123 label: lowercase, digits, ``-``).

    Upper case is lowered and ``_``, ``.`` and spaces become ``-`` (module and
    file names use them); anything else is refused rather than guessed at.

    Raises:
        ConfigError: not usable as a name, or too long.
    """
    name = re.sub(r"[_. ]+", "-", raw.lower()).strip("-")
    if not name or not _DNS.fullmatch(name):
        raise ConfigError(f"{what} {raw!r}: not usable as a Kubernetes name")
    if len(name) > _MAX_NAME:
        raise ConfigError(f"{what} {raw!r}: longer than {_MAX_NAME} characters")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroup:
    """One Deployment: a name and the modules its pods run (``--only``).

    ``modules`` empty means every module of the app (no ``--only``).
    """

    name: str
    modules: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NodeGroup:
        """``NAME=a,b`` or ``a,b`` (named after its modules).

        Raises:
            ConfigError: no module named, or an empty name.
        """
        name, sep, rest = text.partition("=")
        names = rest if sep else name
        modules = tuple(m.strip() for m in names.split(",") if m.strip())
        if not modules:
            raise ConfigError(f"--group {text!r}: expected NAME=module,module")
        label = name.strip() if sep else "-".join(modules)
        return cls(name=dns_name(label, what="group"), modules=modules)


@dataclass(frozen=True, slots=True, kw_only=True)
class K8sOptions:
    """Options of ``organelle deploy k8s`` (and keys of ``[deploy.k8s]``).

    Attributes:
        name: the app's name, prefix of every object (default: the config
            file's name, or its folder's when the file is ``app.toml``).
        namespace: ``metadata.namespace`` of every object (none: kubectl's).
        image: the container image (built from ``deploy/Dockerfile``).
        groups: node groups; none means one group ``app`` with every module.
        replicas: replicas of each Deployment before an autoscaler acts.
        min_replicas: the autoscaler's floor (also what the PDB keeps).
        max_replicas: the autoscaler's ceiling.
        autoscaler: ``auto`` (KEDA for a group with jobs or stream consumers,
            else an HPA), ``hpa``, ``keda`` or ``none``.
        cpu_percent: target CPU utilisation of the requests.
        queue_per_replica: waiting jobs one replica is expected to keep up with.
        lag_per_replica: stream records behind one replica is expected to catch up.
        prometheus: the Prometheus KEDA asks for queue depth and stream lag.
        ops_port: the ops server's port (probes and ``/metrics``) in the pod
            (default: ``[kernel] ops_port``, else 9000).
        pre_stop_s: how long a pod waits after it is told to stop before the
            kernel drains, so the Service stops sending it requests first.
        secret: the Kubernetes Secret ``secret://env/NAME`` references read
            (key ``NAME``); default ``<name>-secrets``.
        cpu_request: the container's CPU request (the HPA's 100 %).
        memory_request: the container's memory request.
        memory_limit: the container's memory limit.
    """

    name: str | None = None
    namespace: str | None = None
    image: str = "organelle-app:latest"
    groups: tuple[NodeGroup, ...] = ()
    replicas: int = 2
    min_replicas: int = 2
    max_replicas: int = 10
    autoscaler: Autoscaler = "auto"
    cpu_percent: int = 70
    queue_per_replica: int = 100
    lag_per_replica: int = 1000
    prometheus: str = "http://prometheus-server.monitoring.svc:80"
    ops_port: int | None = None
    pre_stop_s: int = 5
    secret: str | None = None
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(
                f"deploy.k8s: need 1 <= min_replicas ({self.min_replicas}) "
                f"<= max_replicas ({self.max_replicas})"
            )
        if self.replicas < 0:
            raise ConfigError("deploy.k8s.replicas must not be negative")
        for key in ("cpu_percent", "queue_per_replica", "lag_per_replica", "ops_port"):
            if (getattr(self, key) or 1) < 1:
                raise ConfigError(f"deploy.k8s.{key} must be at least 1")
        if self.pre_stop_s < 0:
            raise ConfigError("deploy.k8s.pre_stop_s must not be negative")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ConfigError(f"deploy.k8s: two groups share a name ({', '.join(names)})")

    @classmethod
    def from_config(cls, section: Any) -> K8sOptions:
        """Read ``[deploy.k8s]`` (``groups`` as a table ``NAME = [modules]``).

        Raises:
            ConfigError: an unknown key or a value of the wrong type.
        """
        if section is None:
            return cls()
        if not isinstance(section, dict):
            raise ConfigError("deploy.k8s must be a table")
        raw = dict(section)
        groups = raw.pop("groups", {})
        if not isinstance(groups, dict):
            raise ConfigError("deploy.k8s.groups must be a table: NAME = [module, ...]")
        known = {f.name for f in fields(cls)} - {"groups"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"deploy.k8s: unknown key {unknown[0]!r} (known: {sorted(known)})")
        try:
            options = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"deploy.k8s: {exc}") from None
        parsed = tuple(
            NodeGroup(name=dns_name(str(k), what="group"), modules=tuple(map(str, v)))
            for k, v in groups.items()
        )
        return replace(options, groups=parsed)

    def override(self, **changes: Any) -> K8sOptions:
        """A copy with the options given (``None`` leaves one as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
