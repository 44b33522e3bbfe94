"""Running one management operation from the CLI: which node, how errors print, JSON or tables.

Operations on state the cluster shares — jobs, streams, KV — go to one node
(``--node``, else the first that answers); operations on what each node has —
its modules, config, worker, health — go to every node (or ``--node``), and
each node's answer or error is shown apart.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from organelle.cli._output import EXIT_FAILED, EXIT_INVALID, err, out
from organelle.cli._remote import Remote, connect
from organelle.errors import ConfigError, OrganelleError

__all__ = ["each", "fail", "one", "print_json", "run", "table"]

T = TypeVar("T")


def fail(exc: BaseException, *, traceback: bool = False) -> NoReturn:
    """Print a typed error as ``error: <code>: <message>`` (fields listed) and exit 1 or 2."""
    if traceback:
        import traceback as tb

        err.print(Text("".join(tb.format_exception(exc)).rstrip()))
    if isinstance(exc, OrganelleError):
        line = f"error: {exc.code}: {exc.message}"
        fields = exc.details.get("errors") if isinstance(exc.details, dict) else None
        if isinstance(fields, list) and fields and exc.message.count(":") < 2:  # noqa: PLR2004
            line += " (" + "; ".join(_field(f) for f in fields) + ")"
        if exc.node:
            line += f" [node {exc.node}]"
        err.print(Text(line))
        raise typer.Exit(EXIT_INVALID if isinstance(exc, ConfigError) else EXIT_FAILED)
    err.print(Text(f"error: {type(exc).__name__}: {exc} (run with --traceback to see where)"))
    raise typer.Exit(EXIT_FAILED)


def _field(item: Any) -> str:
    if isinstance(item, dict):
        return f"{item.get('field', '?')}: {item.get('message', '')}"
    return str(item)


def run(
    ctx: typer.Context,
    app: str | None,
    sets: list[str] | None,
    work: Callable[[Remote], Awaitable[T]],
    *,
    timeout_s: float = 10.0,
) -> T:
    """Connect to the app, run ``work``, disconnect; a failure prints and exits."""

    async def go() -> T:
        async with connect(app, sets or [], timeout_s=timeout_s) as remote:
            return await work(remote)

    try:
        return asyncio.run(go())
    except Exception as exc:
        fail(exc, traceback=bool(getattr(ctx.obj, "traceback", False)))


async def one(remote: Remote, operation: str, node: str | None = None, **params: Any) -> Any:
    """Run ``operation`` on one node (``node``, else the first), or on the app's files."""
    if remote.offline is not None:
        if node is not None:
            raise ConfigError("--node needs the app's cluster (kernel.transport=nats://…)")
        return await remote.offline.run(operation, params)
    _, cluster = remote.need_cluster(operation)
    if node is None:
        node = (await cluster.wait())[0]
    return await cluster.call(node, operation, **params)


async def each(
    remote: Remote, operation: str, node: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Run ``operation`` on every node (or ``node``): ``{"node", "ok", "result"|"error"}`` each."""
    _, cluster = remote.need_cluster(operation)
    if node is not None:
        return [{"node": node, "ok": True, "result": await cluster.call(node, operation, **params)}]
    await cluster.wait()
    return await cluster.each(operation, **params)


def node_errors(results: Iterable[dict[str, Any]]) -> int:
    """Print each node's error on stderr; return how many nodes failed."""
    failed = 0
    for r in results:
        if not r["ok"]:
            failed += 1
            e = r["error"]
            err.print(Text(f"error: node {r['node']}: {e['code']}: {e['message']}"))
    return failed


def _plain(value: Any) -> Any:
    """Bytes as base64, as the wire and the HTTP API carry them (a dead letter's data)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    return str(value)


def print_json(value: Any) -> None:
    """JSON on stdout, for scripts: the same answer through the cluster or the app's files."""
    out.print(Text(json.dumps(value, indent=2, default=_plain)))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str = "") -> None:
    """A rich table for people."""
    grid = Table(*columns, title=title or None, title_justify="left", header_style="bold")
    for row in rows:
        grid.add_row(*(Text("-" if v is None else str(v)) for v in row))
    # piped (not a terminal): as wide as the rows need, so an id is never cut for grep
    console = out if out.is_terminal else Console(width=1000, highlight=False)
    console.print(grid)
