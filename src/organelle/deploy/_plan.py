"""From an app config file to what its deployment needs: groups, ports, secrets, timeouts.

The config is read as written — ``secret://`` references stay references, so
rendering needs none of the secrets — and the module classes are imported
(not instantiated) to learn their names, jobs, stream consumers and ports.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from organelle.config import import_object, load_file, parse_settings
from organelle.config.loader import extend_path
from organelle.deploy._options import K8sOptions, NodeGroup, dns_name
from organelle.errors import ConfigError
from organelle.module import Module, describe
from organelle.secrets import is_ref, parse_ref

__all__ = ["AppPlan", "GroupPlan", "ModuleFacts", "plan_app"]

DEFAULT_OPS_PORT = 9000
_GENERIC_STEMS = frozenset({"app", "config", "organelle", "settings"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleFacts:
    """What the deployment needs to know of one module.

    Attributes:
        name: the module's name.
        jobs: its job names (``module.job``), the ``queue`` label of
            ``organelle_job_queue_depth``.
        groups: the consumer groups of its ``@consume`` handlers.
        port: the port it listens on, for a module whose config has ``host``
            and ``port`` (the gateway), else ``None``.
        scales: it is the scaling controller (its pods need API access).
    """

    name: str
    jobs: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    port: int | None = None
    scales: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupPlan:
    """One Deployment: its name, its ``--only`` set and its modules' facts.

    ``controlled``: the app's scaling controller scales it (a target of
    ``[modules.scaling]``), so it gets no HPA or ScaledObject of its own.
    """

    name: str
    only: tuple[str, ...]
    modules: tuple[ModuleFacts, ...]
    controlled: bool = False

    @property
    def scales(self) -> bool:
        """Whether it runs the scaling controller."""
        return any(m.scales for m in self.modules)

    @property
    def jobs(self) -> tuple[str, ...]:
        """Every job name its modules serve."""
        return tuple(j for m in self.modules for j in m.jobs)

    @property
    def consumer_groups(self) -> tuple[str, ...]:
        """Every consumer group its modules are members of."""
        return tuple(dict.fromkeys(g for m in self.modules for g in m.groups))

    @property
    def listeners(self) -> tuple[ModuleFacts, ...]:
        """Its modules that listen on a port of their own."""
        return tuple(m for m in self.modules if m.port is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppPlan:
    """Everything the manifests and the Helm values are rendered from.

    Attributes:
        name: the app's name, prefix of every object.
        options: the options, config section and command line merged.
        config_file: the config file's name in the ConfigMap (``app.toml``).
        config_text: the config file as written.
        groups: one per Deployment.
        secret_env: variable names of the ``secret://env/NAME`` references.
        drain_timeout_s: ``[kernel] drain_timeout_s``.
        hook_timeout_s: ``[kernel] hook_timeout_s``.
        ops_port: the ops server's port in the pod.
        notes: warnings about the app as deployed (a single-process transport
            across several pods, say); rendering goes on.
    """

    name: str
    options: K8sOptions
    config_file: str
    config_text: str
    groups: tuple[GroupPlan, ...]
    secret_env: tuple[str, ...]
    drain_timeout_s: float
    hook_timeout_s: float
    ops_port: int
    notes: tuple[str, ...]

    @property
    def grace_s(self) -> int:
        """``terminationGracePeriodSeconds``: the preStop wait, the drain, then ``on_stop``.

        After SIGTERM the kernel refuses new work, waits up to
        ``drain_timeout_s`` for work in flight and runs the ``on_stop`` hooks
        (each up to ``hook_timeout_s``); the pod is killed only after all that.
        """
        return (
            self.options.pre_stop_s
            + math.ceil(self.drain_timeout_s)
            + math.ceil(self.hook_timeout_s)
            + 5  # exit and flush logs
        )


def plan_app(path: str | Path, options: K8sOptions | None = None, **overrides: Any) -> AppPlan:
    """Read the app config at ``path`` and plan its deployment.

    ``options`` replaces ``[deploy.k8s]``; ``overrides`` (``None`` values
    ignored) are applied on top, as the command line does.

    Raises:
        ConfigError: unreadable config, an unknown module in a group, a bad option.
    """
    file = Path(path)
    config = load_file(file)
    text = file.read_text(encoding="utf-8")
    deploy = config.get("deploy") or {}
    if not isinstance(deploy, dict):
        raise ConfigError("deploy must be a table")
    base = options if options is not None else K8sOptions.from_config(deploy.get("k8s"))
    opts = base.override(**overrides)
    settings = parse_settings(config.get("kernel"))
    if settings.pythonpath:
        extend_path(settings.pythonpath, file.resolve().parent)
    sections = config.get("modules") or {}
    facts = [_facts(ref, i, sections) for i, ref in enumerate(settings.modules)]
    by_name = {f.name: f for f in facts}
    name = dns_name(opts.name or _default_name(file, settings.app), what="app name")
    targets = _scaling_targets(sections) if any(f.scales for f in facts) else set()
    groups = tuple(
        replace(g, controlled=f"{name}-{g.name}" in targets) for g in _groups(opts.groups, by_name)
    )
    notes = list(_notes(settings.transport, settings.storage, groups, opts))
    return AppPlan(
        name=name,
        options=opts,
        config_file="app" + file.suffix,
        config_text=text,
        groups=groups,
        secret_env=tuple(sorted(set(_env_refs(config)))),
        drain_timeout_s=settings.drain_timeout_s,
        hook_timeout_s=settings.hook_timeout_s,
        ops_port=opts.ops_port or settings.ops_port or DEFAULT_OPS_PORT,
        notes=tuple(notes),
    )


def _default_name(file: Path, app: str) -> str:
    if app != "organelle":
        return app
    stem = file.stem
    return file.resolve().parent.name if stem in _GENERIC_STEMS else stem


def _facts(ref: str, index: int, sections: dict[str, Any]) -> ModuleFacts:
    obj = import_object(ref, where=f"kernel.modules[{index}]")
    cls = obj if isinstance(obj, type) else type(obj)
    if not issubclass(cls, Module):
        raise ConfigError(f"kernel.modules[{index}]: {ref} is not a Module")
    spec = describe(cls)
    groups = tuple(dict.fromkeys(c.options.group or spec.name for c in spec.consumers))
    section = sections.get(spec.name) or {}
    from organelle.scaling.module import ScalingController

    return ModuleFacts(
        name=spec.name,
        jobs=tuple(f"{spec.name}.{job}" for job in spec.jobs),
        groups=groups,
        port=_port(cls, section),
        scales=issubclass(cls, ScalingController),
    )


def _scaling_targets(sections: dict[str, Any]) -> set[str]:
    targets = (sections.get("scaling") or {}).get("targets") or []
    return {str(t.get("name")) for t in targets if isinstance(t, dict)}


def _port(cls: type[Module], section: dict[str, Any]) -> int | None:
    fields = getattr(getattr(cls, "Config", None), "model_fields", None)
    if not isinstance(fields, dict) or "host" not in fields or "port" not in fields:
        return None
    port = section.get("port", fields["port"].default)
    return port if isinstance(port, int) and port > 0 else None


def _groups(wanted: tuple[NodeGroup, ...], facts: dict[str, ModuleFacts]) -> tuple[GroupPlan, ...]:
    if not wanted:
        return (GroupPlan(name="app", only=(), modules=tuple(facts.values())),)
    plans = []
    for group in wanted:
        unknown = [m for m in group.modules if m not in facts]
        if unknown:
            raise ConfigError(
                f"group {group.name!r}: no module named {', '.join(map(repr, unknown))} "
                f"in this app (it has {', '.join(facts) or 'none'})"
            )
        plans.append(
            GroupPlan(
                name=group.name, only=group.modules, modules=tuple(facts[m] for m in group.modules)
            )
        )
    return tuple(plans)


def _env_refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _env_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _env_refs(item)
    elif is_ref(value):
        ref = parse_ref(value)
        if ref.provider == "env":
            yield ref.path


def _notes(
    transport: str, storage: str, groups: tuple[GroupPlan, ...], opts: K8sOptions
) -> Iterator[str]:
    many = len(groups) > 1 or opts.max_replicas > 1
    if many and transport.startswith("memory://"):
        yield (
            f"[kernel] transport is {transport!r}: each pod is a cluster of its own, so "
            "pods cannot call or balance across each other; set a nats:// transport"
        )
    if many and storage.startswith("sqlite:"):
        yield (
            "[kernel] storage is SQLite: each pod keeps its own database on an emptyDir; "
            "set a postgresql:// or nats-kv:// storage to share state"
        )
    spread = {m.name for g in groups for m in g.modules}
    if len(groups) > 1 and len(spread) < sum(len(g.modules) for g in groups):
        yield "a module is in more than one group: each of its groups runs it"
