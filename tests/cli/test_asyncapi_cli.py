"""``organelle asyncapi`` run for real, on the example shop and on apps written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.proc import ROOT, run_once
from tests.contracts.asyncapi_node import assert_valid

SHOP = str(ROOT / "examples" / "shop" / "app.toml")

APP = """
from __future__ import annotations

from organelle import Module, on, rpc


class Pricing(Module):
    name = "pricing"
    version = "1.2.0"

    async def on_load(self) -> None:
        raise RuntimeError("on_load must not run")

    @rpc
    async def quote(self, sku: str, qty: int = 1) -> float:
        return 1.0 * qty

    @on("order.*")
    async def on_order(self, event: dict[str, str]) -> None: ...
"""


async def test_the_shop_to_stdout_is_valid_asyncapi() -> None:
    code, out, err = await run_once("asyncapi", SHOP)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["info"] == {
        "title": "shop",
        "version": "0.1.0",
        "description": doc["info"]["description"],
    }
    assert "pricing 1.2.0" in doc["info"]["description"]
    assert "servers" not in doc  # app.toml runs on the in-process transport
    assert doc["operations"]["rpc.orders.place_order"]["reply"]["channel"] == {
        "$ref": "#/channels/rpc.orders.place_order.reply"
    }
    assert_valid(out)


async def test_yaml_to_a_file_with_options(tmp_path: Path) -> None:
    (tmp_path / "prices.py").write_text(APP, encoding="utf-8")
    app = tmp_path / "app.toml"
    app.write_text(
        '[kernel]\npythonpath = ["."]\nmodules = ["prices:Pricing"]\n'
        'transport = "nats://127.0.0.1:4222"\n'
        '[kernel.transport_options]\nprefix = "shop"\n',
        encoding="utf-8",
    )
    target = tmp_path / "asyncapi.yaml"
    code, out, err = await run_once(
        "asyncapi",
        str(app),
        "--format",
        "yaml",
        "--out",
        str(target),
        "--title",
        "Prices",
        "--app-version",
        "2.1.0",
    )
    assert (code, err) == (0, "")
    assert out == f"wrote the AsyncAPI document of 1 module to {target}\n"
    text = target.read_text(encoding="utf-8")
    assert text.startswith("asyncapi: 3.0.0\n")  # the document's own key order
    doc = yaml.safe_load(text)
    assert doc["info"]["title"] == "Prices"
    assert doc["info"]["version"] == "2.1.0"
    assert doc["servers"]["nats"]["host"] == "127.0.0.1:4222"
    assert doc["channels"]["event.order.any"]["address"] == "shop.evt.order.{token}"
    assert_valid(text)


async def test_only_keeps_the_named_modules() -> None:
    code, out, _ = await run_once("asyncapi", SHOP, "--only", "pricing")
    assert code == 0
    assert {op.split(".")[1] for op in json.loads(out)["operations"]} == {"pricing"}


async def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    code, out, err = await run_once("asyncapi", str(tmp_path / "nowhere.toml"))
    assert (code, out) == (2, "")
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    code, out, err = await run_once("asyncapi", SHOP, "--format", "xml")
    assert code == 2
    unwritable = tmp_path / "missing" / "doc.json"
    code, out, err = await run_once("asyncapi", SHOP, "--out", str(unwritable))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: cannot write {unwritable}")
