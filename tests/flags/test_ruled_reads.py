"""A ruled flag's read caches (last principal; per id, roles and claims read) never change a read.

Every read, cached or not, must equal the rules applied in order
(``Rule.matches``) to the principal of the current context — for principals
read again, new objects of known users, claims that decide (scalars, lists,
values that cannot be hashed, principals as dicts), rollouts, and after the
flag's rules change.
"""

from __future__ import annotations

import random
from types import MappingProxyType, SimpleNamespace
from typing import Any

from pydantic import BaseModel

from organelle.auth.base import Principal
from organelle.context import _current, root_context
from organelle.flags import FlagRecord, FlagSet, Rule
from organelle.flags._set import _BUCKETS_MAX

RULES = (
    Rule(value=3, ids=("u7",)),
    Rule(value=2, roles=("beta",), attributes={"tenant": ("acme",)}),
    Rule(value=1, roles=("beta", "staff"), percent=40.0),
)


class Flags(BaseModel):
    level: int = 0


def expected(rules: tuple[Rule, ...], principal: Any, fallback: int = 0) -> int:
    for rule in rules:
        if principal is not None and rule.matches("shop.level", principal):
            return int(rule.value)
    return fallback


def read_as(flags: FlagSet, principal: Principal | None) -> Any:
    token = _current.set(root_context(principal=principal))
    try:
        return flags.level  # type: ignore[attr-defined]
    finally:
        _current.reset(token)


def people(rng: random.Random, n: int) -> list[Principal]:
    return [
        Principal(
            id=f"u{rng.randrange(12)}",
            roles=frozenset(rng.sample(["beta", "staff", "ops"], rng.randrange(3))),
            claims={"tenant": rng.choice(["acme", "globex"])} if rng.random() < 0.7 else {},
        )
        for _ in range(n)
    ]


def test_every_read_equals_the_rules_applied_in_order() -> None:
    rng = random.Random(14)
    flags = FlagSet("shop", Flags)
    flags._apply("level", FlagRecord(rules=RULES))
    crowd = people(rng, 400)
    seen = set()
    for principal in [*crowd, *crowd[::-1], *(rng.choice(crowd) for _ in range(400)), None]:
        want = expected(RULES, principal)
        assert read_as(flags, principal) == want
        assert read_as(flags, principal) == want  # the same object again: the identity cache
        assert flags.value("level", principal=principal) == want
        seen.add(want)
    assert seen == {0, 1, 2, 3}  # the crowd reaches every rule and the fallback


CLAIM_RULES = (
    Rule(value=4, attributes={"tenant": ("acme",), "groups": ("ops", 7)}),
    Rule(value=3, roles=("beta",), attributes={"groups": ("admins",)}),
    Rule(value=2, attributes={"plan": ("pro", True)}, percent=60.0),
    Rule(value=1, attributes={"tenant": ("globex",)}),
)
CLAIM_VALUES: dict[str, list[Any]] = {
    "tenant": ["acme", "globex", "initech", None, {"name": "acme"}],
    "groups": [
        ["ops"],
        ("admins", "dev"),
        {"dev"},
        frozenset({"ops", "admins"}),
        [7],
        [{"team": "ops"}],  # a list of tables: no key, matched each time
        "ops",
        [],
    ],
    "plan": ["pro", 1, True, 1.0, "free", ["pro"]],  # 1 == True == 1.0: the same answer
}


def test_claim_rules_read_the_same_through_the_per_key_cache() -> None:
    rng = random.Random(15)
    flags = FlagSet("shop", Flags)
    flags._apply("level", FlagRecord(rules=CLAIM_RULES))
    crowd: list[Any] = []
    for i in range(300):
        claims = {k: rng.choice(v) for k, v in CLAIM_VALUES.items() if rng.random() < 0.8}
        roles = frozenset(rng.sample(["beta", "staff"], rng.randrange(3)))
        pid = f"u{rng.randrange(8)}"
        if i % 5 == 0:  # as one crosses the wire
            crowd.append({"id": pid, "roles": sorted(roles), "claims": claims})
        elif i % 7 == 0:  # a principal-like object of odd types: an int id, a list of roles
            crowd.append(
                SimpleNamespace(id=int(pid[1:]), roles=list(roles), claims=MappingProxyType(claims))
            )
        else:
            crowd.append(Principal(id=pid, roles=roles, claims=claims))
    seen = set()
    for principal in [*crowd, *crowd[::-1], *(rng.choice(crowd) for _ in range(300))]:
        want = expected(CLAIM_RULES, principal)
        assert flags.value("level", principal=principal) == want, principal
        if isinstance(principal, Principal):
            assert read_as(flags, principal) == want, principal
        seen.add(want)
    assert seen == {0, 1, 2, 3, 4}
    assert 0 < len(flags._ruled["level"].by_key) < len(crowd)  # keys shared, some unkeyable


def test_claims_decide_when_a_rule_reads_them() -> None:
    flags = FlagSet("shop", Flags)
    flags._apply("level", FlagRecord(rules=RULES))
    acme = Principal(id="u1", roles=frozenset({"beta"}), claims={"tenant": "acme"})
    other = Principal(id="u1", roles=frozenset({"beta"}), claims={"tenant": "globex"})
    # Same id and roles, other claims: not one answer for both.
    assert [read_as(flags, p) for p in (acme, other, acme, other)] == [
        2,
        expected(RULES, other),
        2,
        expected(RULES, other),
    ]


def test_new_rules_are_read_at_once_by_a_principal_read_before() -> None:
    flags = FlagSet("shop", Flags)
    beta = Principal(id="u1", roles=frozenset({"beta"}))
    flags._apply("level", FlagRecord(rules=(Rule(value=5, roles=("beta",)),)))
    assert read_as(flags, beta) == 5
    assert flags.value("level", principal=beta) == 5
    flags._apply("level", FlagRecord(rules=(Rule(value=6, roles=("beta",)),)))
    assert read_as(flags, beta) == 6
    assert flags.value("level", principal=beta) == 6
    flags._apply("level", FlagRecord(value=9))  # no rules: a plain attribute again
    assert read_as(flags, beta) == 9
    assert flags.value("level", principal=beta) == 9
    flags._apply("level", FlagRecord(rules=(Rule(value=7, roles=("staff",)),), value=4))
    assert read_as(flags, beta) == 4
    assert read_as(flags, None) == 4


def test_the_per_user_cache_is_bounded() -> None:
    flags = FlagSet("shop", Flags)
    flags._apply("level", FlagRecord(rules=(Rule(value=1, roles=("beta",), percent=50.0),)))
    ruled = flags._ruled["level"]
    for i in range(_BUCKETS_MAX + 10):
        principal = Principal(id=f"p{i}", roles=frozenset({"beta"}))
        assert flags.value("level", principal=principal) == expected(ruled_rules(), principal)
        assert len(ruled.by_key) <= _BUCKETS_MAX


def ruled_rules() -> tuple[Rule, ...]:
    return (Rule(value=1, roles=("beta",), percent=50.0),)
