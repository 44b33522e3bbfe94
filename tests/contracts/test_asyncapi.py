"""The AsyncAPI 3.0 document: channels, operations and messages from handlers, checked by the
official parser (``@asyncapi/parser`` under Node.js; see tests/contracts/asyncapi_node.py)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from organelle import Kernel, Module, consume, event, on, rpc
from organelle.config.settings import KernelSettings
from organelle.contracts import ASYNCAPI, asyncapi
from organelle.errors import ConfigError, DefinitionError
from tests.contracts.asyncapi_node import assert_valid, parse
from tests.contracts.models import Line, Quote, Shipped

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^[\w.\-]+$")  # what AsyncAPI allows as a components key


@event("aa.order.placed", version=2, key=("order_id",), personal=("email",))
class OrderPlaced(msgspec.Struct):
    """An order was placed."""

    order_id: str
    total: float
    email: str = ""


class Subclassed(OrderPlaced):
    """Inherits the attribute but was not declared an event itself."""


class Shop(Module):
    name = "shop"
    version = "1.4.0"

    @rpc(roles=["staff"], timeout_s=2.0)
    async def quote(self, sku: str, qty: int = 1, note: str | None = None) -> Quote:
        """Price one line."""
        return Quote(sku=sku, price=1.0 * qty)

    @rpc
    async def ping(self):  # type: ignore[no-untyped-def]
        return "pong"

    @on("aa.order.placed")
    async def placed(self, event: OrderPlaced) -> None:
        """Book the order."""

    @on("order.*")
    async def any_order(self, event: dict[str, Any]) -> None: ...

    @on("order.*", delivery="broadcast")
    async def any_order_again(self, event: dict[str, Any]) -> None: ...

    @on("order.*.line.*")
    async def lines(self, event: Line) -> None: ...

    @on("audit.>")
    async def audit(self) -> None: ...

    @consume("orders", group="billing")
    async def bill(self, event: OrderPlaced) -> None:
        """Bill a placed order."""

    @consume("orders", group="stats", start="latest")
    async def count(self, record: Subclassed) -> None: ...


class Mail(Module):
    name = "mail"
    version = "0.2.0"

    @on("aa.order.placed")
    async def confirm(self, event: OrderPlaced) -> None: ...

    @on("order.*")
    async def shipped(self, event: Shipped) -> None: ...


def _doc(**options: Any) -> dict[str, Any]:
    return asyncapi([Shop, Mail], title="shop", version="1.4.0", **options)


def test_document_is_asyncapi_3() -> None:
    doc = _doc()
    assert doc["asyncapi"] == ASYNCAPI == "3.0.0"
    assert doc["info"]["title"] == "shop"
    assert doc["info"]["version"] == "1.4.0"
    assert "shop 1.4.0, mail 0.2.0" in doc["info"]["description"]
    assert doc["defaultContentType"] == "application/json"
    assert "servers" not in doc  # the default transport is memory://
    assert all(NAME.match(k) for k in doc["components"]["schemas"])
    assert all(NAME.match(k) for k in doc["components"]["messages"])


def test_rpc_is_a_receive_operation_with_a_reply() -> None:
    doc = _doc()
    channel = doc["channels"]["rpc.shop.quote"]
    assert channel["address"] == "org.rpc.shop.quote"
    assert doc["channels"]["rpc.shop.quote.reply"]["address"] is None  # the caller's inbox
    op = doc["operations"]["rpc.shop.quote"]
    assert op["action"] == "receive"
    assert op["channel"] == {"$ref": "#/channels/rpc.shop.quote"}
    assert op["messages"] == [{"$ref": "#/channels/rpc.shop.quote/messages/shop.quote.request"}]
    assert op["reply"] == {
        "channel": {"$ref": "#/channels/rpc.shop.quote.reply"},
        "messages": [
            {"$ref": "#/channels/rpc.shop.quote.reply/messages/shop.quote.reply"},
            {"$ref": "#/channels/rpc.shop.quote.reply/messages/organelle.error"},
        ],
    }
    assert op["bindings"]["nats"]["queue"] == "org.rpc.shop"
    assert op["summary"] == "Price one line."
    assert op["x-organelle-roles"] == ["staff"]
    assert op["x-organelle-timeout-s"] == 2.0
    messages = doc["components"]["messages"]
    request = messages["shop.quote.request"]
    assert request["payload"] == {
        "type": "object",
        "properties": {
            "sku": {"type": "string"},
            "qty": {"type": "integer", "default": 1},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["sku"],
        "additionalProperties": False,
    }
    assert request["headers"] == {"$ref": "#/components/schemas/OrganelleRequestHeaders"}
    assert messages["shop.quote.reply"]["payload"] == {"$ref": "#/components/schemas/Quote"}
    assert messages["shop.ping.reply"]["payload"] == {}  # not annotated: anything
    assert messages["shop.ping.request"]["payload"]["properties"] == {}
    assert doc["components"]["schemas"]["Quote"]["required"] == ["sku", "price"]


def test_wildcards_become_channel_parameters() -> None:
    channels = _doc()["channels"]
    one = channels["event.order.any"]
    assert one["address"] == "org.evt.order.{token}"
    assert set(one["parameters"]) == {"token"}
    assert one["x-organelle-pattern"] == "order.*"
    two = channels["event.order.any.line.any"]
    assert two["address"] == "org.evt.order.{token1}.line.{token2}"
    assert set(two["parameters"]) == {"token1", "token2"}
    rest = channels["event.audit.rest"]
    assert rest["address"] == "org.evt.audit.{rest}"
    assert "dot-separated" in rest["parameters"]["rest"]["description"]
    assert "parameters" not in channels["event.aa.order.placed"]


def test_subscriptions_share_a_channel_and_each_payload_type_is_one_message() -> None:
    doc = _doc()
    channel = doc["channels"]["event.order.any"]
    # shop's two dict handlers share one message; mail's Shipped is another.
    assert list(channel["messages"]) == ["event.order.any", "event.order.any.Shipped"]
    ops = doc["operations"]
    assert ops["event.shop.any_order"]["messages"] == ops["event.shop.any_order_again"]["messages"]
    assert ops["event.shop.any_order"]["bindings"]["nats"]["queue"] == "org.evt.shop.any_order"
    assert ops["event.shop.any_order_again"]["x-organelle-delivery"] == "broadcast"
    assert "bindings" not in ops["event.shop.any_order_again"]  # no queue group: every node
    assert ops["event.mail.shipped"]["messages"] == [
        {"$ref": "#/channels/event.order.any/messages/event.order.any.Shipped"}
    ]
    audit = doc["components"]["messages"]["event.audit.rest"]
    assert audit["payload"] == {}  # the handler takes no payload
    assert audit["headers"] == {"$ref": "#/components/schemas/OrganelleEventHeaders"}


def test_typed_event_names_the_message_by_type_and_version() -> None:
    doc = _doc()
    messages = doc["components"]["messages"]
    typed = messages["aa.order.placed.v2"]
    assert typed["name"] == "aa.order.placed@2"
    assert typed["title"] == "OrderPlaced"
    assert typed["summary"] == "An order was placed."
    assert typed["x-organelle-event"] == "aa.order.placed"
    assert typed["x-organelle-event-version"] == 2
    assert typed["x-organelle-key"] == ["order_id"]
    assert typed["x-organelle-personal"] == ["email"]
    assert "x-organelle-secret" not in typed
    assert typed["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    fixed = typed["headers"]["allOf"][1]["properties"]
    assert fixed == {
        "ce-type": {"type": "string", "const": "aa.order.placed"},
        "ce-dataversion": {"type": "string", "const": "2"},
    }
    # One message wherever the type is received: two subscribers and a stream.
    placed = doc["channels"]["event.aa.order.placed"]["messages"]
    assert list(placed) == ["aa.order.placed.v2"]
    assert "aa.order.placed.v2" in doc["channels"]["stream.orders"]["messages"]
    # A subclass does not inherit the declaration: it is described from its stream.
    assert not any(m.get("x-organelle-event") for k, m in messages.items() if "Subclassed" in k)


def test_a_stream_is_a_channel_per_stream_and_an_operation_per_group() -> None:
    settings = KernelSettings(stream_specs={"orders": {"partitions": 3}})
    doc = _doc(settings=settings)
    channel = doc["channels"]["stream.orders"]
    assert channel["address"] == "ORGANELLE.st.orders.{partition}"
    assert channel["parameters"]["partition"]["enum"] == ["0", "1", "2"]
    assert channel["x-organelle-stream"] == "orders"
    bill, count = doc["operations"]["stream.shop.bill"], doc["operations"]["stream.shop.count"]
    assert bill["action"] == count["action"] == "receive"
    assert (bill["x-organelle-group"], count["x-organelle-group"]) == ("billing", "stats")
    assert count["x-organelle-start"] == "latest"
    assert bill["summary"] == "Bill a placed order."
    assert bill["tags"] == [{"name": "shop"}]


def test_headers_describe_cloudevents_and_organelle_request_headers() -> None:
    schemas = _doc()["components"]["schemas"]
    event = schemas["OrganelleEventHeaders"]["properties"]
    for header in (
        "ce-id",
        "ce-source",
        "ce-type",
        "ce-specversion",
        "ce-time",
        "ce-subject",
        "ce-dataschema",
        "ce-correlationid",
        "ce-causationid",
        "ce-traceparent",
        "ce-dataversion",
        "ce-partitionkey",
        "content-type",
        "Organelle-Id",
        "Organelle-Correlation-Id",
    ):
        assert event[header]["type"] == "string", header
    assert "Organelle-Timeout-Ms" not in event  # events carry no deadline
    request = schemas["OrganelleRequestHeaders"]["properties"]
    assert {"Organelle-Timeout-Ms", "Organelle-Principal", "Organelle-Codec", "traceparent"} <= set(
        request
    )
    assert set(schemas["OrganelleReplyHeaders"]["properties"]) == {
        "Organelle-Codec",
        "Organelle-Error",
        "Organelle-Retry",
    }


def test_servers_come_from_the_transport_without_credentials() -> None:
    settings = KernelSettings(
        transport="nats://user:secret@10.0.0.1:4222,10.0.0.2",
        transport_options={"prefix": "shop", "servers": ["tls://10.0.0.3:4443"]},
        streams="nats://10.0.0.1:4222,10.0.0.9?prefix=LOG",
    )
    doc = _doc(settings=settings)
    assert doc["servers"] == {
        "nats": {
            "host": "10.0.0.1:4222",
            "protocol": "nats",
            "description": "NATS server of the transport and stream log",
        },
        "nats-2": {
            "host": "10.0.0.2:4222",
            "protocol": "nats",
            "description": "NATS server of the transport",
        },
        "nats-3": {
            "host": "10.0.0.3:4443",
            "protocol": "nats",
            "description": "NATS server (TLS) of the transport",
        },
        "nats-4": {
            "host": "10.0.0.9:4222",
            "protocol": "nats",
            "description": "NATS server of the stream log",
        },
    }
    assert "secret" not in str(doc)
    assert doc["channels"]["rpc.shop.quote"]["address"] == "shop.rpc.shop.quote"
    assert doc["channels"]["event.aa.order.placed"]["address"] == "shop.evt.aa.order.placed"
    assert doc["channels"]["stream.orders"]["address"] == "LOG.st.orders.{partition}"
    assert_valid(doc)


def test_a_kernel_brings_its_own_settings() -> None:
    kernel = Kernel([Mail], {"kernel": {"transport": "nats://127.0.0.1:4222"}})
    doc = asyncapi(kernel)
    assert doc["servers"]["nats"]["host"] == "127.0.0.1:4222"
    assert doc["info"]["title"] == "organelle app"
    assert list(doc["operations"]) == ["event.mail.confirm", "event.mail.shipped"]


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(ConfigError, match="not a nats:// or tls://"):
        asyncapi([Mail], settings=KernelSettings(transport="nats://h:1,http://x"))
    with pytest.raises(DefinitionError, match="two modules are named 'mail'"):
        asyncapi([Mail, Mail])


def test_the_parser_accepts_the_document() -> None:
    diagnostics = assert_valid(_doc())
    assert not [d for d in diagnostics if d["severity"] == "warning"], diagnostics


def test_the_parser_accepts_the_example_shop() -> None:
    kernel = Kernel.from_config(ROOT / "examples" / "shop" / "http.toml")
    doc = asyncapi(kernel, title="shop")
    assert {"rpc.orders.place_order", "event.order.any", "event.inventory.low_stock"} <= set(
        doc["channels"]
    )
    assert "OrderLine" in doc["components"]["schemas"]  # a pydantic model, hoisted
    diagnostics = assert_valid(doc)
    assert not [d for d in diagnostics if d["severity"] == "warning"], diagnostics


def test_the_validation_can_fail() -> None:
    """The guard itself: a parameter missing from the address and a message from elsewhere."""
    doc = copy.deepcopy(_doc())
    doc["channels"]["event.order.any"]["address"] = "org.evt.order.{nope}"
    doc["operations"]["rpc.shop.quote"]["messages"] = [
        {"$ref": "#/channels/rpc.shop.quote.reply/messages/shop.quote.reply"}
    ]
    code, diagnostics = parse(doc)
    codes = {d["code"] for d in diagnostics if d["severity"] == "error"}
    assert code == 1
    assert {
        "asyncapi3-channel-parameters",
        "asyncapi3-operation-messages-from-referred-channel",
    } <= (codes)
    assert parse("asyncapi: 3.0.0\ninfo: {}\n")[0] == 1
