"""Typed clients: ``self.client(Pricing)`` calls a module by its methods' own signatures.

Statically the client *is* the class it was made from, so mypy checks each
call against the method's parameters and return type. At run time it is a
small object whose attributes call ``"<module>.<method>"`` through the
kernel's ``call``.

Each method is generated once per class (cached), with the method's own
parameters: Python itself binds positional arguments and rejects unknown
ones, as the real method would, and a parameter the caller left out is not
sent, so the serving module applies its own default. The result is converted
to the declared return type only when it is not one already: a local call
hands back the handler's object untouched (one ``isinstance``), while over
the wire a ``list[Quote]``, a dict from a foreign server or a tuple that
became a list is rebuilt. Return types the wire keeps as they are (``int``,
``str``, ``list[float]``, ``dict[str, Any]``…) cost nothing: the method then
returns the kernel call's awaitable itself.

With the C extension (``organelle._speedups``) each method is a
``ClientCall`` instead: it binds the arguments and makes the call in C, and
returns a finished local call whose value already is the declared class as it
is; a binding error, a pending call or a result to convert goes to the
generated Python method or its finisher, so both paths behave alike.
"""

from __future__ import annotations

import inspect
import types
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, get_args, get_origin

import msgspec

from organelle._native import speedups
from organelle.codec import _dec_hook
from organelle.errors import DefinitionError, ValidationError
from organelle.module._base import Module
from organelle.module._describe import describe

__all__ = ["TypedClient", "client_of"]

T = TypeVar("T")
Call = Callable[..., Any]

_EMPTY = inspect.Parameter.empty
_UNSET: Any = type("_Unset", (), {"__repr__": lambda _self: "<not given>"})()
_PREFIX = "__organelle_"  # of the generated code's own names; no parameter may start with it
_UNIONS = (typing.Union, types.UnionType)
# What JSON and MessagePack give back as they were sent: no conversion needed.
_WIRE_SAFE = (int, float, str, bool, type(None))


@dataclass(frozen=True, slots=True)
class _ClientMethod:
    attr: str
    target: str
    make: Callable[[Call, bool], Callable[..., Any]]  # the method, given the call (and pure)


@dataclass(frozen=True, slots=True)
class _ClientPlan:
    owner: str  # the class's name, for messages
    module: str
    methods: tuple[_ClientMethod, ...]


_PLANS: weakref.WeakKeyDictionary[type, dict[str, _ClientPlan]] = weakref.WeakKeyDictionary()


# With the extension, TypedClient finds its methods in its dict before anything
# else and calls _organelle_missing for an unknown name (a __getattr__ would put a
# slow hook in front of every method lookup); without it, a __getattr__ does that.
_ClientBase: type = object if speedups is None else speedups.ClientBase


class TypedClient(_ClientBase):  # type: ignore[misc]
    """A typed client's run-time shape: one attribute per RPC method, nothing else."""

    def __init__(self, plan: _ClientPlan, call: Call, *, pure: bool = False) -> None:
        self.__dict__["_organelle_plan"] = plan
        for method in plan.methods:
            self.__dict__[method.attr] = method.make(call, pure)

    def _organelle_missing(self, name: str) -> Any:
        plan: _ClientPlan = self.__dict__["_organelle_plan"]
        known = ", ".join(m.attr for m in plan.methods)
        raise AttributeError(
            f"{plan.owner} client: {name!r} is not an RPC method of module {plan.module!r}; "
            f"a client only calls its RPC methods ({known})",
            name=name,
            obj=self,
        )

    if speedups is None:
        __getattr__ = _organelle_missing

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a client is read-only (setting {name!r})")

    def __repr__(self) -> str:
        plan: _ClientPlan = self.__dict__["_organelle_plan"]
        return f"<client of module {plan.module!r} ({plan.owner})>"


def client_of(
    cls: Callable[..., T], call: Call, module: str | None = None, *, pure: bool = False
) -> T:
    """A client of ``cls`` (a ``Module`` class or a Protocol) whose methods go through ``call``.

    ``pure``: the generated Python methods even when the C extension is in use
    (the tests compare the two).

    Raises:
        DefinitionError: ``cls`` is neither, names no module, or has a method
            a client cannot call (see ``docs/guide.md``, "Typed clients").
    """
    if not isinstance(cls, type):
        raise DefinitionError(f"client({cls!r}): expected a Module class or a Protocol class")
    by_module = _PLANS.get(cls)
    if by_module is None:
        by_module = _PLANS[cls] = {}
    key = module or ""
    plan = by_module.get(key)
    if plan is None:
        plan = by_module[key] = _plan(cls, module)
    return typing.cast("T", TypedClient(plan, call, pure=pure))


def _plan(cls: type, module: str | None) -> _ClientPlan:
    owner = cls.__qualname__
    if module is not None and not (isinstance(module, str) and module):
        raise DefinitionError(f"client({owner}): module must be a non-empty string")
    found: list[tuple[str, str, Callable[..., Any]]] = []  # (attr, method name, function)
    if issubclass(cls, Module):
        spec = describe(cls)
        name = module or spec.name
        found.extend((m.attr, method, getattr(cls, m.attr)) for method, m in spec.rpcs.items())
    else:
        named = module or getattr(cls, "name", None)
        if not (isinstance(named, str) and named):
            raise DefinitionError(
                f"client({owner}): no module name; give the class a `name` attribute "
                'or pass module="<name>"'
            )
        name = named
        found.extend(_protocol_methods(cls, owner))
    if not found:
        raise DefinitionError(f"client({owner}): {owner} has no RPC methods to call")
    methods = tuple(
        _ClientMethod(attr, f"{name}.{method}", _generate(f"{name}.{method}", owner, attr, fn))
        for attr, method, fn in sorted(found)
    )
    return _ClientPlan(owner, name, methods)


def _protocol_methods(cls: type, owner: str) -> list[tuple[str, str, Callable[..., Any]]]:
    """The public ``async def`` methods of a Protocol (or plain class) and its bases."""
    found: dict[str, tuple[str, str, Callable[..., Any]]] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, Protocol, typing.Generic):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_"):
                continue
            if inspect.iscoroutinefunction(value):
                options = getattr(value, "__organelle_rpc__", None)
                method = getattr(options, "name", None) or attr
                found[attr] = (attr, method, value)
            elif inspect.isfunction(value):
                raise DefinitionError(
                    f"client({owner}): {attr} must be an 'async def' method (RPC calls are awaited)"
                )
    return list(found.values())


def _generate(
    target: str, owner: str, attr: str, fn: Callable[..., Any]
) -> Callable[[Call, bool], Any]:
    """Source of the method, compiled once: its parameters, the call, and the result check."""
    try:
        returns = typing.get_type_hints(fn, include_extras=True).get("return", Any)
    except Exception as exc:
        raise DefinitionError(f"{owner}.{attr}: cannot resolve type hints: {exc}") from exc
    signature, body, request, layout = _call_source(owner, attr, fn)
    # The call starts here, as kernel.call does; only the conversion waits for the await.
    finish = None if _wire_safe(returns) else _converter(target, returns)
    body.append(f"return {request}" if finish is None else f"return {_PREFIX}finish({request})")
    source = "\n".join(
        [
            f"def {_PREFIX}make({_PREFIX}call):",
            f"    def {attr}({', '.join(signature)}):",
            *(f"        {line}" for line in body),
            f"    return {attr}",
        ]
    )
    namespace: dict[str, Any] = {
        f"{_PREFIX}target": target,
        f"{_PREFIX}unset": _UNSET,
        f"{_PREFIX}finish": finish,
    }
    exec(source, namespace)  # noqa: S102 - built above from identifiers and reprs only
    make = namespace[f"{_PREFIX}make"]
    qualname = f"{owner}.{attr}"
    # For ClientCall: a class result is checked in C (only a plain subtype test
    # when its metaclass keeps type's isinstance), anything else by `finish`.
    hint = returns if finish is not None and _is_class(returns) else None
    checker: object = type(hint).__instancecheck__
    subclasses = hint is not None and checker is type.__instancecheck__
    shown: dict[str, Any] = {}  # what a ClientCall shows of the Python method

    def made(call: Call, pure: bool) -> Callable[..., Any]:
        method = make(call)
        method.__qualname__ = qualname
        method.__doc__ = fn.__doc__
        if speedups is None or pure:
            return method  # type: ignore[no-any-return]
        bound: Callable[..., Any] = speedups.ClientCall(
            call, target, *layout, _UNSET, method, finish, hint, subclasses
        )
        if not shown:
            shown.update(
                __name__=attr,
                __qualname__=qualname,
                __doc__=fn.__doc__,
                __module__=method.__module__,
                __signature__=inspect.signature(method),
            )
        bound.__dict__.update(shown)
        return bound

    return made


def _call_source(
    owner: str, attr: str, fn: Callable[..., Any]
) -> tuple[list[str], list[str], str, tuple[tuple[str, ...], tuple[int, ...], int]]:
    """The method's parameters, the lines gathering what was given, the call, and its layout.

    The layout is what ClientCall binds by: the names in the order they are
    sent (required, then optional), each positional parameter's place among
    them, and how many are required.

    A parameter with a default is sent only when given, so the serving module
    applies its own default (which may differ on another version).
    """
    params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
    signature: list[str] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise DefinitionError(
                f"{owner}.{attr}: RPC parameters are named; {p.name!r} cannot be sent by name"
            )
        if p.name.startswith(_PREFIX):
            raise DefinitionError(f"{owner}.{attr}: parameter names may not start with {_PREFIX}")
        if p.kind is p.KEYWORD_ONLY and "*" not in signature:
            signature.append("*")
        signature.append(p.name if p.default is _EMPTY else f"{p.name}={_PREFIX}unset")
    required = [p.name for p in params if p.default is _EMPTY]
    optional = [p.name for p in params if p.default is not _EMPTY]
    body: list[str] = []
    if optional:
        body.append(f"{_PREFIX}params = {{{', '.join(f'{n!r}: {n}' for n in required)}}}")
        body.extend(f"if {n} is not {_PREFIX}unset: {_PREFIX}params[{n!r}] = {n}" for n in optional)
        sent = f"**{_PREFIX}params"
    else:
        sent = ", ".join(f"{n}={n}" for n in required)
    names = (*required, *optional)
    positional = tuple(names.index(p.name) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    layout = (names, positional, len(required))
    return signature, body, f"{_PREFIX}call({_PREFIX}target{', ' if sent else ''}{sent})", layout


def _wire_safe(hint: Any) -> bool:
    """Whether every codec gives ``hint`` back as it was sent (so nothing is converted)."""
    if hint is Any or hint is object or hint is None or hint in _WIRE_SAFE:
        return True
    origin, args = get_origin(hint), get_args(hint)
    if origin in _UNIONS:
        return all(_wire_safe(a) for a in args)
    if origin is list or hint is list:
        return all(_wire_safe(a) for a in args)
    if origin is dict or hint is dict:
        return not args or (args[0] is str and _wire_safe(args[1]))
    return False


def _converter(target: str, hint: Any) -> Callable[[Any], Any]:
    """Return what awaits a call and gives its result as ``hint``, converting only if needed."""
    try:
        msgspec.inspect.type_info(hint)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{target}: results cannot be converted to {hint!r}: {exc}") from exc

    def convert(value: Any) -> Any:
        try:
            return msgspec.convert(
                value, hint, dec_hook=_dec_hook, from_attributes=True, strict=False
            )
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            message = str(exc)
            raise ValidationError(
                f"the result of {target} is not a {_name(hint)}: {message}",
                errors=[{"field": "$result", "message": message}],
            ) from None

    if _is_class(hint):  # a class: one isinstance

        async def finish_class(pending: Any) -> Any:
            result = await pending
            return result if isinstance(result, hint) else convert(result)

        return finish_class
    check = _checker(hint)

    async def finish(pending: Any) -> Any:
        result = await pending
        return result if check is not None and check(result) else convert(result)

    return finish


def _is_class(hint: Any) -> bool:
    return isinstance(hint, type) and get_origin(hint) is None


def _checker(hint: Any) -> Callable[[Any], bool] | None:  # noqa: PLR0911 - one case per shape
    """A test that a value already is ``hint`` (items included), or None to always convert."""
    if hint is Any or hint is object:
        return lambda _v: True
    if hint is None or hint is type(None):
        return lambda v: v is None
    origin, args = get_origin(hint), get_args(hint)
    if origin is None:
        return (lambda v: isinstance(v, hint)) if isinstance(hint, type) else None
    parts = [_checker(a) for a in args]
    if any(p is None for p in parts):
        return None
    checks = typing.cast("list[Callable[[Any], bool]]", parts)
    if origin in _UNIONS:
        return lambda v: any(c(v) for c in checks)
    if origin in (list, set, frozenset) and len(checks) == 1:
        item = checks[0]
        return lambda v: isinstance(v, origin) and all(item(x) for x in v)
    if origin is dict and len(checks) == 2:  # noqa: PLR2004 - dict[K, V]
        key, value = checks
        return lambda v: isinstance(v, dict) and all(key(k) and value(x) for k, x in v.items())
    if origin is tuple:  # tuple[X, ...] has no checker (Ellipsis): always converted
        return lambda v: (
            isinstance(v, tuple) and len(v) == len(checks) and all(map(_call, checks, v))
        )
    return None


def _call(check: Callable[[Any], bool], value: Any) -> bool:
    return check(value)


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) and get_origin(hint) is None else repr(hint)
