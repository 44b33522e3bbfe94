"""AsyncAPI 3.0 from the module classes: what an app receives over NATS, with JSON Schemas.

Read from the classes alone, like the contract snapshot: nothing starts. Each
``@rpc`` method is a request channel on ``<prefix>.rpc.<module>.<method>``
with a reply channel (the caller's inbox, so no fixed address); each ``@on``
pattern an event channel on ``<prefix>.evt.<pattern>``, its ``*`` and ``>``
as channel parameters; each ``@consume``d stream a channel on its JetStream
subjects ``<prefix>.st.<stream>.{partition}``. Every handler is a ``receive``
operation of the app. Schemas are rendered once, by the snapshot's renderer,
into ``components.schemas``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from organelle._version import __version__
from organelle.config.settings import KernelSettings
from organelle.contracts._asyncapi_headers import ERROR_PAYLOAD, HEADER_SCHEMAS, event_headers
from organelle.contracts._render import Hints, fill, render
from organelle.contracts._snapshot import json_default, return_hint, specs_of
from organelle.envelope import EventType, event_type
from organelle.module import Module, ModuleSpec
from organelle.transport.nats_connect import Server, server_pool

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.module import Consumer, RpcMethod, Subscription

__all__ = ["ASYNCAPI", "asyncapi"]

ASYNCAPI = "3.0.0"
"""The AsyncAPI version of the document."""

_SCHEMAS = "#/components/schemas/"
_MESSAGES = "#/components/messages/"
_NATS = "0.1.0"  # the NATS operation binding's version
_ERROR = "organelle.error"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _ref(pointer: str) -> dict[str, str]:
    return {"$ref": pointer}


def _summary(cls: type, attr: str) -> str | None:
    doc = inspect.getdoc(getattr(cls, attr))
    return doc.strip().splitlines()[0] if doc else None


def _event_meta(target: Any) -> EventType | None:
    """The ``@event`` declaration of a payload class, if it has one."""
    return event_type(target) if isinstance(target, type) else None


def _address(prefix: str, pattern: str) -> tuple[str, dict[str, Any]]:
    """``<prefix>.evt.<pattern>`` with ``*`` as ``{token…}`` and ``>`` as ``{rest}``."""
    tokens = pattern.split(".")
    stars = tokens.count("*")
    params: dict[str, Any] = {}
    out = []
    for token in tokens:
        if token == "*":  # noqa: S105 - a wildcard, not a password
            name = "token" if stars == 1 else f"token{len(params) + 1}"
            params[name] = {"description": "Any one token of the topic (the pattern's '*')."}
        elif token == ">":  # noqa: S105 - a wildcard, not a password
            name = "rest"
            params[name] = {"description": "One or more tokens, dot-separated (the pattern's '>')."}
        else:
            out.append(token)
            continue
        out.append("{" + name + "}")
    return ".".join([prefix, "evt", *out]), params


class _Document:
    """The document being built: channels, operations and messages, schemas as slots."""

    def __init__(self, prefix: str, stream_prefix: str, settings: KernelSettings) -> None:
        self.prefix = prefix
        self.stream_prefix = stream_prefix
        self.settings = settings
        self.hints = Hints()
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self._by_payload: dict[tuple[str, Any], str] = {}  # (channel, payload) -> message
        self._typed: dict[tuple[str, int], str] = {}  # (event name, version) -> message
        self._patterns: dict[str, str] = {}  # @on pattern -> its channel

    def _id(self, base: str, taken: dict[str, Any]) -> str:
        key = _UNSAFE.sub("_", base.replace("*", "any").replace(">", "rest"))
        found, n = key, 1
        while found in taken:
            n += 1
            found = f"{key}.{n}"
        return found

    def _put(self, channel: str, message: str) -> dict[str, str]:
        """Reference ``message`` from ``channel``; return the operation's reference to it."""
        self.channels[channel]["messages"][message] = _ref(_MESSAGES + message)
        return _ref(f"#/channels/{channel}/messages/{message}")

    def _operation(self, op_id: str, module: str, body: dict[str, Any]) -> None:
        self.operations[self._id(op_id, self.operations)] = {
            "action": "receive",
            **body,
            "tags": [{"name": module}],
        }

    # payload messages: events and stream records ---------------------------
    def _payload_message(self, channel: str, target: Any, name: str, title: str) -> str:
        try:
            known = self._by_payload.get((channel, target))
        except TypeError:  # an unhashable hint: never shared
            known = None
        if known is not None:
            return known
        meta = _event_meta(target)
        if meta is not None and (meta.name, meta.version) in self._typed:
            message_id = self._typed[(meta.name, meta.version)]
        else:
            message_id = self._new_payload_message(channel, target, meta, name, title)
        with contextlib.suppress(TypeError):  # an unhashable hint: never shared
            self._by_payload[(channel, target)] = message_id
        return message_id

    def _new_payload_message(
        self, channel: str, target: Any, meta: Any, name: str, title: str
    ) -> str:
        headers = _ref(_SCHEMAS + "OrganelleEventHeaders")
        message: dict[str, Any] = {"name": name, "title": title}
        if meta is not None:
            version = int(meta.version)
            message_id = self._id(f"{meta.name}.v{version}", self.messages)
            self._typed[(meta.name, version)] = message_id
            message = {"name": meta.ref, "title": target.__name__}
            description = getattr(meta, "description", "") or inspect.getdoc(target)
            if description:
                message["summary"] = description.strip().splitlines()[0]
            headers = event_headers(_SCHEMAS + "OrganelleEventHeaders", meta.name, version)
            message["x-organelle-event"] = meta.name
            message["x-organelle-event-version"] = version
            for what in ("key", "secret", "personal"):
                fields = list(getattr(meta, what, ()) or ())
                if fields:
                    message[f"x-organelle-{what}"] = fields
        else:
            taken = any(k[0] == channel for k in self._by_payload)
            suffix = f".{getattr(target, '__name__', 'payload')}" if taken else ""
            message_id = self._id(channel + suffix, self.messages)
        self.messages[message_id] = message | {
            "contentType": "application/json",
            "headers": headers,
            "payload": self.hints.payload(target),
        }
        return message_id

    # the three kinds of channel ---------------------------------------------
    def rpc(self, spec: ModuleSpec, method: str, rpc: RpcMethod) -> None:
        target = f"{spec.name}.{method}"
        request, reply = self._id(f"rpc.{target}", self.channels), f"rpc.{target}.reply"
        reply = self._id(reply, self.channels)
        self.channels[request] = {
            "address": f"{self.prefix}.rpc.{target}",
            "title": f"Call {target}",
            "messages": {},
        }
        self.channels[reply] = {
            "address": None,
            "title": f"Reply of {target}",
            "description": "The caller's reply subject (NATS reply-to, e.g. _INBOX.<random>.<n>).",
            "messages": {},
        }
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in rpc.contract.fields:
            default = json_default(field[2]) if len(field) == 3 else msgspec.UNSET  # noqa: PLR2004 - (name, hint, default)
            extra = {} if default is msgspec.UNSET else {"default": default}
            properties[field[0]] = self.hints.add(field[1], **extra)
            if len(field) == 2:  # noqa: PLR2004 - (name, hint) means required
                required.append(field[0])
        params: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            params["required"] = required
        returns = return_hint(spec, rpc.attr)
        self.messages[f"{target}.request"] = {
            "name": target,
            "title": f"{target} request",
            "summary": "The parameters, as one object; an empty body means {}.",
            "contentType": "application/json",
            "headers": _ref(_SCHEMAS + "OrganelleRequestHeaders"),
            "payload": params,
        }
        self.messages[f"{target}.reply"] = {
            "name": f"{target}.reply",
            "title": f"{target} result",
            "contentType": "application/json",
            "headers": _ref(_SCHEMAS + "OrganelleReplyHeaders"),
            "payload": {} if returns is None else self.hints.add(returns),
        }
        body: dict[str, Any] = {
            "channel": _ref(f"#/channels/{request}"),
            "messages": [self._put(request, f"{target}.request")],
            "reply": {
                "channel": _ref(f"#/channels/{reply}"),
                "messages": [self._put(reply, f"{target}.reply"), self._put(reply, _ERROR)],
            },
            "bindings": {
                "nats": {"queue": f"{self.prefix}.rpc.{spec.name}", "bindingVersion": _NATS}
            },
        }
        summary = _summary(spec.cls, rpc.attr)
        if summary:
            body["summary"] = summary
        for what in ("roles", "permissions"):
            if getattr(rpc.spec, what):
                body[f"x-organelle-{what}"] = list(getattr(rpc.spec, what))
        if rpc.spec.timeout_s is not None:
            body["x-organelle-timeout-s"] = rpc.spec.timeout_s
        self._operation(f"rpc.{target}", spec.name, body)

    def event(self, spec: ModuleSpec, sub: Subscription) -> None:
        pattern = sub.spec.pattern
        channel = self._patterns.get(pattern)
        if channel is None:
            channel = self._patterns[pattern] = self._id(f"event.{pattern}", self.channels)
            address, params = _address(self.prefix, pattern)
            self.channels[channel] = {
                "address": address,
                "title": f"Events {pattern}",
                "messages": {},
                **({"parameters": params} if params else {}),
                "x-organelle-pattern": pattern,
            }
        message = self._payload_message(channel, sub.contract.target, pattern, f"Event {pattern}")
        body: dict[str, Any] = {
            "channel": _ref(f"#/channels/{channel}"),
            "messages": [self._put(channel, message)],
            "x-organelle-delivery": sub.spec.delivery,
        }
        if sub.spec.delivery == "balanced":
            queue = f"{self.prefix}.evt.{spec.name}.{sub.attr}"
            body["bindings"] = {"nats": {"queue": queue, "bindingVersion": _NATS}}
        summary = _summary(spec.cls, sub.attr)
        if summary:
            body["summary"] = summary
        self._operation(f"event.{spec.name}.{sub.attr}", spec.name, body)

    def stream(self, spec: ModuleSpec, consumer: Consumer) -> None:
        name = consumer.options.stream
        channel = f"stream.{name}"
        if channel not in self.channels:
            partition: dict[str, Any] = {
                "description": "The partition: blake2b(key) % partitions, round-robin for no key."
            }
            count = self.settings.stream_specs.get(name, {}).get("partitions")
            if isinstance(count, int) and count > 0:
                partition["enum"] = [str(i) for i in range(count)]
            self.channels[channel] = {
                "address": f"{self.stream_prefix}.st.{name}.{{partition}}",
                "title": f"Stream {name}",
                "description": "Records of a durable stream: the JetStream stream "
                f"{self.stream_prefix}_{name} when the stream log is on NATS.",
                "messages": {},
                "parameters": {"partition": partition},
                "x-organelle-stream": name,
            }
        message = self._payload_message(
            channel, consumer.contract.target, name, f"Record of stream {name}"
        )
        options = consumer.options
        body: dict[str, Any] = {
            "channel": _ref(f"#/channels/{channel}"),
            "messages": [self._put(channel, message)],
            "x-organelle-group": options.group or spec.name,
            "x-organelle-start": options.start,
            "x-organelle-max-attempts": options.max_attempts,
        }
        summary = _summary(spec.cls, consumer.attr)
        if summary:
            body["summary"] = summary
        self._operation(f"stream.{spec.name}.{consumer.attr}", spec.name, body)


def _servers(settings: KernelSettings) -> dict[str, Any]:
    """One server per NATS server the transport (and a NATS stream log) connects to."""
    pool: list[tuple[Server, str]] = []
    if settings.transport.split("://", 1)[0] in ("nats", "tls"):
        extra = settings.transport_options.get("servers")
        pool += [(s, "transport") for s in server_pool(settings.transport, extra)]
    if settings.streams.split("://", 1)[0] in ("nats", "tls"):
        pool += [(s, "stream log") for s in server_pool(settings.streams)]
    out: dict[str, Any] = {}
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for server, role in pool:
        held = seen.get((server.host, server.port))
        if held is not None:
            if role not in held["description"]:
                held["description"] += f" and {role}"
            continue
        key = "nats" if not out else f"nats-{len(out) + 1}"
        out[key] = seen[(server.host, server.port)] = {
            "host": f"{server.host}:{server.port}",
            "protocol": "nats",
            "description": f"NATS server{' (TLS)' if server.tls else ''} of the {role}",
        }
    return out


def _stream_prefix(settings: KernelSettings) -> str:
    query = parse_qs(urlsplit(settings.streams).query) if "://" in settings.streams else {}
    return query.get("prefix", ["ORGANELLE"])[-1]


def asyncapi(
    source: Kernel | Iterable[ModuleSpec | type[Module]],
    *,
    title: str = "organelle app",
    version: str = "0.1.0",
    settings: KernelSettings | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of an app's RPC methods, event subscriptions and streams.

    Args:
        source: a built (not necessarily started) Kernel, or module classes or specs.
        title: ``info.title``.
        version: ``info.version``: the version of the app.
        settings: the ``[kernel]`` settings that say where the app connects
            (``servers``) and its subject prefix; a Kernel's own by default.

    Raises:
        DefinitionError: a class is not a valid module, or two modules share a name.
        ConfigError: the transport or stream log URL names a malformed server.

    Example::

        from organelle.contracts import asyncapi

        doc = asyncapi(kernel, title="shop", version="1.4.0")
    """
    from organelle.kernel import Kernel

    if settings is None:
        settings = source.settings if isinstance(source, Kernel) else KernelSettings()
    specs = specs_of(source)
    prefix = str(settings.transport_options.get("prefix") or "org")
    doc = _Document(prefix, _stream_prefix(settings), settings)
    for spec in specs:
        for method, rpc in spec.rpcs.items():
            doc.rpc(spec, method, rpc)
        for sub in spec.subscriptions:
            doc.event(spec, sub)
        for consumer in spec.consumers:
            doc.stream(spec, consumer)
    doc.messages[_ERROR] = {
        "name": _ERROR,
        "title": "Error reply",
        "contentType": "application/json",
        "headers": {
            "allOf": [
                _ref(_SCHEMAS + "OrganelleReplyHeaders"),
                {"type": "object", "required": ["Organelle-Error"]},
            ]
        },
        "payload": _ref(_SCHEMAS + "OrganelleError"),
    }
    rendered, table = render(doc.hints.hints, ref_prefix=_SCHEMAS)
    modules = ", ".join(f"{s.name} {s.version}" for s in specs) or "none"
    out: dict[str, Any] = {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": title,
            "version": version,
            "description": f"Generated by organelle {__version__} from the modules: {modules}.",
        },
        "defaultContentType": "application/json",
    }
    servers = _servers(settings)
    if servers:
        out["servers"] = servers
    out["channels"] = doc.channels
    out["operations"] = doc.operations
    out["components"] = {
        "schemas": {**table, **HEADER_SCHEMAS, "OrganelleError": ERROR_PAYLOAD},
        "messages": fill(doc.messages, rendered),
    }
    return out
