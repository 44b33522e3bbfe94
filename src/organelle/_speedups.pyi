from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any

SOURCE_HASH: str

class ContextBase:
    seq: int | str
    deadline: float | None
    corr: int | str | None
    cause: int | str | None
    principal: Any
    meta: dict[str, Any]
    topic: str | None
    def __init__(
        self,
        seq: int | str,
        deadline: float | None = None,
        corr: int | str | None = None,
        cause: int | str | None = None,
        principal: Any = None,
        meta: dict[str, Any] | None = None,
        topic: str | None = None,
    ) -> None: ...

class Finished:
    def send(self, value: Any, /) -> Any: ...
    def throw(self, typ: Any, val: Any = ..., tb: Any = ..., /) -> Any: ...
    def close(self) -> None: ...
    def __await__(self) -> Any: ...

class RouteBase:
    def __init__(self) -> None: ...
    fn: Any
    contract: Any
    exact: Any
    stats: Any
    checks: tuple[tuple[str, type | None, bool, bool], ...] | None
    target: str
    nrequired: int
    slow: bool
    policy: Any
    inline_policy: bool

class StatsBase:
    def __init__(self) -> None: ...
    calls: int

class Caller:
    enabled: bool
    timeout: float
    emit_enabled: bool
    max_pending: int
    def __init__(
        self,
        routes: dict[str, Any],
        var: ContextVar[Any],
        ctx_type: type[ContextBase],
        counter: Any,
        empty_meta: dict[str, Any],
        fallback: Callable[..., Any],
        resume: Callable[..., Any],
        failed: Callable[..., BaseException],
        timeout: float,
    ) -> None: ...
    def call(self, target: str, /, **params: Any) -> Any: ...
    def emit(
        self, topic: str, payload: Any = None, *, meta: dict[str, Any] | None = None
    ) -> Any: ...
    def deliver(
        self, subs: tuple[Any, ...], payload: Any, ctx: Any, /
    ) -> list[tuple[Any, ...]] | None: ...
    def bind_events(
        self,
        emit_fallback: Callable[..., Any],
        topics: dict[str, Any],
        queue: Any,
        wake: list[Any],
        max_pending: int,
        listeners: list[Any],
        emitted: Callable[[str, Any], None],
        /,
    ) -> None: ...

class BreakerCore:
    state: str
    consecutive: int
    @property
    def seen(self) -> int: ...
    @property
    def bad(self) -> int: ...
    @property
    def window(self) -> int: ...
    def __init__(self, window: int) -> None: ...
    def push(self, ok: bool, /) -> None: ...
    def forget(self) -> None: ...

class BulkheadCore:
    active: int
    limit: int
    waiters: Any

class GuardCore:
    breaker: Any
    bulkhead: Any
    timeout: float
    fast: bool

class ClientCall:
    target: str
    __dict__: dict[str, Any]
    def __init__(
        self,
        call: Callable[..., Any],
        target: str,
        names: tuple[str, ...],
        positional: tuple[int, ...],
        nrequired: int,
        unset: Any,
        fallback: Callable[..., Any],
        finish: Callable[[Any], Any] | None,
        hint: type | None,
        subclasses: bool,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

class ClientBase:
    __dict__: dict[str, Any]

def header_lines(block: bytes, start: int, /) -> dict[str, str]: ...
def uuid7() -> str: ...
def utc_now() -> datetime: ...
def utc_text(when: datetime, /) -> str: ...
def v5_text(digest: bytes, /) -> str: ...
