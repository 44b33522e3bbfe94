"""Deploying an app: Kubernetes manifests and Helm values rendered from its config file.

``organelle deploy k8s APP.toml --out DIR`` is the command; in code::

    from organelle.deploy import plan_app, render_k8s, write_manifests

    plan = plan_app("app.toml", image="registry.example/shop:1.4", namespace="shop")
    write_manifests(render_k8s(plan), "k8s/")

See docs/deploy.md. Rendering needs PyYAML (``pip install 'organelle[deploy]'``)
only to write YAML; the objects themselves are plain dicts.
"""

from organelle.deploy._helm import helm_values
from organelle.deploy._options import K8sOptions, NodeGroup
from organelle.deploy._plan import AppPlan, GroupPlan, ModuleFacts, plan_app
from organelle.deploy._scaling import lag_query, queue_query, scaler_kind
from organelle.deploy._yaml import dump_yaml, write_manifests
from organelle.deploy.k8s import render_k8s

__all__ = [
    "AppPlan",
    "GroupPlan",
    "K8sOptions",
    "ModuleFacts",
    "NodeGroup",
    "dump_yaml",
    "helm_values",
    "lag_query",
    "plan_app",
    "queue_query",
    "render_k8s",
    "scaler_kind",
    "write_manifests",
]
