"""Call policies as data: timeout, retry, circuit breaker, bulkhead, rate limit, fallback.

A policy is plain data, declared on the callee (``@rpc(policy=...)``) and
overridden in config, so an operator changes how calls behave without
touching code and a reload applies it::

    [policies.default]                      # every call
    timeout_s = 5

    [policies."pricing"]                    # every method of pricing
    breaker = { failures = 5, reset_s = 10 }

    [policies."orders -> pricing.quote"]    # quote, when orders calls it
    retry = { attempts = 3, backoff_s = 0.02 }
    bulkhead = { max_concurrent = 50, max_queue = 100 }
    fallback_value = { price = 0 }

Layers, weakest first: ``default``, the callee's ``@rpc(policy=)``,
``"<module>"``, ``"<module>.<method>"``, ``"<caller> -> <module>"``,
``"<caller> -> <module>.<method>"``. A layer replaces only the parts it names
(``retry``, ``breaker``… whole, ``timeout_s`` and the fallback fields one by
one); ``retry = false`` (or ``breaker = false``…) switches off a part a
weaker layer set. The kernel's runtime side is ``kernel/_policy.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from organelle.errors import ConfigError

__all__ = [
    "DEFAULT_FALLBACK_ON",
    "BreakerPolicy",
    "BulkheadPolicy",
    "CallRetryPolicy",
    "Policy",
    "PolicyTable",
    "RateLimitPolicy",
    "layer_key",
    "parse_policies",
    "parse_policy",
]

# Errors after which a fallback answers instead: the callee could not be
# reached or did not answer in time — not a validation or permission error.
DEFAULT_FALLBACK_ON = (
    "organelle.unavailable",
    "organelle.timeout",
    "organelle.circuit_open",
    "organelle.bulkhead_full",
    "organelle.rate_limited",
    "organelle.not_found",
)
_KEY = re.compile(
    r"^(?:(?P<caller>[A-Za-z_][\w-]*|\*)\s*->\s*)?(?P<target>[A-Za-z_][\w-]*(?:\.\w+)?|\*)$"
)


class _Part(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class CallRetryPolicy(_Part, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries with exponential backoff and full jitter, within a retry budget.

    A call is retried only when a retry cannot do harm: the method is declared
    ``@rpc(idempotent=True)``, or the error says the call never ran (no node
    served it, a breaker or bulkhead refused it, a draining node turned it
    away). Retries never outlive the caller's deadline.

    Attributes:
        attempts: tries in all, the first included.
        backoff_s: the pause before the first retry; doubles each time.
        max_backoff_s: the longest pause.
        attempt_timeout_s: the longest one try may take (a slow node's try is
            cut and retried), within the call's own deadline.
        budget: retries are at most this share of the calls of the last
            ``budget_window_s`` (plus ``min_per_s``), so a failing callee gets
            a bounded extra load, not a multiple of it.
        budget_window_s: the window the budget counts over.
        min_per_s: retries always allowed per second of the window.
    """

    attempts: int = 3
    backoff_s: float = 0.01
    max_backoff_s: float = 1.0
    attempt_timeout_s: float | None = None
    budget: float = 0.2
    budget_window_s: float = 10.0
    min_per_s: float = 10.0

    def __post_init__(self) -> None:
        _positive(self, "backoff_s", "max_backoff_s", "budget_window_s")
        if self.attempts < 1:
            raise ValueError("retry.attempts must be >= 1")
        if self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0:
            raise ValueError("retry.attempt_timeout_s must be > 0")
        if self.budget < 0 or self.min_per_s < 0:
            raise ValueError("retry.budget and retry.min_per_s must be >= 0")


class BreakerPolicy(_Part, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A circuit breaker: closed, open after failures, half-open after ``reset_s``.

    It opens after ``failures`` failures in a row, or when at least
    ``min_calls`` of the last ``window`` calls were made and ``failure_ratio``
    of them failed. Open, it refuses calls at once (``organelle.circuit_open``)
    for ``reset_s``; then ``probes`` trial calls go through, and as many
    successes close it, one failure opens it again. A failure is a call that
    got no answer (timeout, unavailable) or an internal error; an answer such
    as a validation error is a success for the breaker.

    Attributes:
        scope: ``"method"`` (a breaker per target) or ``"module"`` (one for all
            of the callee module's methods).
        per_node: remotely, one breaker per serving node as well, so one bad
            node is left out while the others serve.
    """

    scope: Literal["method", "module"] = "method"
    failures: int = 5
    failure_ratio: float = 0.5
    window: int = 20
    min_calls: int = 10
    reset_s: float = 5.0
    probes: int = 1
    per_node: bool = True

    def __post_init__(self) -> None:
        _positive(self, "reset_s")
        for name in ("failures", "window", "min_calls", "probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"breaker.{name} must be >= 1")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("breaker.failure_ratio must be in (0, 1]")


class BulkheadPolicy(_Part, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """At most ``max_concurrent`` calls at once; ``max_queue`` more wait, the rest are refused.

    A waiting call gives up at its deadline or after ``queue_timeout_s``.
    """

    max_concurrent: int
    max_queue: int = 0
    queue_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.max_queue < 0:
            raise ValueError("bulkhead.max_concurrent must be >= 1 and max_queue >= 0")
        if self.queue_timeout_s is not None and self.queue_timeout_s <= 0:
            raise ValueError("bulkhead.queue_timeout_s must be > 0")


class RateLimitPolicy(_Part, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A token bucket per caller: ``rate`` calls per second, bursts of ``burst``."""

    rate: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or (self.burst is not None and self.burst < 1):
            raise ValueError("rate_limit.rate must be > 0 and burst >= 1")


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How calls to one target behave; every part optional.

    ``fallback`` names a target (``"pricing.cached_quote"``) called with the
    same parameters, ``fallback_value`` a value returned as is; either answers
    instead of an error whose code is in ``fallback_on``.
    ``False`` for a part switches off what a weaker layer set.
    """

    timeout_s: float | None = None
    retry: CallRetryPolicy | Literal[False] | None = None
    breaker: BreakerPolicy | Literal[False] | None = None
    bulkhead: BulkheadPolicy | Literal[False] | None = None
    rate_limit: RateLimitPolicy | Literal[False] | None = None
    fallback: str | Literal[False] | None = None
    fallback_value: Any = msgspec.UNSET
    fallback_on: tuple[str, ...] = DEFAULT_FALLBACK_ON

    def __post_init__(self) -> None:
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if isinstance(self.fallback, str) and "." not in self.fallback:
            raise ValueError("fallback must name a target 'module.method'")

    @property
    def empty(self) -> bool:
        """Whether this policy changes nothing about a call."""
        return (
            self.timeout_s is None
            and not self.retry
            and not self.breaker
            and not self.bulkhead
            and not self.rate_limit
            and not self.fallback
            and self.fallback_value is msgspec.UNSET
        )

    def over(self, weaker: Policy) -> Policy:
        """This layer on top of ``weaker``: what this one names wins."""
        fields: dict[str, Any] = {}
        for name in ("timeout_s", "retry", "breaker", "bulkhead", "rate_limit", "fallback"):
            mine = getattr(self, name)
            fields[name] = getattr(weaker, name) if mine is None else mine
        value = self.fallback_value
        fields["fallback_value"] = weaker.fallback_value if value is msgspec.UNSET else value
        on = self.fallback_on
        fields["fallback_on"] = weaker.fallback_on if on == DEFAULT_FALLBACK_ON else on
        return Policy(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The policy as config would write it (what it sets, no defaults)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        if self.fallback_on == DEFAULT_FALLBACK_ON:
            out.pop("fallback_on", None)
        return {k: v for k, v in out.items() if v is not None}


EMPTY = Policy()


def _positive(part: object, *names: str) -> None:
    for name in names:
        if getattr(part, name) <= 0:
            raise ValueError(
                f"{type(part).__name__.removesuffix('Policy').lower()}.{name} must be > 0"
            )


def parse_policy(raw: Any, where: str = "policy") -> Policy:
    """One policy from a config table or a ``Policy``.

    Raises:
        ConfigError: naming ``where`` and the bad key.
    """
    if isinstance(raw, Policy):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a policy must be a table", details={"key": where})
    try:
        return msgspec.convert(dict(raw), Policy, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        reason = str(exc)
        raise ConfigError(f"{where}: {reason}", details={"key": where, "reason": reason}) from None


def layer_key(key: str) -> tuple[str | None, str]:
    """``"orders -> pricing.quote"`` → ``("orders", "pricing.quote")``; no caller → ``None``.

    Raises:
        ConfigError: not ``[<caller> ->] <module>[.<method>]`` (or ``default``).
    """
    found = _KEY.match(key.strip())
    if found is None:
        raise ConfigError(
            f"policies.{key}: a policy key is 'default', '<module>', '<module>.<method>' "
            "or '<caller> -> <module>[.<method>]'",
            details={"key": f"policies.{key}"},
        )
    caller = found["caller"]
    return (None if caller in (None, "*") else caller), found["target"]


class PolicyTable(msgspec.Struct, frozen=True):
    """The ``[policies]`` section, parsed: the default and one policy per key."""

    default: Policy = EMPTY
    by_target: dict[str, Policy] = msgspec.field(default_factory=dict)
    by_caller: dict[tuple[str, str], Policy] = msgspec.field(default_factory=dict)

    @property
    def callers(self) -> frozenset[str]:
        """Modules that have policies of their own as callers."""
        return frozenset(caller for caller, _ in self.by_caller)

    def layers(self, caller: str | None, target: str) -> list[Policy]:
        """The config layers for a call, weakest first (the callee's own goes between)."""
        module = target.partition(".")[0]
        out = [p for k in (module, target) if (p := self.by_target.get(k)) is not None]
        if caller is not None:
            for key in ((caller, "*"), (caller, module), (caller, target)):
                found = self.by_caller.get(key)
                if found is not None:
                    out.append(found)
        return out


def parse_policies(section: Any) -> PolicyTable:
    """Validate the ``[policies]`` section (every error names its key).

    Raises:
        ConfigError: a bad key or a bad policy.
    """
    if section is None:
        return PolicyTable()
    if not isinstance(section, Mapping):
        raise ConfigError("policies: the [policies] section must be a table of tables")
    default = EMPTY
    by_target: dict[str, Policy] = {}
    by_caller: dict[tuple[str, str], Policy] = {}
    for key, raw in section.items():
        where = f"policies.{key}"
        if key == "default":
            default = parse_policy(raw, where)
            continue
        caller, target = layer_key(str(key))
        policy = parse_policy(raw, where)
        if caller is None:
            if target == "*":
                default = policy.over(default)
            else:
                by_target[target] = policy
        else:
            by_caller[(caller, target)] = policy
    return PolicyTable(default=default, by_target=by_target, by_caller=by_caller)
