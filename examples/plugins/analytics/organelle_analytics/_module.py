"""The ``analytics`` module: counters in time buckets on the Store, rolled up and expired."""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from organelle import Module, cron, on, rpc
from organelle.context import current_context
from organelle.errors import ValidationError
from organelle.plugins import Manifest
from organelle.topics import matches, pattern_error

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}")  # no ':': it separates the parts of a key
MAX_POINTS = 100_000  # the most buckets one query may span
PAGE = 1000


class Resolution(BaseModel):
    """One resolution: its bucket width and how long its buckets are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9]{1,16}$")
    step_s: int = Field(gt=0)
    keep_s: int = Field(gt=0)


DEFAULT_RESOLUTIONS = [
    Resolution(name="1m", step_s=60, keep_s=2 * 86400),
    Resolution(name="1h", step_s=3600, keep_s=90 * 86400),
    Resolution(name="1d", step_s=86400, keep_s=5 * 366 * 86400),
]


class CounterRule(BaseModel):
    """``[[modules.analytics.counters]]``: count an event, by one or by a number in its payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: str
    """A topic pattern (``*`` one token, ``>`` the rest)."""
    name: str
    value: int | str = 1
    """A fixed amount, or a dotted path to an integer in the payload (``order.items``)."""

    @field_validator("on")
    @classmethod
    def _pattern(cls, value: str) -> str:
        reason = pattern_error(value)
        if reason is not None:
            raise ValueError(f"on: {reason}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if _NAME.fullmatch(value) is None:
            raise ValueError(f"counter name {value!r}: letters, digits, '_', '.', '-' only")
        return value

    def amount(self, data: Any) -> object:
        """What this event adds: the fixed value or the one at the path."""
        if isinstance(self.value, int):
            return self.value
        for part in self.value.split("."):
            data = data.get(part) if isinstance(data, Mapping) else None
        return data


class Point(msgspec.Struct, frozen=True):
    """One bucket of a query: its start (Unix seconds) and its sum."""

    at: int
    value: int


def _floor(t: float, step: int) -> int:
    return int(t // step) * step


def _check_name(name: str) -> None:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValidationError(
            f"not a counter name: {name!r} (letters, digits, '_', '.', '-')",
            details={"field": "name"},
        )


def _check_time(value: float, field: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValidationError(
            f"{field} must be a Unix time, got {value!r}", details={"field": field}
        )


class Analytics(Module):
    """Counters with downsampling and retention (see the package docstring)."""

    name = "analytics"
    version = "0.1.0"
    # Counts whatever events its config names; writes only its own Store namespace.
    manifest = Manifest(kernel=">=0.1,<1", subscribe=(">",))

    class Config(BaseModel):
        resolutions: list[Resolution] = Field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
        """Finest first; each step a multiple of the one before."""
        lateness_s: int = Field(120, ge=0)
        """How late a count may come before its buckets are summed into coarser ones."""
        counters: list[CounterRule] = Field(default_factory=list)
        auto_rollup: bool = True
        """Roll up and expire every minute (off: call ``analytics.rollup`` yourself)."""

        @model_validator(mode="after")
        def _check(self) -> Analytics.Config:
            res = self.resolutions
            if not res:
                raise ValueError("at least one resolution")
            names = [r.name for r in res]
            if len(set(names)) != len(names):
                raise ValueError(f"two resolutions share a name: {names}")
            for finer, coarser in itertools.pairwise(res):
                if coarser.step_s <= finer.step_s or coarser.step_s % finer.step_s:
                    raise ValueError(
                        f"resolution {coarser.name!r}: its step must be a multiple of "
                        f"{finer.name!r}'s and larger"
                    )
                # the finer buckets must outlive the rollup that sums them
                needed = coarser.step_s + self.lateness_s
                if finer.keep_s < needed:
                    raise ValueError(
                        f"resolution {finer.name!r} keeps {finer.keep_s}s: less than "
                        f"{coarser.name!r}'s step plus lateness_s ({needed}s)"
                    )
            return self

    config: Config

    async def on_load(self) -> None:
        self._known: set[str] = set()

    # counting -----------------------------------------------------------------
    @rpc
    async def count(self, name: str, value: int = 1, at: float | None = None) -> None:
        """Add ``value`` to the counter ``name`` at ``at`` (now by default)."""
        _check_name(name)
        now = time.time()
        when = now if at is None else at
        _check_time(when, "at")
        levels = self.config.resolutions
        if when < now - levels[0].keep_s:
            raise ValidationError(
                f"at={when} is older than resolution {levels[0].name!r} keeps",
                details={"field": "at"},
            )
        if value == 0:
            return
        await self._remember(name)
        raw = self._key(levels[0], name, _floor(when, levels[0].step_s))
        if when >= now - self.config.lateness_s:
            await self.store.incr(raw, value)  # not rolled up yet anywhere: one write
            return
        # A late count: the coarser buckets may be summed already; add to those too,
        # under the rollup's lock so a rollup running now neither loses nor doubles it.
        async with self.lock("rollup", ttl_s=30, timeout_s=30):
            await self.store.incr(raw, value)
            for level in levels[1:]:
                start = _floor(when, level.step_s)
                mark = await self._watermark(level, name)
                if mark is not None and start < mark:
                    await self.store.incr(self._key(level, name, start), value)

    @on(">")
    async def on_event(self, data: Any) -> None:
        """Count the events the ``counters`` rules name."""
        ctx = current_context()
        topic = ctx.topic if ctx is not None else None
        if topic is None or topic.startswith("kernel."):
            return
        payload: Any = None
        for rule in self.config.counters:
            if not matches(rule.on, topic):
                continue
            if payload is None:
                payload = _plain(data)
            amount = rule.amount(payload)
            if not isinstance(amount, int) or isinstance(amount, bool):
                self.log.warning(
                    "analytics: %s on %s: %r is not an integer", rule.name, topic, amount
                )
                continue
            await self.count(rule.name, amount)

    # reading ------------------------------------------------------------------
    @rpc
    async def query(
        self, name: str, since: float, until: float, resolution: str | None = None
    ) -> list[Point]:
        """Buckets of ``[since, until)`` with counts, oldest first.

        ``resolution`` names one of the config's; by default the finest that
        still keeps ``since``. Buckets not rolled up yet are summed from the
        finer ones, so every resolution sees every count.
        """
        _check_name(name)
        _check_time(since, "since")
        _check_time(until, "until")
        if until <= since:
            raise ValidationError("until must be after since", details={"field": "until"})
        levels = self.config.resolutions
        if resolution is None:
            now = time.time()
            level = next(
                (i for i, r in enumerate(levels) if since >= now - r.keep_s), len(levels) - 1
            )
        else:
            found = [i for i, r in enumerate(levels) if r.name == resolution]
            if not found:
                raise ValidationError(
                    f"no resolution {resolution!r}",
                    details={"field": "resolution", "known": [r.name for r in levels]},
                )
            level = found[0]
        if (until - since) / levels[level].step_s > MAX_POINTS:
            raise ValidationError(
                f"the range spans more than {MAX_POINTS} buckets of {levels[level].name!r}",
                details={"field": "resolution"},
            )
        return await self._points(name, level, _floor(since, levels[level].step_s), until)

    @rpc
    async def names(self) -> list[str]:
        """Every counter that has been counted (and not expired entirely)."""
        return await self._names()

    # rollup and retention ----------------------------------------------------------
    @rpc
    async def rollup(self, now: float | None = None) -> dict[str, int]:
        """Sum finished buckets into the coarser resolutions, then expire old ones.

        The cron job runs this every minute; ``now`` lets a test or a backfill
        choose the time. Returns how many buckets were written and deleted.
        """
        when = time.time() if now is None else now
        _check_time(when, "now")
        return await self._rollup(when)

    @cron("* * * * *")
    async def tick(self) -> None:
        """The minutely rollup (``auto_rollup``)."""
        if self.config.auto_rollup:
            await self._rollup(time.time())

    async def _rollup(self, now: float) -> dict[str, int]:
        written = deleted = 0
        levels = self.config.resolutions
        async with self.lock("rollup", ttl_s=60, timeout_s=60):
            for name in await self._names():
                for i in range(1, len(levels)):
                    written += await self._roll(name, i, now)
                for level in levels:  # after the rollup: nothing unsummed is deleted
                    deleted += await self._expire(name, level, now)
        return {"written": written, "deleted": deleted}

    async def _roll(self, name: str, i: int, now: float) -> int:
        """Sum level ``i-1`` into level ``i`` for the buckets finished since the last run."""
        level = self.config.resolutions[i]
        end = _floor(now - self.config.lateness_s, level.step_s)
        mark = await self._watermark(level, name)
        if mark is None:
            first = await self._stored(name, self.config.resolutions[i - 1], 0, end, limit=1)
            if not first:
                return 0
            mark = _floor(first[0].at, level.step_s)
        if mark >= end:
            return 0
        sums: dict[int, int] = {}
        for point in await self._points(name, i - 1, mark, end):
            start = _floor(point.at, level.step_s)
            sums[start] = sums.get(start, 0) + point.value
        writes = {self._key(level, name, s): v for s, v in sums.items() if v}
        # Sums are written whole (not added), so running this twice gives the same buckets.
        async with self.store.transaction() as tx:
            if writes:
                await tx.put_many(writes)
            await tx.put(self._mark_key(level, name), end)
        return len(writes)

    async def _expire(self, name: str, level: Resolution, now: float) -> int:
        cutoff = _floor(now - level.keep_s, level.step_s)
        old = await self._stored(name, level, 0, cutoff)
        if not old:
            return 0
        return await self.store.delete_many([self._key(level, name, p.at) for p in old])

    # storage ------------------------------------------------------------------
    # b:<resolution>:<name>:<start, 12 digits>  a bucket (an integer, so incr adds to it)
    # w:<resolution>:<name>                     where the next rollup into it starts
    # n:<name>                                  a counter's name
    @staticmethod
    def _key(level: Resolution, name: str, start: int) -> str:
        return f"b:{level.name}:{name}:{start:012d}"

    @staticmethod
    def _mark_key(level: Resolution, name: str) -> str:
        return f"w:{level.name}:{name}"

    async def _watermark(self, level: Resolution, name: str) -> int | None:
        entry = await self.store.get(self._mark_key(level, name))
        return None if entry is None else int(entry.value)

    async def _remember(self, name: str) -> None:
        if name not in self._known:
            await self.store.put(f"n:{name}", 1)
            self._known.add(name)

    async def _names(self) -> list[str]:
        found: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.store.scan("n:", limit=PAGE, cursor=cursor)
            found.extend(e.key[2:] for e in page.items)
            if page.cursor is None:
                return found
            cursor = page.cursor

    async def _points(self, name: str, i: int, since: int, until: float) -> list[Point]:
        """Level ``i``'s buckets of ``[since, until)``: stored, then summed from level ``i-1``."""
        level = self.config.resolutions[i]
        if i == 0:
            return await self._stored(name, level, since, until)
        mark = await self._watermark(level, name)
        cut = int(min(max(since if mark is None else mark, since), until))
        points = await self._stored(name, level, since, cut) if cut > since else []
        if cut < until:
            fresh: dict[int, int] = {}
            for point in await self._points(name, i - 1, cut, until):
                start = _floor(point.at, level.step_s)
                fresh[start] = fresh.get(start, 0) + point.value
            points.extend(Point(s, v) for s, v in sorted(fresh.items()) if v)
        return points

    async def _stored(
        self, name: str, level: Resolution, since: int, until: float, *, limit: int | None = None
    ) -> list[Point]:
        """Stored buckets of ``[since, until)`` (a scan from the key before ``since``)."""
        prefix = f"b:{level.name}:{name}:"
        cursor = f"{prefix}{since - 1:012d}" if since > 0 else None
        found: list[Point] = []
        while True:
            page = await self.store.scan(prefix, limit=PAGE, cursor=cursor)
            for entry in page.items:
                start = int(entry.key[len(prefix) :])
                if start >= until:
                    return found
                found.append(Point(start, int(entry.value)))
                if limit is not None and len(found) >= limit:
                    return found
            if page.cursor is None:
                return found
            cursor = page.cursor


def _plain(data: Any) -> Any:
    """The payload as JSON-like data, whatever type the emitter used."""
    if hasattr(data, "model_dump"):  # a pydantic model
        return data.model_dump(mode="json")
    return msgspec.to_builtins(data)
