"""A node process of the kill tests: ``python _node_app.py URL NODE [HANG_REGION]``.

Runs a kernel with ``Shop(hang_region=HANG_REGION)`` taking part in cluster
config on the store at URL, prints ``ready`` once started, and runs until
killed (a hang region makes ``on_config_changed`` hang there: mid-change).
"""

from __future__ import annotations

import asyncio
import sys

from organelle import Kernel
from tests.cluster_config._shop import Shop


async def main(url: str, node: str, hang_region: str = "") -> None:
    config = {
        "kernel": {"node": node, "storage": url, "cluster_config": True},
        "modules": {"shop": {"limit": 10}},
    }
    async with Kernel([Shop(hang_region=hang_region)], config):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
