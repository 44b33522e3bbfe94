"""The controller end to end: a worker node's real /metrics in, a PATCH to the Kubernetes API out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module, on
from organelle.ops import Ops
from organelle.scaling import DECIDED, ScalingController
from tests.scaling.kube_standin import kube_api
from tests.scaling.test_source import Worker

TOKEN = "controller-token"  # noqa: S105 - the stand-in takes any token


class Seen(Module):
    name = "seen"

    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []

    @on(DECIDED)
    async def decided(self, decision: dict[str, Any]) -> None:
        self.decisions.append(decision)


def controller_config(
    api: str, metrics_url: str, token_file: Path, *, dry_run: bool
) -> dict[str, Any]:
    target = {
        "name": "shop-workers",
        "metrics": [metrics_url],
        "modules": ["worker"],
        "max_replicas": 8,
        "step": 3,
        "rules": [{"metric": "queue_depth", "up_above": 10, "down_below": 2}],
    }
    return {
        "kernel": {"storage": "memory://"},
        "modules": {
            "scaling": {
                "interval_s": 3600,
                "dry_run": dry_run,
                "scaler": "kubernetes",
                "kubernetes": {"api": api, "namespace": "shop", "token_file": str(token_file)},
                "targets": [target],
            }
        },
    }


@pytest.mark.parametrize("dry_run", [False, True])
async def test_a_backlog_on_a_node_becomes_a_patch_and_an_event(
    tmp_path: Path, dry_run: bool
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    worker = Kernel(
        [Worker], {"kernel": {"jobs": "memory://", "job_worker": False, "storage": "memory://"}}
    )
    with kube_api({("shop", "shop-workers"): 1}) as api:
        async with Ops(worker, port=0) as ops, worker:
            for n in range(45):
                await worker.enqueue("worker.crunch", n=n)
            url = f"http://127.0.0.1:{ops.port}/metrics"
            controller, seen = ScalingController(), Seen()
            cfg = controller_config(api.url, url, token, dry_run=dry_run)
            async with Kernel([controller, seen], cfg) as kernel:
                (decision,) = await controller.tick(at=time.time())
                await kernel.drain()
                recent = await kernel.call("scaling.decisions", target="shop-workers")
    # 45 waiting at 10 per replica asks for 5; the step allows 1 -> 4.
    assert (decision.current, decision.desired) == (1, 4)
    assert decision.signals["queue_depth"] == 45
    methods = [r.method for r in api.requests]
    assert methods == (["GET"] if dry_run else ["GET", "PATCH"])
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    assert api.replicas[("shop", "shop-workers")] == (1 if dry_run else 4)
    (event,) = seen.decisions
    assert (event["target"], event["current"], event["desired"], event["dry_run"]) == (
        "shop-workers", 1, 4, dry_run,
    )  # fmt: skip
    assert [(r["current"], r["desired"]) for r in recent] == [(1, 4)]


async def test_a_target_that_fails_is_skipped_and_the_others_still_decided(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with kube_api({("shop", "other"): 2}) as api:  # shop-workers does not exist
        controller = ScalingController()
        cfg = controller_config(api.url, "http://127.0.0.1:9/metrics", token, dry_run=False)
        targets = cfg["modules"]["scaling"]["targets"]
        targets.append({**targets[0], "name": "other"})
        async with Kernel([controller], cfg):
            (decision,) = await controller.tick(at=0.0)
    # No node answered: no signal, so the count holds.
    assert (decision.target, decision.current, decision.desired) == ("other", 2, 2)
    assert decision.reason == "no signal"
