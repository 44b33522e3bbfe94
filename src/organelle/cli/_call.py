"""``organelle call``, ``emit``, ``config live|reload|diff`` and ``openapi``.

``call`` and ``emit`` join the app's cluster as a client node and act like
any node: a call goes to a node serving the module, an event to every
subscriber. Parameters are ``name=value`` pairs, each value JSON when it
parses (``qty=3``, ``tags=["a"]``) and a string otherwise (``sku=kiwi``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text

from organelle.cli._act import each, node_errors, print_json, run
from organelle.cli._options import Sets
from organelle.cli._output import EXIT_FAILED, EXIT_INVALID, err, out
from organelle.cli._remote import AppOption, NodeOption, Remote, principal
from organelle.errors import ConfigError

__all__ = ["call", "config_diff", "config_live", "config_reload", "emit", "openapi"]

Pairs = Annotated[
    list[str] | None,
    typer.Argument(metavar="NAME=VALUE...", help="Parameters; VALUE is JSON when it parses."),
]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def parse_pairs(items: list[str]) -> dict[str, Any]:
    """``["sku=kiwi", "qty=3"]`` → ``{"sku": "kiwi", "qty": 3}``.

    Raises:
        ConfigError: an item without ``=`` or with an empty name.
    """
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{item!r}: expected NAME=VALUE")
        try:
            params[name.strip()] = json.loads(raw)
        except ValueError:
            params[name.strip()] = raw
    return params


def _usage(exc: ConfigError) -> NoReturn:
    err.print(Text(f"error: {exc.code}: {exc.message}"))
    raise typer.Exit(EXIT_INVALID)


def _encode(value: Any) -> str:
    from organelle.codec import codec_for

    return codec_for("json").encode(value).decode()


def call(  # noqa: PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="MODULE.METHOD", show_default=False)],
    pairs: Pairs = None,
    app: AppOption = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="Call with this role (repeatable).")
    ] = None,
    timeout: Timeout = 10.0,
    set_: Sets = None,
) -> None:
    """Call an RPC method of the running app; print its result as JSON.

    A typed error prints its code and message on stderr and exits 1 (a
    validation error names each bad field); bad input here exits 2.
    """
    if "." not in target:
        _usage(ConfigError(f"{target!r}: expected MODULE.METHOD"))
    try:
        params = parse_pairs(pairs or [])
    except ConfigError as exc:
        _usage(exc)

    async def work(remote: Remote) -> Any:
        client, _ = remote.need_cluster("call")
        await client.wait_for(target.partition(".")[0], timeout)
        who = principal(tuple(role)) if role else None
        return await client.call_with(target, params, timeout_s=timeout, principal=who)

    result = run(ctx, app, set_, work, timeout_s=timeout)
    sys.stdout.write(_encode(result) + "\n")


def emit(  # noqa: PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(metavar="TOPIC", show_default=False)],
    pairs: Pairs = None,
    data: Annotated[
        str | None, typer.Option("--data", help="The whole payload as JSON (instead of pairs).")
    ] = None,
    app: AppOption = None,
    set_: Sets = None,
) -> None:
    """Publish an event to the running app's subscribers."""
    if data is not None and pairs:
        _usage(ConfigError("give NAME=VALUE pairs or --data, not both"))
    payload: Any = None
    try:
        payload = parse_pairs(pairs or []) if data is None else json.loads(data)
    except ConfigError as exc:
        _usage(exc)
    except ValueError as exc:
        _usage(ConfigError(f"--data is not JSON: {exc}"))

    async def work(remote: Remote) -> None:
        client, _ = remote.need_cluster("emit")
        await client.emit(topic, payload)

    run(ctx, app, set_, work)
    err.print(Text(f"emitted {topic}"))


def _per_node(  # noqa: PLR0917 - the options of the three commands
    ctx: typer.Context,
    operation: str,
    app: str | None,
    node: str | None,
    sets: list[str] | None,
    as_json: bool,
) -> None:
    results = run(ctx, app, sets, lambda remote: each(remote, operation, node))
    if as_json:
        print_json(results)
    else:
        for r in results:
            if r["ok"]:
                out.print(Text(f"node {r['node']}:", style="bold"))
                out.print(Text(json.dumps(r["result"], indent=2, default=str)))
    if node_errors(results):
        raise typer.Exit(EXIT_FAILED)


def config_live(
    ctx: typer.Context,
    app: AppOption = None,
    node: NodeOption = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """The config each running node uses now, every secret masked."""
    _per_node(ctx, "config", app, node, set_, as_json)


def config_reload(
    ctx: typer.Context,
    app: AppOption = None,
    node: NodeOption = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """Make each node re-read its config file and apply it (or roll back); exit 1 if any failed."""
    _per_node(ctx, "config_reload", app, node, set_, as_json)


def config_diff(
    ctx: typer.Context,
    app: AppOption = None,
    node: NodeOption = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """What a reload would change on each node now; nothing is applied."""
    _per_node(ctx, "config_diff", app, node, set_, as_json)


def _app_document(target: str, sets: list[str]) -> dict[str, Any]:
    """The app's HTTP API (its gateway's ``/openapi.json``), built without starting it."""
    from organelle.cli._target import load_app
    from organelle.gateway import Gateway
    from organelle.gateway._openapi import build_openapi
    from organelle.gateway._table import entries_of, remote_classes, table
    from organelle.gateway.config import GatewayConfig

    kernel = load_app(target, sets=sets, only=[]).kernel
    gateways = [i for i in kernel.modules().values() if isinstance(i.instance, Gateway)]
    if not gateways:
        raise ConfigError(f"{target}: no gateway module, so no HTTP API (see docs/gateway.md)")
    cfg: GatewayConfig = gateways[0].instance.config
    local = [type(i.instance) for i in kernel.modules().values()]
    classes = local + [c for c in remote_classes(cfg, gateways[0].name) if c not in local]
    entries = table(entries_of(cls, cfg) for cls in classes)
    stream_path = cfg.stream.path if cfg.stream.enabled else None
    return build_openapi(entries, cfg, stream_path=stream_path)


def openapi(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[TARGET]", help="An app config file: its HTTP API (default: management API)."
        ),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
    set_: Sets = None,
) -> None:
    """Write an OpenAPI 3.1 document: the app's HTTP API (TARGET), or the management API's.

    With TARGET the app is built, not started, and its gateway's routes and
    exposed RPC methods are described (what its ``/openapi.json`` serves);
    without it, the ``/manage`` API of the ops server. Exit code 0 written, 2 bad input.
    """
    from organelle.ops._manage_routes import openapi as manage_document

    what = "the app's HTTP API" if target else "the management API"
    try:
        document = _app_document(target, set_ or []) if target else manage_document()
    except Exception as exc:
        from organelle.cli._output import report

        report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
        raise typer.Exit(EXIT_INVALID) from None
    text = json.dumps(document, indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text)
    except OSError as exc:
        err.print(Text(f"error: cannot write {out_file}: {exc}"))
        raise typer.Exit(EXIT_INVALID) from None
    err.print(Text(f"wrote the OpenAPI document of {what} to {out_file}"))
