"""Values for the Helm chart in ``deploy/helm/organelle``, from the same plan as the manifests.

``organelle deploy k8s APP.toml --out DIR --helm-values`` writes them beside
the manifests; ``helm template`` of the chart with them renders the same
objects the command writes (a test holds the two together).
"""

from __future__ import annotations

import math
from typing import Any

from organelle.deploy._plan import AppPlan

__all__ = ["helm_values"]


def helm_values(plan: AppPlan) -> dict[str, Any]:
    """The chart's values for ``plan`` (keys as in the chart's ``values.yaml``)."""
    opts = plan.options
    return {
        "name": plan.name,
        "namespace": opts.namespace or "",
        "image": opts.image,
        "opsPort": plan.ops_port,
        "preStopSeconds": opts.pre_stop_s,
        "drainTimeoutSeconds": math.ceil(plan.drain_timeout_s),
        "hookTimeoutSeconds": math.ceil(plan.hook_timeout_s),
        "config": {"file": plan.config_file, "text": plan.config_text},
        "secret": opts.secret or f"{plan.name}-secrets",
        "secretEnv": list(plan.secret_env),
        "replicas": opts.replicas,
        "resources": {
            "cpuRequest": opts.cpu_request,
            "memoryRequest": opts.memory_request,
            "memoryLimit": opts.memory_limit,
        },
        "autoscaling": {
            "autoscaler": opts.autoscaler,
            "minReplicas": opts.min_replicas,
            "maxReplicas": opts.max_replicas,
            "cpuPercent": opts.cpu_percent,
            "queuePerReplica": opts.queue_per_replica,
            "lagPerReplica": opts.lag_per_replica,
            "prometheus": opts.prometheus,
        },
        "groups": [
            {
                "name": g.name,
                "only": list(g.only),
                "jobs": list(g.jobs),
                "consumerGroups": list(g.consumer_groups),
                "listeners": [{"module": m.name, "port": m.port} for m in g.listeners],
                "controlled": g.controlled,
                "scales": g.scales,
            }
            for g in plan.groups
        ],
    }
