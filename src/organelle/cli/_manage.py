"""``organelle modules|jobs|streams|kv|health --app APP.toml``: manage a running app.

Each command is ``organelle <area> [ACTION [ARGS]]``; the action defaults to
listing. ``--json`` prints what the management API answers, for scripts;
otherwise a table. See ``docs/cli.md`` and ``docs/operations.md``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from organelle.cli._act import each, node_errors, one, print_json, run, table
from organelle.cli._options import Sets
from organelle.cli._output import EXIT_FAILED, err, out
from organelle.cli._remote import AppOption, NodeOption, Remote
from organelle.errors import ConfigError

__all__ = ["health", "jobs", "kv", "modules", "streams"]

Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
Action = Annotated[str, typer.Argument(metavar="ACTION", show_default=True)]
Args = Annotated[list[str] | None, typer.Argument(metavar="ARGS", show_default=False)]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")]


def _usage(message: str) -> ConfigError:
    return ConfigError(message)


def _need(args: list[str], count: int, usage: str) -> list[str]:
    if len(args) != count:
        raise _usage(f"usage: {usage}")
    return args


def _parse(raw: str) -> Any:
    """JSON when it parses (``3``, ``true``, ``{"a": 1}``), else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _show(result: Any, as_json: bool) -> None:
    if as_json or not isinstance(result, dict):
        print_json(result)
        return
    for key, value in result.items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        out.print(Text(f"{key}: {shown}"))


def modules(  # noqa: C901, PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    action: Action = "list",
    args: Args = None,
    app: AppOption = None,
    node: NodeOption = None,
    cascade: Annotated[bool, typer.Option("--cascade", help="unload: dependents first.")] = False,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """List the cluster's modules, or load PATH / unload, restart, reload NAME.

    Actions: list (default), load package.module:Class, unload NAME,
    restart NAME (a fresh instance), reload NAME (re-import its code). An
    action runs on --node, else on every node that has the module (load: every
    node). Exit codes: 0 done, 1 an operation failed, 2 bad input.
    """
    rest = args or []

    async def work(remote: Remote) -> list[dict[str, Any]]:
        if action == "list":
            return await each(remote, "modules", node)
        if action == "load":
            (path,) = _need(rest, 1, "organelle modules load package.module:Class")
            return await each(remote, "load", node, path=path)
        if action not in ("unload", "restart", "reload"):
            raise _usage(f"unknown action {action!r}: list, load, unload, restart, reload")
        (name,) = _need(rest, 1, f"organelle modules {action} NAME")
        params: dict[str, Any] = {"name": name}
        if action == "unload":
            params["cascade"] = cascade
        if node is not None:
            return await each(remote, action, node, **params)
        listed = await each(remote, "modules")
        hosts = [
            r["node"] for r in listed if r["ok"] and any(m["name"] == name for m in r["result"])
        ]
        if not hosts:
            from organelle.errors import NotFoundError

            raise NotFoundError(f"no node runs a module named {name!r}", details={"name": name})
        return [r for h in hosts for r in await each(remote, action, h, **params)]

    results = run(ctx, app, set_, work)
    if as_json:
        print_json(results)
    elif action == "list":
        rows = [
            (m["node"], m["name"], m["version"], m["state"], ", ".join(m["requires"]) or "-")
            for r in results
            if r["ok"]
            for m in r["result"]
        ]
        table(("NODE", "MODULE", "VERSION", "STATE", "REQUIRES"), rows)
    else:
        for r in results:
            if r["ok"]:
                out.print(Text(f"{r['node']}: {action} {_summary(r['result'])}", "green"))
    if node_errors(results):
        raise typer.Exit(EXIT_FAILED)


def _summary(result: Any) -> str:
    if isinstance(result, dict) and "name" in result:
        return f"{result['name']} {result.get('version', '')} {result.get('state', '')}".strip()
    return json.dumps(result, default=str)


def jobs(  # noqa: C901, PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    action: Action = "list",
    args: Args = None,
    app: AppOption = None,
    node: NodeOption = None,
    state: Annotated[str | None, typer.Option("--state", help="list: this state only.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="list: this job name only.")] = None,
    limit: Limit = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """List, show, retry, cancel jobs; purge dead ones; pause or resume job names.

    Actions: list (default; --state, --name, --limit, --offset), show ID,
    retry ID, cancel ID, purge [ID ...] (dead jobs; all when no ID), queues,
    pause [NAME ...], resume [NAME ...] (every node's worker, or --node).
    """
    rest = args or []

    async def work(remote: Remote) -> Any:  # noqa: PLR0911 - one answer per action
        if action == "list":
            return await one(
                remote, "jobs", node, state=state, name=name, limit=limit, offset=offset
            )
        if action in ("show", "retry", "cancel"):
            (job_id,) = _need(rest, 1, f"organelle jobs {action} ID")
            op = {"show": "job", "retry": "job_retry", "cancel": "job_cancel"}[action]
            return await one(remote, op, node, job_id=job_id)
        if action == "purge":
            if rest:
                return await one(remote, "dead_purge", node, job_ids=rest)
            return await _purge_all(remote, node)
        if action in ("pause", "resume", "queues"):
            if remote.offline is not None:
                if action == "queues":
                    return [{"node": "local", "ok": True, "result": await one(remote, "queues")}]
                raise ConfigError(f"{action} acts on running workers: it needs the app's cluster")
            if action == "queues":
                return await each(remote, "queues", node)
            return await each(remote, f"queue_{action}", node, names=rest or None)
        raise _usage(
            f"unknown action {action!r}: list, show, retry, cancel, purge, queues, pause, resume"
        )

    result = run(ctx, app, set_, work)
    if as_json:
        print_json(result)
    elif action == "list":
        table(
            ("ID", "NAME", "STATE", "ATTEMPTS", "LAST ERROR"),
            (
                (
                    j["id"],
                    j["name"],
                    j["state"],
                    f"{j['attempts']}/{j['max_attempts']}",
                    _last_error(j),
                )
                for j in result
            ),
        )
    elif action in ("pause", "resume", "queues"):
        rows = [
            (
                r["node"],
                _backlog(r["result"]),
                ", ".join(r["result"]["paused"]) or "-",
            )
            for r in result
            if r["ok"]
        ]
        table(("NODE", "BACKLOG", "PAUSED"), rows)
        if node_errors(result):
            raise typer.Exit(EXIT_FAILED)
    else:
        _show(result, as_json)


def _backlog(result: dict[str, Any]) -> str:
    backlog = result.get("backlog")
    if backlog is None:
        return "-"
    return ", ".join(f"{name}: {n}" for name, n in sorted(backlog.items())) or "0"


def _last_error(record: dict[str, Any]) -> str:
    errors = record.get("errors") or []
    if not errors:
        return "-"
    last = errors[-1]
    return f"{last['type']}: {last['message']}"[:80]


async def _purge_all(remote: Remote, node: str | None) -> dict[str, Any]:
    """Every dead job, a batch at a time, with a progress line on stderr when it is a terminal."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    total = 0
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # piped: no bar, and no stray blank line either
    ) as progress:
        task = progress.add_task("purging dead jobs: 0", total=None)
        while True:
            batch = await one(remote, "jobs", node, state="dead", limit=500)
            if not batch:
                break
            got = await one(remote, "dead_purge", node, job_ids=[j["id"] for j in batch])
            if not got["purged"]:
                break  # nothing went (retried meanwhile): do not spin
            total += got["purged"]
            progress.update(task, description=f"purging dead jobs: {total}")
    return {"purged": total}


def streams(  # noqa: C901, PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    action: Action = "list",
    args: Args = None,
    app: AppOption = None,
    node: NodeOption = None,
    group: Annotated[str | None, typer.Option("--group", help="seek, dead: the group.")] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="seek: earliest, latest or an offset.")
    ] = None,
    limit: Limit = 100,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait", metavar="SECONDS", help="seek: show the replay until the group catches up."
        ),
    ] = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """Streams: list, info STREAM, seek STREAM --group G --to X [--wait S], dead STREAM --group G.

    ``seek --to earliest`` replays the stream to the group (``latest`` skips
    what is pending); with ``--wait`` a progress bar follows the group until
    its lag is 0, for at most that many seconds (exit 1 if it is not).
    """
    rest = args or []

    async def work(remote: Remote) -> Any:
        if action == "list":
            if remote.offline is not None:
                raise ConfigError("listing streams needs the app's cluster; name one: info STREAM")
            return await each(remote, "streams", node)
        if action not in ("info", "seek", "dead"):
            raise _usage(f"unknown action {action!r}: list, info, seek, dead")
        (stream,) = _need(rest, 1, f"organelle streams {action} STREAM")
        if action == "info":
            return await one(remote, "stream", node, stream=stream)
        if not group:
            raise _usage(f"organelle streams {action}: --group is required")
        if action == "dead":
            return await one(remote, "stream_dead", node, stream=stream, group=group, limit=limit)
        if to is None:
            raise _usage("organelle streams seek: --to earliest|latest|OFFSET is required")
        target: Any = int(to) if to.isdigit() else to
        moved = await one(remote, "stream_seek", node, stream=stream, group=group, to=target)
        if wait is None:
            return moved
        return await _follow(remote, node, stream, group, moved, wait)

    result = run(ctx, app, set_, work)
    if as_json or action == "dead":
        print_json(result)
    elif action == "list":
        table(
            ("NODE", "STREAMS"),
            ((r["node"], ", ".join(r["result"]) or "-") for r in result if r["ok"]),
        )
    else:
        out.print(Text(f"stream {result['name']}: {result['spec']['partitions']} partition(s)"))
        table(
            ("GROUP", "PARTITION", "NEXT", "LAG", "OWNER"),
            (
                (g["group"], g["partition"], g["next_offset"], g["lag"], g["owner"])
                for g in result["groups"]
            ),
        )


def _lag(info: dict[str, Any], group: str) -> int:
    return sum(g["lag"] for g in info["groups"] if g["group"] == group)


async def _follow(  # noqa: PLR0917 - the seek's parts
    remote: Remote, node: str | None, stream: str, group: str, info: dict[str, Any], wait_s: float
) -> dict[str, Any]:
    """Poll the group's lag after a seek until it is 0, with a progress bar on a terminal."""
    import asyncio
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from organelle.errors import CallTimeoutError

    total = _lag(info, group)
    deadline = time.monotonic() + wait_s
    with Progress(
        TextColumn(f"replaying {stream} to {group}"), BarColumn(), MofNCompleteColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task("replay", total=total or 1)
        while (lag := _lag(info, group)) > 0:
            progress.update(task, completed=max(0, total - lag))
            if time.monotonic() >= deadline:
                raise CallTimeoutError(
                    f"group {group!r} still {lag} behind on {stream!r} after {wait_s:g}s",
                    details={"lag": lag},
                )
            await asyncio.sleep(0.2)  # polling a remote position: nothing to wait on
            info = await one(remote, "stream", node, stream=stream)
        progress.update(task, completed=total or 1)
    return info


def kv(  # noqa: PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    action: Action = "scan",
    args: Args = None,
    app: AppOption = None,
    node: NodeOption = None,
    prefix: Annotated[str, typer.Option("--prefix", help="scan: keys under it.")] = "",
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="scan: from the previous page.")
    ] = None,
    ttl_s: Annotated[float | None, typer.Option("--ttl", help="put: expire after seconds.")] = None,
    limit: Limit = 100,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """The app's Store: scan (default), get KEY, put KEY VALUE, delete KEY.

    VALUE is JSON when it parses, else a string. Keys are the Store's own:
    a module's keys are under its name (``inventory/…``).
    """
    rest = args or []

    async def work(remote: Remote) -> Any:
        if action == "scan":
            return await one(remote, "kv_scan", node, prefix=prefix, limit=limit, cursor=cursor)
        if action == "get":
            (key,) = _need(rest, 1, "organelle kv get KEY")
            return await one(remote, "kv_get", node, key=key)
        if action == "put":
            key, raw = _need(rest, 2, "organelle kv put KEY VALUE")
            return await one(remote, "kv_put", node, key=key, value=_parse(raw), ttl_s=ttl_s)
        if action == "delete":
            (key,) = _need(rest, 1, "organelle kv delete KEY")
            return await one(remote, "kv_delete", node, key=key)
        raise _usage(f"unknown action {action!r}: scan, get, put, delete")

    result = run(ctx, app, set_, work)
    if as_json or action == "get":
        print_json(result["value"] if action == "get" and not as_json else result)
    elif action == "scan":
        table(
            ("KEY", "VALUE", "REVISION"),
            (
                (i["key"], json.dumps(i["value"], default=str)[:80], i["revision"])
                for i in result["items"]
            ),
        )
        if result["cursor"]:
            err.print(Text(f"more: --cursor {result['cursor']}"))
    else:
        _show(result, as_json)


def health(
    ctx: typer.Context,
    app: AppOption = None,
    node: NodeOption = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """Each node's readiness and checks. Exit code 0 when every node is ready, else 1."""
    results = run(ctx, app, set_, lambda remote: each(remote, "health", node))
    if as_json:
        print_json(results)
    else:
        rows = [
            (r["node"], name, check["status"], check.get("detail") or "-")
            for r in results
            if r["ok"]
            for name, check in sorted(r["result"]["checks"].items())
        ]
        for r in results:
            if r["ok"]:
                state = "ready" if r["result"]["ready"] else f"NOT ready: {r['result']['reason']}"
                out.print(Text(f"{r['node']}: {r['result']['status']}, {state}"))
        table(("NODE", "CHECK", "STATUS", "DETAIL"), rows)
    bad = node_errors(results) + sum(1 for r in results if r["ok"] and not r["result"]["ready"])
    if bad:
        raise typer.Exit(EXIT_FAILED)
