from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from organelle import Kernel, Module, consume, job, on, rpc
from organelle.contracts import FORMAT, dumps, loads, snapshot
from organelle.errors import ConfigError, DefinitionError
from tests.contracts import clash
from tests.contracts.models import Clash, Colour, Line, Opaque, Quote, Shipped, Tree

_SENTINEL = object()


class Pricing(Module):
    name = "pricing"
    version = "1.2.0"

    @rpc
    async def quote(self, sku: str, qty: int = 1, note: str | None = None) -> Quote:
        return Quote(sku=sku, price=1.0 * qty)

    @rpc(name="lines")
    async def add_line(self, line: Line, colour: Colour = Colour.RED) -> None: ...

    @rpc
    async def untyped(self, anything, flag=_SENTINEL):  # type: ignore[no-untyped-def]
        return anything

    @rpc
    async def odd(self) -> Opaque:
        return Opaque()

    @rpc
    async def tree(self, root: Tree) -> int:
        return 0

    @job
    async def reindex(self, sku: str, full: bool = False) -> None: ...

    @on("order.shipped")
    async def on_shipped(self, event: Shipped) -> None: ...

    @on("order.*")
    async def on_any(self) -> None: ...

    @consume("orders", group="billing")
    async def bill(self, line: Line) -> None: ...

    @consume("audit")
    async def audit(self, record: dict[str, Any]) -> None: ...


class Stock(Module):
    name = "stock"
    version = "0.3.0"

    @rpc
    async def level(self, sku: str) -> int:
        return 1


def test_snapshot_describes_every_handler() -> None:
    snap = snapshot([Pricing])
    assert snap["format"] == FORMAT
    module = snap["modules"]["pricing"]
    assert module["version"] == "1.2.0"
    assert sorted(module["rpc"]) == ["lines", "odd", "quote", "tree", "untyped"]
    quote = module["rpc"]["quote"]
    assert quote["params"] == {
        "sku": {"required": True, "schema": {"type": "string"}},
        "qty": {"required": False, "default": 1, "schema": {"type": "integer"}},
        "note": {
            "required": False,
            "default": None,
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    assert quote["returns"] == {"$ref": "#/schemas/Quote"}
    assert snap["schemas"]["Quote"]["required"] == ["sku", "price"]
    lines = module["rpc"]["lines"]
    assert lines["params"]["line"]["schema"] == {"$ref": "#/schemas/Line"}
    assert lines["params"]["colour"]["default"] == "red"
    assert lines["returns"] == {"type": "null"}
    assert snap["schemas"]["Line"]["properties"]["qty"]["type"] == "integer"  # pydantic's own
    assert sorted(snap["schemas"]["Colour"]["enum"]) == ["green", "red"]
    assert module["jobs"] == {
        "reindex": {
            "params": {
                "sku": {"required": True, "schema": {"type": "string"}},
                "full": {"required": False, "default": False, "schema": {"type": "boolean"}},
            }
        }
    }
    assert module["events"] == [
        {"pattern": "order.*", "handler": "on_any", "payload": {}},
        {
            "pattern": "order.shipped",
            "handler": "on_shipped",
            "payload": {"$ref": "#/schemas/Shipped"},
        },
    ]
    assert module["consumers"] == [
        {
            "stream": "audit",
            "group": "pricing",
            "handler": "audit",
            "payload": {"type": "object"},
        },
        {
            "stream": "orders",
            "group": "billing",
            "handler": "bill",
            "payload": {"$ref": "#/schemas/Line"},
        },
    ]


def test_unannotated_opaque_and_unencodable_defaults() -> None:
    rpcs = snapshot([Pricing])["modules"]["pricing"]["rpc"]
    untyped = rpcs["untyped"]
    assert untyped["returns"] is None  # not annotated: nothing promised
    assert untyped["params"]["anything"] == {"required": True, "schema": {}}
    assert untyped["params"]["flag"] == {"required": False, "schema": {}}  # default not JSON
    assert rpcs["odd"]["returns"] == {"x-organelle-type": "tests.contracts.models.Opaque"}


def test_recursive_types_are_named_once() -> None:
    snap = snapshot([Pricing])
    tree = snap["schemas"]["Tree"]
    assert tree["properties"]["children"]["items"] == {"$ref": "#/schemas/Tree"}


def test_snapshot_is_deterministic_and_sorted() -> None:
    first = dumps(snapshot([Pricing, Stock]))
    again = dumps(snapshot([Stock, Pricing]))
    assert first == again
    data = json.loads(first)
    assert first == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert list(data) == ["event_types", "format", "modules", "schemas"]
    assert list(snapshot([Stock, Pricing])["modules"]) == ["pricing", "stock"]


def test_snapshot_of_a_kernel_equals_its_classes() -> None:
    kernel = Kernel([Pricing, Stock])
    assert snapshot(kernel) == snapshot([Pricing, Stock])
    assert not kernel.running


def test_a_pydantic_model_named_like_a_struct_keeps_its_own_schema() -> None:
    class Both(Module):
        name = "both"

        @rpc
        async def one(self, a: Clash) -> None: ...

        @rpc
        async def two(self, b: clash.Clash) -> None: ...

    snap = snapshot([Both])
    one = snap["modules"]["both"]["rpc"]["one"]["params"]["a"]["schema"]["$ref"]
    two = snap["modules"]["both"]["rpc"]["two"]["params"]["b"]["schema"]["$ref"]
    assert one != two
    assert snap["schemas"][one.rsplit("/", 1)[1]]["required"] == ["a"]
    assert snap["schemas"][two.rsplit("/", 1)[1]]["required"] == ["b"]


def test_two_modules_with_one_name_are_refused() -> None:
    class Again(Module):
        name = "stock"

    with pytest.raises(DefinitionError, match="two modules are named 'stock'"):
        snapshot([Stock, Again])


def test_loads_round_trips() -> None:
    snap = snapshot([Pricing, Stock])
    assert loads(dumps(snap)) == snap


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", "is not a contract snapshot (no 'format' field)"),
        ('{"format": 99, "modules": {}}', "has snapshot format 99; this organelle reads format 1"),
        ('{"format": 1}', "is not a contract snapshot: Object missing required field `modules`"),
        (
            '{"format": 1, "modules": {"a": {"version": 3}}}',
            "Expected `str`, got `int` - at `$.modules[...].version`",
        ),
        ('{"format": 1, "modules": {"a": {"version": "one"}}}', "invalid version 'one'"),
    ],
)
def test_loads_rejects_what_is_not_a_snapshot(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^contract.json") as info:
        loads(text, source="contract.json")
    assert message in str(info.value)


def test_import_organelle_does_not_import_contracts() -> None:
    code = "import sys, organelle; print('organelle.contracts' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def _all_schemas(snap: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for module in snap["modules"].values():
        for method in module["rpc"].values():
            found += [p["schema"] for p in method["params"].values()]
            found.append(method["returns"])
    return found


def test_every_schema_is_json() -> None:
    snap = snapshot([Pricing, Stock])
    assert json.loads(json.dumps(snap)) == snap
    assert all(s is None or isinstance(s, dict) for s in _all_schemas(snap))


def test_public_names_are_sorted_and_exported() -> None:
    from organelle import contracts

    assert contracts.__all__ == sorted(contracts.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(contracts, name) for name in contracts.__all__)
