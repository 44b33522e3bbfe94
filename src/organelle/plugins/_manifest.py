"""What a plugin module declares: the kernels it runs on and what it may use.

Patterns follow the topic rules (``module/_topics.py``): tokens split on
dots, ``*`` matches one token, ``>`` one or more trailing ones. So
``"pricing.*"`` admits every method of ``pricing`` and ``"order.>"`` every
topic under ``order``. A module may always call its own methods, enqueue its
own jobs and use its own Store namespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from organelle._version import __version__
from organelle.errors import PluginError, PluginIncompatibleError
from organelle.module._topics import matches, pattern_error

__all__ = ["KINDS", "Manifest", "Permit", "covers", "manifest_of"]

KINDS = ("rpc", "emit", "subscribe", "jobs", "streams", "storage")
_CACHE_MAX = 4096  # distinct allowed names remembered per rule; the rest are matched each time


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A plugin's declaration, set as the ``manifest`` attribute of its module class.

    Args:
        kernel: the organelle versions it supports, a PEP 440 specifier
            (``">=0.1,<1"``); the kernel refuses to load it outside them.
        rpc: ``"<module>.<method>"`` patterns it may call.
        emit: topics it may emit (directly or through a transaction).
        subscribe: topics its ``@on`` handlers may listen to (checked at load).
        jobs: ``"<module>.<job>"`` patterns it may enqueue.
        streams: streams it may append to or ``@consume``.
        storage: Store namespaces it may open beside its own (``"*"``: all,
            and the shared Store itself).

    Example::

        class Pricing(Module):
            name = "pricing"
            manifest = Manifest(kernel=">=0.1,<1", rpc=("inventory.reserve",),
                                emit=("pricing.>",), subscribe=("order.*",))
    """

    kernel: str = ""
    rpc: tuple[str, ...] = ()
    emit: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    storage: tuple[str, ...] = ()
    _spec: SpecifierSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            spec = SpecifierSet(self.kernel)
        except InvalidSpecifier:
            raise PluginError(
                f"manifest: kernel={self.kernel!r} is not a version range like '>=0.1,<1'"
            ) from None
        object.__setattr__(self, "_spec", spec)
        for kind in KINDS:
            value = getattr(self, kind)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise PluginError(f"manifest: {kind} must be a tuple of patterns, not {value!r}")
            patterns = tuple(value)
            for pattern in patterns:
                reason = pattern_error(pattern)
                if reason is not None:
                    raise PluginError(f"manifest: {kind}: {reason}")
            object.__setattr__(self, kind, patterns)

    def supports(self, version: str = __version__) -> bool:
        """Whether ``version`` of organelle lies in the declared range (pre-releases too)."""
        return self._spec.contains(Version(version), prereleases=True)

    def check_kernel(self, owner: str, version: str = __version__) -> None:
        """Raise ``PluginIncompatibleError`` unless ``version`` is in range."""
        if not self.supports(version):
            raise PluginIncompatibleError(
                f"plugin module {owner!r} supports organelle {self.kernel or 'any'}, not {version}",
                details={"module": owner, "kernel": self.kernel, "version": version},
            )

    def rule(self, kind: str, own: str | None = None) -> Permit:
        """The matcher of one kind; ``own`` (the module's name) is always allowed."""
        patterns: tuple[str, ...] = getattr(self, kind)
        if own is not None and kind in ("rpc", "jobs"):
            patterns = (*patterns, f"{own}.*")
        elif own is not None and kind == "storage":
            patterns = (*patterns, own)
        return Permit(kind, patterns)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for listings (``organelle plugins --json``)."""
        return {"kernel": self.kernel, **{kind: list(getattr(self, kind)) for kind in KINDS}}


class Permit:
    """Patterns of one kind, with the names already allowed remembered (a set lookup)."""

    __slots__ = ("allowed", "kind", "patterns")

    def __init__(self, kind: str, patterns: tuple[str, ...]) -> None:
        self.kind = kind
        self.patterns = patterns
        self.allowed: set[str] = set()

    def admits(self, name: str) -> bool:
        """Whether a concrete ``name`` matches a pattern (remembered when it does)."""
        if name in self.allowed:
            return True
        if any(matches(p, name) for p in self.patterns):
            if len(self.allowed) < _CACHE_MAX:
                self.allowed.add(name)
            return True
        return False

    def covers(self, pattern: str) -> bool:
        """Whether a subscription ``pattern`` (wildcards and all) stays inside the patterns."""
        return any(covers(p, pattern) for p in self.patterns)


def covers(outer: str, inner: str) -> bool:
    """Whether every topic ``inner`` matches is matched by ``outer`` too."""
    o_tokens = outer.split(".")
    i_tokens = inner.split(".")
    for i, o in enumerate(o_tokens):
        if o == ">":
            return len(i_tokens) > i
        if i >= len(i_tokens):
            return False
        token = i_tokens[i]
        if token == ">" or (o != "*" and (token == "*" or o != token)):  # noqa: S105 - wildcards
            return False
    return len(o_tokens) == len(i_tokens)


def manifest_of(cls: type) -> Manifest | None:
    """The ``manifest`` a module class declares, or ``None``.

    Raises:
        PluginError: ``manifest`` is set to something other than a ``Manifest``.
    """
    found = getattr(cls, "manifest", None)
    if found is None or isinstance(found, Manifest):
        return found
    raise PluginError(
        f"{cls.__qualname__}.manifest must be an organelle.plugins.Manifest, "
        f"not {type(found).__name__}"
    )
