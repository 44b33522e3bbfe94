"""Kubernetes manifests of an app: plain dicts, one per object, ready for YAML.

Per node group: a Deployment, a Service, a PodDisruptionBudget and an
autoscaler (an HPA, or a KEDA ScaledObject that also scales on queue depth and
stream lag); for the app: one ConfigMap holding the config file as written.

The pod runs ``organelle run /etc/organelle/app.toml --only <group>``; the
ops server (probes, ``/metrics``) is switched on by environment variables
(``ORGANELLE__KERNEL__OPS_PORT``), so the config file needs no change to be
deployed. A ``secret://env/NAME`` reference stays in the config; the pod gets
``NAME`` from the Kubernetes Secret ``options.secret``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from organelle.deploy._options import dns_name
from organelle.deploy._plan import AppPlan, GroupPlan
from organelle.deploy._scaling import autoscaler, scaler_kind
from organelle.errors import ConfigError

__all__ = ["CONFIG_DIR", "LIVE_PATH", "READY_PATH", "labels", "render_k8s"]

Manifest = dict[str, Any]

CONFIG_DIR = "/etc/organelle"
DATA_DIR = "/data"
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
METRICS_PATH = "/metrics"
CONTAINER = "organelle"
_UID = 10001  # the image's non-root user (deploy/Dockerfile)


def labels(plan: AppPlan, group: GroupPlan | None = None) -> dict[str, str]:
    """The labels objects carry; with a group, the ones its pods are selected by."""
    found = {"app.kubernetes.io/name": plan.name}
    if group is not None:
        found["app.kubernetes.io/component"] = group.name
    return found


def render_k8s(plan: AppPlan) -> list[Manifest]:
    """Every object of the app's deployment, the ConfigMap first."""
    objects: list[Manifest] = [_config_map(plan)]
    if any(g.scales for g in plan.groups):
        objects += _scaler_access(plan)
    for group in plan.groups:
        objects += [_deployment(plan, group), _service(plan, group), _pdb(plan, group)]
        name = object_name(plan, group)
        scaler = autoscaler(plan, group, name, _meta(plan, name, group))
        if scaler is not None:
            objects.append(scaler)
    return objects


def object_name(plan: AppPlan, group: GroupPlan) -> str:
    """The name of a group's Deployment, Service, PDB and autoscaler."""
    return dns_name(f"{plan.name}-{group.name}", what="object name")


def config_name(plan: AppPlan) -> str:
    """The ConfigMap's name."""
    return f"{plan.name}-config"


def _meta(plan: AppPlan, name: str, group: GroupPlan | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {**labels(plan, group), "app.kubernetes.io/managed-by": "organelle"},
    }
    if plan.options.namespace:
        meta["namespace"] = plan.options.namespace
    return meta


def _config_map(plan: AppPlan) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(plan, config_name(plan)),
        "data": {plan.config_file: plan.config_text},
    }


def env_of(plan: AppPlan, group: GroupPlan) -> list[dict[str, Any]]:
    """The container's environment: ops on, bound to the pod, secrets from the Secret."""
    opts = plan.options
    env: list[dict[str, Any]] = [
        {"name": "ORGANELLE__KERNEL__OPS_PORT", "value": str(plan.ops_port)},
        {"name": "ORGANELLE__KERNEL__OPS_HOST", "value": "0.0.0.0"},  # noqa: S104 - the pod's own network
        {"name": "ORGANELLE__KERNEL__METRICS", "value": "true"},
        # The image puts the app's code on PYTHONPATH; the file's own folders do not exist there.
        {"name": "ORGANELLE__KERNEL__PYTHONPATH", "value": "[]"},
        {
            "name": "ORGANELLE__KERNEL__NODE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
    ]
    env += [
        {"name": f"ORGANELLE__MODULES__{m.name.upper()}__HOST", "value": "0.0.0.0"}  # noqa: S104
        for m in group.listeners
    ]
    secret = opts.secret or f"{plan.name}-secrets"
    env += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": var}}}
        for var in plan.secret_env
    ]
    return env


def _probe(path: str, *, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "ops"},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _ports(group: GroupPlan, ops_port: int) -> list[dict[str, Any]]:
    ports = [{"name": "ops", "containerPort": ops_port, "protocol": "TCP"}]
    ports += [
        {"name": port_name(m.name), "containerPort": m.port, "protocol": "TCP"}
        for m in group.listeners
    ]
    return ports


def port_name(module: str) -> str:
    """A container port's name for a module (IANA service name: ≤ 15 chars, no ``_``)."""
    return module.replace("_", "-")[:15].strip("-")


def _container(plan: AppPlan, group: GroupPlan) -> dict[str, Any]:
    opts = plan.options
    args = ["run", f"{CONFIG_DIR}/{plan.config_file}"]
    if group.only:
        args += ["--only", ",".join(group.only)]
    return {
        "name": CONTAINER,
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "workingDir": DATA_DIR,
        "env": env_of(plan, group),
        "ports": _ports(group, plan.ops_port),
        "startupProbe": _probe(READY_PATH, period_s=2, failures=60),
        "readinessProbe": _probe(READY_PATH, period_s=5, failures=2),
        "livenessProbe": _probe(LIVE_PATH, period_s=10, failures=3),
        # Stay in the Service while endpoints update, so no request meets a draining pod.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(opts.pre_stop_s)]}}},
        "resources": {
            "requests": {"cpu": opts.cpu_request, "memory": opts.memory_request},
            "limits": {"memory": opts.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir of the pod's own
        ],
    }


def config_checksum(plan: AppPlan) -> str:
    """A hash of the config, on the pod template: a changed config rolls the pods."""
    return hashlib.sha256(plan.config_text.encode()).hexdigest()


def _deployment(plan: AppPlan, group: GroupPlan) -> Manifest:
    opts = plan.options
    selector = labels(plan, group)
    spec: dict[str, Any] = {}
    if scaler_kind(plan, group) is None:  # else the autoscaler owns the count: apply keeps it
        spec["replicas"] = opts.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, object_name(plan, group), group),
        "spec": {
            **spec,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": selector,
                    "annotations": {
                        "checksum/config": config_checksum(plan),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(plan.ops_port),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": plan.grace_s,
                    **_account(plan, group),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": _UID,
                        "runAsGroup": _UID,
                        "fsGroup": _UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(plan, group)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": config_name(plan)}},
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def scaler_account(plan: AppPlan) -> str:
    """The service account of the pods that run the scaling controller."""
    return f"{plan.name}-scaler"


def _account(plan: AppPlan, group: GroupPlan) -> dict[str, Any]:
    # Only the scaling controller talks to the API; other pods get no token at all.
    if group.scales:
        return {"serviceAccountName": scaler_account(plan)}
    return {"automountServiceAccountToken": False}


def _scaler_access(plan: AppPlan) -> list[Manifest]:
    """ServiceAccount, Role (get and patch ``deployments/scale``) and RoleBinding."""
    name = scaler_account(plan)
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(plan, name)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(plan, name),
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]}
        ],
    }
    if not plan.options.namespace:
        raise ConfigError(
            "the app runs the scaling controller: its RoleBinding needs a namespace "
            "(--namespace or [deploy.k8s] namespace)"
        )
    subject = {"kind": "ServiceAccount", "name": name, "namespace": plan.options.namespace}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(plan, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }
    return [account, role, binding]


def _service(plan: AppPlan, group: GroupPlan) -> Manifest:
    ports = [{"name": "ops", "port": plan.ops_port, "targetPort": "ops"}]
    ports += [
        {"name": port_name(m.name), "port": m.port, "targetPort": port_name(m.name)}
        for m in group.listeners
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, object_name(plan, group), group),
        "spec": {"type": "ClusterIP", "selector": labels(plan, group), "ports": ports},
    }


def _pdb(plan: AppPlan, group: GroupPlan) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(plan, object_name(plan, group), group),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(plan, group)}},
    }
