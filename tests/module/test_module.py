from __future__ import annotations

from typing import Any

import pytest

from organelle import DefinitionError, DependencyError, Module, on, rpc
from organelle.module import describe


def test_describe_collects_handlers() -> None:
    class Shop(Module):
        name = "shop"
        version = "1.2.3"
        requires = ("pricing>=1,<2",)
        optional = ("mail",)

        @rpc
        async def buy(self, sku: str, qty: int = 1) -> int:
            return qty

        @rpc(name="sell")
        async def _sell(self) -> None:
            pass

        @on("order.*")
        @on("invoice.>", delivery="broadcast", priority=5)
        async def on_any(self, event: dict[str, Any]) -> None:
            pass

    spec = describe(Shop)
    assert sorted(spec.rpcs) == ["buy", "sell"]
    assert {s.spec.pattern for s in spec.subscriptions} == {"order.*", "invoice.>"}
    assert [str(d) for d in spec.deps] == ["pricing<2,>=1", "mail"]
    assert spec.deps[1].optional


def test_sync_handler_rejected_at_decoration() -> None:
    with pytest.raises(DefinitionError, match="must be an 'async def' function"):

        class Bad(Module):
            name = "bad"

            @rpc  # type: ignore[type-var]
            def add(self, a: int) -> int:
                return a


def test_sync_hook_rejected() -> None:
    class Bad(Module):
        name = "bad"

        def on_start(self) -> None:
            pass

    with pytest.raises(DefinitionError, match="on_start must be an 'async def' method"):
        describe(Bad)


def test_two_handlers_with_one_attribute_name() -> None:
    with pytest.raises(DefinitionError, match="two handlers are named 'add'"):

        class Bad(Module):
            name = "bad"

            @rpc
            async def add(self, a: int) -> int:
                return a

            @rpc  # type: ignore[no-redef]
            async def add(self, a: int, b: int) -> int:
                return a + b


def test_two_handlers_with_one_rpc_name() -> None:
    class Bad(Module):
        name = "bad"

        @rpc(name="add")
        async def add_one(self) -> None:
            pass

        @rpc(name="add")
        async def add_two(self) -> None:
            pass

    with pytest.raises(DefinitionError, match="two RPC handlers are named 'add'"):
        describe(Bad)


@pytest.mark.parametrize("pattern", ["", "a..b", "a.>.b", "a b", "a.*x"])
def test_invalid_pattern(pattern: str) -> None:
    with pytest.raises(DefinitionError, match="@on"):
        on(pattern)


def test_self_dependency_rejected() -> None:
    class Bad(Module):
        name = "bad"
        requires = ("bad",)

    with pytest.raises(DefinitionError, match="cannot depend on itself"):
        describe(Bad)


def test_dependency_error_is_a_definition_error() -> None:
    assert issubclass(DependencyError, DefinitionError)


@pytest.mark.parametrize("name", ["", "Upper", "has.dot", "1st", None])
def test_invalid_module_name(name: Any) -> None:
    bad = type("Bad", (Module,), {"name": name})
    with pytest.raises(DefinitionError, match="module name"):
        describe(bad)


def test_invalid_version() -> None:
    bad = type("Bad", (Module,), {"name": "bad", "version": "one"})
    with pytest.raises(DefinitionError, match="not a valid version"):
        describe(bad)


def test_var_args_rejected_in_rpc() -> None:
    class Bad(Module):
        name = "bad"

        @rpc
        async def f(self, *args: int) -> None:
            pass

    with pytest.raises(DefinitionError, match="named parameters"):
        describe(Bad)


def test_event_handler_takes_one_payload() -> None:
    class Bad(Module):
        name = "bad"

        @on("x")
        async def f(self, a: int, b: int) -> None:
            pass

    with pytest.raises(DefinitionError, match="one payload parameter"):
        describe(Bad)


def test_config_must_be_pydantic() -> None:
    class Bad(Module):
        name = "bad"

        class Config:
            x = 1

    with pytest.raises(DefinitionError, match="Config must be a pydantic"):
        describe(Bad)


def test_jobs_and_crons_described() -> None:
    from organelle import cron, job

    class Worker(Module):
        name = "worker"

        @job(max_attempts=5, timeout_s=2)
        async def reindex(self, sku: str) -> None:
            pass

        @cron("*/5 * * * *", misfire="catch_up")
        async def sweep(self) -> None:
            pass

    spec = describe(Worker)
    assert spec.jobs["reindex"].options.max_attempts == 5
    assert spec.jobs["reindex"].contract.names == ("sku",)
    assert spec.jobs["reindex"].cron is None
    sweep = spec.jobs["sweep"].cron
    assert sweep is not None
    assert sweep.expr == "*/5 * * * *"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: __import__("organelle").job(max_attempts=0), "max_attempts"),
        (lambda: __import__("organelle").cron("every minute"), "not a cron expression"),
        (lambda: __import__("organelle").cron("* * * * *", misfire="later"), "misfire"),
    ],
)
def test_job_and_cron_misuse(make: Any, match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        make()


def test_cron_takes_no_params() -> None:
    from organelle import cron

    with pytest.raises(DefinitionError, match="must take no parameters"):

        @cron("* * * * *")
        async def tick(self: Module, n: int) -> None:
            pass
