"""Flag checks from the local cache vs a plain attribute read.

    python bench/flags.py            # full run (a few seconds)
    python bench/flags.py --quick    # under a second

Subjects, measured in one process, rounds interleaved so drift hits all alike:
* floor — ``obj.attr`` on a plain object: the cheapest read Python has;
* config — ``self.config.attr`` on a pydantic model (what a module's config read costs);
* flag — ``self.flags.new_checkout``, a flag without rules;
* flag.value() — ``self.flags.value("new_checkout")``, the explicit form;
* flag with a role rule — the read matches the current context's principal;
* flag with a rollout rule — a role rule plus ``percent`` (the bucket hash is remembered);
* the role rule through ``value(principal=…)`` with two principal objects taking
  turns — each check misses the last-principal cache (the first check of a
  request's principal) and finds its value by ``(id, roles)``;
* a claim rule the same way — the key adds the claims the rules read;
* a claim rule on a list claim (a JWT's ``groups``) — keyed as a tuple;
* the claim rule over 1,000 principal objects of 50 users in turn — every
  check a new object, none of them the one read last.
The module's flags come from a running kernel whose store holds the rules.
Target: a check ≤ 1 µs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# bench/ holds scripts named like stdlib modules (http.py): look there last, not first.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent / "src"))
sys.path.append(str(_BENCH))

from _common import Row, median, publish  # noqa: E402 - after the path fix above
from pydantic import BaseModel  # noqa: E402

from organelle import Kernel, Module  # noqa: E402
from organelle.auth.base import Principal  # noqa: E402
from organelle.context import _current, root_context  # noqa: E402
from organelle.testing import eventually  # noqa: E402

UNROLL = 10


class Shop(Module):
    name = "shop"

    class Config(BaseModel):
        new_checkout: bool = False

    class Flags(BaseModel):
        new_checkout: bool = False
        role_ruled: bool = False
        rollout: bool = False
        claim_ruled: bool = False
        group_ruled: bool = False


class Plain:
    def __init__(self) -> None:
        self.new_checkout = False


def timed(read: Callable[[], Any], loops: int) -> float:
    """Seconds per read: ``read`` does ``UNROLL`` reads per call."""
    started = time.perf_counter()
    for _ in range(loops):
        read()
    return (time.perf_counter() - started) / (loops * UNROLL)


def subjects(shop: Shop, plain: Plain) -> dict[str, Callable[[], Any]]:
    flags, config = shop.flags, shop.config
    one = Principal(id="user-1", roles=frozenset({"beta"}), claims={"tenant": "acme"})
    two = Principal(id="user-2", roles=frozenset({"beta"}), claims={"tenant": "acme"})
    ops = [
        Principal(id=f"user-{i}", roles=frozenset({"beta"}), claims={"groups": ["dev", "ops"]})
        for i in (1, 2)
    ]
    crowd = [
        Principal(id=f"user-{i % 50}", roles=frozenset({"beta"}), claims={"tenant": "acme"})
        for i in range(1_000)
    ]
    tens = itertools.cycle([tuple(crowd[i : i + UNROLL]) for i in range(0, len(crowd), UNROLL)])

    def floor() -> Any:
        p = plain
        return (p.new_checkout, p.new_checkout, p.new_checkout, p.new_checkout, p.new_checkout,
                p.new_checkout, p.new_checkout, p.new_checkout, p.new_checkout, p.new_checkout)  # fmt: skip

    def config_read() -> Any:
        c = config
        return (c.new_checkout, c.new_checkout, c.new_checkout, c.new_checkout, c.new_checkout,
                c.new_checkout, c.new_checkout, c.new_checkout, c.new_checkout, c.new_checkout)  # fmt: skip

    def flag() -> Any:
        f = flags
        return (f.new_checkout, f.new_checkout, f.new_checkout, f.new_checkout, f.new_checkout,
                f.new_checkout, f.new_checkout, f.new_checkout, f.new_checkout, f.new_checkout)  # fmt: skip

    def flag_value() -> Any:
        v = flags.value
        n = "new_checkout"
        return (v(n), v(n), v(n), v(n), v(n), v(n), v(n), v(n), v(n), v(n))

    def role_rule() -> Any:
        f = flags
        return (f.role_ruled, f.role_ruled, f.role_ruled, f.role_ruled, f.role_ruled,
                f.role_ruled, f.role_ruled, f.role_ruled, f.role_ruled, f.role_ruled)  # fmt: skip

    def rollout() -> Any:
        f = flags
        return (f.rollout, f.rollout, f.rollout, f.rollout, f.rollout,
                f.rollout, f.rollout, f.rollout, f.rollout, f.rollout)  # fmt: skip

    def alternating() -> Any:
        v, a, b = flags.value, one, two
        n = "role_ruled"
        return (v(n, principal=a), v(n, principal=b), v(n, principal=a), v(n, principal=b),
                v(n, principal=a), v(n, principal=b), v(n, principal=a), v(n, principal=b),
                v(n, principal=a), v(n, principal=b))  # fmt: skip

    def claims() -> Any:
        v, a, b = flags.value, one, two
        n = "claim_ruled"
        return (v(n, principal=a), v(n, principal=b), v(n, principal=a), v(n, principal=b),
                v(n, principal=a), v(n, principal=b), v(n, principal=a), v(n, principal=b),
                v(n, principal=a), v(n, principal=b))  # fmt: skip

    def groups() -> Any:
        v, (a, b) = flags.value, ops
        n = "group_ruled"
        return (v(n, principal=a), v(n, principal=b), v(n, principal=a), v(n, principal=b),
                v(n, principal=a), v(n, principal=b), v(n, principal=a), v(n, principal=b),
                v(n, principal=a), v(n, principal=b))  # fmt: skip

    def many() -> Any:
        v, (a, b, c, d, e, f, g, h, i, j) = flags.value, next(tens)
        n = "claim_ruled"
        return (v(n, principal=a), v(n, principal=b), v(n, principal=c), v(n, principal=d),
                v(n, principal=e), v(n, principal=f), v(n, principal=g), v(n, principal=h),
                v(n, principal=i), v(n, principal=j))  # fmt: skip

    return {
        "floor: plain attribute": floor,
        "config attribute (pydantic)": config_read,
        "flag, no rules": flag,
        "flag via value()": flag_value,
        "flag, role rule": role_rule,
        "flag, role + 50 % rollout": rollout,
        "role rule, value(), principals alternating": alternating,
        "claim rule, value(), principals alternating": claims,
        "list claim rule, value(), principals alternating": groups,
        "claim rule, value(), 1,000 principal objects in turn": many,
    }


async def prepare() -> tuple[Kernel, Shop]:
    kernel = Kernel([Shop], {"kernel": {"storage": "memory://"}})
    await kernel.start()
    await kernel.flags.rule("shop.role_ruled", [{"value": True, "roles": ["beta"]}])
    await kernel.flags.rule("shop.rollout", [{"value": True, "roles": ["beta"], "percent": 50}])
    await kernel.flags.rule(
        "shop.claim_ruled", [{"value": True, "attributes": {"tenant": ["acme"]}}]
    )
    await kernel.flags.rule(
        "shop.group_ruled", [{"value": True, "attributes": {"groups": ["ops", "admins"]}}]
    )
    shop = kernel.module("shop")
    assert isinstance(shop, Shop)

    def ruled() -> None:
        assert "rollout" not in vars(shop.flags)
        assert "claim_ruled" not in vars(shop.flags)
        assert "group_ruled" not in vars(shop.flags)

    await eventually(ruled, timeout_s=5)
    return kernel, shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 9)
    loops = 20_000 if args.quick else 100_000

    loop = asyncio.new_event_loop()
    kernel, shop = loop.run_until_complete(prepare())
    # A request's context: the principal the rules are matched against (beta, in the rollout).
    principal = Principal(id="user-1", roles=frozenset({"beta"}))
    _current.set(root_context(principal=principal))
    assert shop.flags.role_ruled is True
    cases = subjects(shop, Plain())
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for read in cases.values():  # warm up
        timed(read, loops // 10)
    for _ in range(rounds):
        for name, read in cases.items():
            samples[name].append(timed(read, loops))
    loop.run_until_complete(kernel.stop())
    loop.close()

    floor = median(samples["floor: plain attribute"])
    rows = []
    for name, values in samples.items():
        per_check = median(values)
        is_floor = name.startswith("floor")
        rows.append(
            Row(
                case="flag check from the local cache",
                subject=name,
                value=per_check * 1e9,
                unit="ns/check",
                baseline="" if is_floor else "floor",
                ratio=floor / per_check,
                p50_us=per_check * 1e6,
                target="" if is_floor or name.startswith("config") else "≤ 1 µs",
                extra={
                    "checks_per_s": 1 / per_check,
                    "rounds_ns": [v * 1e9 for v in values],
                },
            )
        )
    notes = (
        "Each result is the median over rounds of the time per check (reads unrolled ten "
        "to a loop turn); ratio is the floor's time over the subject's. A flag without rules "
        "is an instance attribute of the module's `FlagSet`, so it costs a plain attribute "
        "read. A flag with rules is a property: it reads the request context's principal; "
        "the checks of one request share that object, so after the first they find its "
        "value by identity (a `Principal` is frozen); a new principal object (the first "
        "check of a request: the alternating rows and the 1,000 objects, which also pay "
        "`value()`) finds it in a per-flag dict keyed by id, roles and the claims the rules "
        "read, a list claim as a tuple. The rules are matched once per key, or on every "
        "miss only for a claim that cannot be keyed (tables in a list). A rules change "
        "compiles the flag anew, caches empty. "
        "Measured on a shared 2-core machine while other work ran: compare ratios within "
        "the run, not absolute figures across runs.\n"
    )
    publish("flags", "Feature flags: a check from the local cache", rows, notes)


if __name__ == "__main__":
    main()
