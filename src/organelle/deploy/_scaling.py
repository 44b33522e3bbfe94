"""A group's autoscaler: a CPU HorizontalPodAutoscaler, or a KEDA ScaledObject.

KEDA creates and owns an HPA for each ScaledObject, and two HPAs on one
Deployment fight, so a group gets one or the other, never both: a group
whose modules serve jobs or consume streams gets a ScaledObject (CPU, plus
queue depth and stream lag through KEDA's Prometheus scaler); any other
group an HPA on CPU (``autoscaler = "auto"``).

Queue depth and lag are the same on every pod (each reads the shared queue
or stream), so the queries take the ``max`` per queue or group across pods
and add those up: scraping more pods does not inflate them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from organelle.deploy._plan import AppPlan, GroupPlan

__all__ = ["autoscaler", "lag_query", "queue_query", "scaler_kind"]

QUEUE_METRIC = "organelle_job_queue_depth"
LAG_METRIC = "organelle_stream_lag"
_SCALE_DOWN_WINDOW_S = 300


def scaler_kind(plan: AppPlan, group: GroupPlan) -> Literal["hpa", "keda", "controller"] | None:
    """Which autoscaler the group gets (``None``: a fixed replica count).

    ``controller``: the app's own scaling controller (docs/scaling.md) scales it.
    """
    if group.controlled:
        return "controller"
    choice = plan.options.autoscaler
    if choice == "none":
        return None
    if choice == "auto":
        return "keda" if group.jobs or group.consumer_groups else "hpa"
    return choice


def _alternatives(values: tuple[str, ...]) -> str:
    # A PromQL string holds a RE2 regex; backslashes are escaped once more for the string.
    return "|".join(re.escape(v).replace("\\", "\\\\") for v in values)


def queue_query(jobs: tuple[str, ...]) -> str:
    """Jobs waiting for the group's job names, counted once across pods."""
    return f'sum(max by (queue) ({QUEUE_METRIC}{{queue=~"{_alternatives(jobs)}"}}))'


def lag_query(groups: tuple[str, ...]) -> str:
    """Records the group's consumer groups have yet to handle, counted once across pods."""
    return f'sum(max by (stream, group) ({LAG_METRIC}{{group=~"{_alternatives(groups)}"}}))'


def autoscaler(
    plan: AppPlan, group: GroupPlan, target: str, metadata: dict[str, Any]
) -> dict[str, Any] | None:
    """The group's HPA or ScaledObject on Deployment ``target``, or ``None``."""
    kind = scaler_kind(plan, group)
    if kind == "hpa":
        return _hpa(plan, target, metadata)
    if kind == "keda":
        return _scaled_object(plan, group, target, metadata)
    return None


def _hpa(plan: AppPlan, target: str, metadata: dict[str, Any]) -> dict[str, Any]:
    opts = plan.options
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": opts.min_replicas,
            "maxReplicas": opts.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": opts.cpu_percent},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": _SCALE_DOWN_WINDOW_S}},
        },
    }


def _scaled_object(
    plan: AppPlan, group: GroupPlan, target: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    opts = plan.options
    triggers: list[dict[str, Any]] = [
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(opts.cpu_percent)}}
    ]
    if group.jobs:
        triggers.append(
            _prometheus(plan, "queue-depth", queue_query(group.jobs), opts.queue_per_replica)
        )
    if group.consumer_groups:
        triggers.append(
            _prometheus(plan, "stream-lag", lag_query(group.consumer_groups), opts.lag_per_replica)
        )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "pollingInterval": 15,
            "cooldownPeriod": _SCALE_DOWN_WINDOW_S,
            "minReplicaCount": opts.min_replicas,
            "maxReplicaCount": opts.max_replicas,
            "triggers": triggers,
        },
    }


def _prometheus(plan: AppPlan, name: str, query: str, per_replica: int) -> dict[str, Any]:
    # KEDA's default metricType for this scaler is AverageValue: replicas = value / threshold.
    return {
        "type": "prometheus",
        "name": name,
        "metadata": {
            "serverAddress": plan.options.prometheus,
            "query": query,
            "threshold": str(per_replica),
            "activationThreshold": "0",
        },
    }
