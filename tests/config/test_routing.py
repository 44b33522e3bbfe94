"""The ``[routing]`` section: what a valid table compiles to, and every way one is refused."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from organelle import ConfigError, Kernel
from organelle.config.routing import parse_routing

TOML = """
[routing.pricing]
weights = { "1.0.0" = 90, ">=2,<3" = 10 }
sticky = "param:user_id"
mirror = { version = "3.0.0", percent = 5 }

[[routing.pricing.rules]]
when = { meta.tenant = "acme", role = ["beta", "staff"] }
version = "2.1.0"
"""


def test_a_table_from_toml_compiles() -> None:
    tables = parse_routing(tomllib.loads(TOML)["routing"])
    table = tables["pricing"]
    (one, w1), (two, w2) = table.weights
    assert (w1, w2) == (90.0, 10.0)
    assert [one.matches(v) for v in ("1.0.0", "1.0", "1.0.1")] == [True, True, False]
    assert [two.matches(v) for v in ("2.5.0", "3.0.0", "not-a-version")] == [True, False, False]
    assert table.sticky == ("param", "user_id")
    assert table.mirror is not None
    assert (table.mirror.percent, table.mirror.max_in_flight) == (5.0, 32)
    (rule,) = table.rules
    # TOML's dotted key (meta.tenant) and a list of accepted values.
    assert set(rule.criteria) == {
        ("meta", "tenant", frozenset({"acme"})),
        ("role", "", frozenset({"beta", "staff"})),
    }
    assert rule.version.matches("2.1.0")


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"pricing": {"weights": {"1.0.0": -1}}}, "routing.pricing.weights"),
        ({"pricing": {"weights": {"1.0.0": 0, "2.0.0": 0}}}, "routing.pricing.weights"),
        ({"pricing": {"weights": {"1.0.0": float("nan")}}}, "routing.pricing.weights"),
        ({"pricing": {"weights": {"one": 1}}}, "routing.pricing.weights"),
        ({"pricing": {"weights": {"1.0.0": "lots"}}}, "routing.pricing.weights"),
        ({"pricing": {"wieghts": {"1.0.0": 1}}}, "routing.pricing"),
        ({"pricing": {"sticky": "session"}}, "routing.pricing.sticky"),
        ({"pricing": {"sticky": "param:"}}, "routing.pricing.sticky"),
        ({"pricing": {"mirror": {"version": "2.0.0", "percent": 0}}}, "routing.pricing.mirror"),
        ({"pricing": {"mirror": {"version": "2.0.0", "percent": 101}}}, "routing.pricing.mirror"),
        (
            {"pricing": {"mirror": {"version": "2.0.0", "percent": 5, "max_in_flight": 0}}},
            "routing.pricing.mirror.max_in_flight",
        ),
        ({"pricing": {"mirror": {"percent": 5}}}, "routing.pricing"),
        ({"pricing": {"rules": [{"when": {}, "version": "2.0.0"}]}}, "routing.pricing.rules[0]"),
        (
            {"pricing": {"rules": [{"when": {"tenant": "acme"}, "version": "2.0.0"}]}},
            "routing.pricing.rules[0].when.tenant",
        ),
        (
            {"pricing": {"rules": [{"when": {"principal.id": "x"}, "version": "2.0.0"}]}},
            "routing.pricing.rules[0].when.principal.id",
        ),
        (
            {"pricing": {"rules": [{"when": {"meta.tier": [[1]]}, "version": "2"}]}},
            "routing.pricing.rules[0].when.meta.tier",
        ),
        (
            {"pricing": {"rules": [{"when": {"param.x": "1"}, "version": "latest"}]}},
            "routing.pricing.rules[0].version",
        ),
        ({"pricing": "90/10"}, "routing.pricing"),
        ({"bad name": {}}, "routing.bad name"),
        (["pricing"], "routing"),
    ],
)
def test_a_bad_table_is_refused_naming_its_key(section: Any, key: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_routing(section)
    assert bad.value.details["key"].startswith(key)
    assert str(bad.value).startswith(key)


def test_a_kernel_refuses_a_bad_table_when_built() -> None:
    with pytest.raises(ConfigError, match=r"routing\.pricing\.sticky"):
        Kernel([], {"routing": {"pricing": {"sticky": "cookie"}}})


def test_no_section_means_no_tables() -> None:
    assert parse_routing(None) == {}
    assert parse_routing({}) == {}
