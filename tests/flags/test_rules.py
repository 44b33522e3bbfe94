"""The rule format: what is accepted, what is refused, and how a principal is matched."""

from __future__ import annotations

from typing import Any

import pytest

from organelle.auth.base import Principal
from organelle.errors import FlagRuleError, OrganelleError
from organelle.flags import UNSET, FlagRecord, Rule, bucket, parse_rule
from organelle.flags._rules import parse_record


def user(pid: str, *roles: str, **claims: Any) -> Principal:
    return Principal(id=pid, roles=frozenset(roles), claims=claims)


def test_a_rule_round_trips_as_data() -> None:
    raw = {
        "value": 5,
        "ids": ["u1"],
        "roles": ["beta", "staff"],
        "attributes": {"tenant": ["acme"], "country": ["FR"]},
        "percent": 12.5,
    }
    rule = parse_rule(raw)
    assert rule.to_data() == raw
    assert parse_rule({"value": True, "roles": "beta"}).roles == ("beta",)  # one role as a string
    assert parse_rule({"value": 1, "attributes": {"plan": "pro"}}).attributes == {"plan": ("pro",)}
    assert parse_rule({"value": False}).to_data() == {"value": False}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("beta", "rule"),
        ({"roles": ["beta"]}, "rule.value"),
        ({"value": 1, "who": ["x"]}, "rule"),
        ({"value": 1, "ids": [1]}, "rule.ids"),
        ({"value": 1, "roles": [""]}, "rule.roles"),
        ({"value": 1, "attributes": ["tenant"]}, "rule.attributes"),
        ({"value": 1, "attributes": {"tenant": []}}, "rule.attributes.tenant"),
        ({"value": 1, "attributes": {"tenant": [{"a": 1}]}}, "rule.attributes.tenant"),
        ({"value": 1, "percent": 101}, "rule.percent"),
        ({"value": 1, "percent": -1}, "rule.percent"),
        ({"value": 1, "percent": True}, "rule.percent"),
        ({"value": 1, "percent": float("nan")}, "rule.percent"),
        ({"value": 1, "percent": "10"}, "rule.percent"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(raw: Any, field: str) -> None:
    with pytest.raises(FlagRuleError) as caught:
        parse_rule(raw)
    assert caught.value.errors[0]["field"] == field
    again = OrganelleError.from_wire(caught.value.to_wire())  # a typed error over the wire too
    assert isinstance(again, FlagRuleError)
    assert again.code == "organelle.flags.invalid"


def test_every_condition_must_hold_and_any_listed_value_is_enough() -> None:
    rule = parse_rule(
        {"value": True, "roles": ["beta", "staff"], "attributes": {"tenant": ["acme", "initech"]}}
    )
    assert rule.matches("f", user("a", "beta", tenant="acme"))
    assert rule.matches("f", user("a", "staff", "x", tenant="initech"))
    assert not rule.matches("f", user("a", "beta", tenant="globex"))
    assert not rule.matches("f", user("a", "admin", tenant="acme"))
    assert not rule.matches("f", user("a", "beta"))  # no such claim
    assert not rule.matches("f", None)  # anonymous
    assert rule.matches("f", user("a", "beta", tenant=["globex", "acme"]))  # a list claim overlaps
    # The dict form a principal takes on the wire matches alike.
    assert rule.matches("f", {"id": "a", "roles": ["beta"], "claims": {"tenant": "acme"}})
    by_id = parse_rule({"value": 1, "ids": ["u1", "u2"]})
    assert by_id.matches("f", user("u2"))
    assert not by_id.matches("f", user("u3"))
    assert parse_rule({"value": 1}).matches("f", None)  # no condition: everyone


def test_the_rollout_bucket_is_stable_and_spreads_evenly() -> None:
    assert bucket("shop.new", "u1") == bucket("shop.new", "u1")
    assert bucket("shop.new", "u1") != bucket("shop.other", "u1")  # per flag, not per user only
    assert 0 <= bucket("shop.new", "u1") < 100
    ids = [f"user-{i}" for i in range(10_000)]
    ten = parse_rule({"value": True, "percent": 10})
    twenty = parse_rule({"value": True, "percent": 20})
    in_ten = {i for i in ids if ten.matches("shop.new", user(i))}
    in_twenty = {i for i in ids if twenty.matches("shop.new", user(i))}
    assert 800 < len(in_ten) < 1200
    assert 1800 < len(in_twenty) < 2200
    assert in_ten <= in_twenty  # raising the share keeps everyone who was in
    assert not parse_rule({"value": True, "percent": 100}).matches("shop.new", None)
    assert not any(parse_rule({"value": 1, "percent": 0}).matches("f", user(i)) for i in ids[:500])


def test_a_record_round_trips_and_keeps_unset_apart_from_none() -> None:
    record = FlagRecord(
        value=None, rules=(Rule(value=1, roles=("beta",)),), by="cli:ann", at=1.5, previous={}
    )
    back = parse_record(record.to_data(), "k")
    assert back == record
    assert parse_record({"rules": []}, "k").value is UNSET
    assert FlagRecord().state() == {"rules": []}
    with pytest.raises(FlagRuleError):
        parse_record(["x"], "k")
    with pytest.raises(FlagRuleError):
        parse_record({"rules": "x"}, "k")
