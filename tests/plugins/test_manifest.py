"""A manifest: its patterns, its kernel range, and how subscription patterns are covered."""

from __future__ import annotations

import pytest

from organelle._version import __version__
from organelle.errors import PluginError, PluginIncompatibleError
from organelle.plugins import Manifest, covers, manifest_of


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("order.*", "order.created", True),
        ("order.*", "order.*", True),
        ("order.>", "order.*", True),
        ("order.>", "order.a.b", True),
        ("order.>", "order.>", True),
        ("order.*", "order.>", False),  # '>' reaches deeper than '*'
        ("order.created", "order.*", False),  # wider than declared
        ("order.*", "order.created.x", False),
        ("*.created", "order.created", True),
        ("order.created", "order.created", True),
        ("order.created", "order", False),
        ("order", "order.created", False),
        (">", "anything.at.all", True),
    ],
)
def test_covers(outer: str, inner: str, expected: bool) -> None:
    assert covers(outer, inner) is expected


def test_rule_admits_its_patterns_and_the_module_itself() -> None:
    manifest = Manifest(rpc=("inventory.reserve", "pricing.*"), storage=("cache",))
    rpc = manifest.rule("rpc", "shop")
    assert rpc.admits("inventory.reserve")
    assert rpc.admits("pricing.quote")
    assert rpc.admits("shop.anything")  # its own methods
    assert not rpc.admits("inventory.release")
    assert not rpc.admits("pricing.quote.extra")
    assert rpc.allowed == {"inventory.reserve", "pricing.quote", "shop.anything"}
    storage = manifest.rule("storage", "shop")
    assert storage.admits("shop")
    assert storage.admits("cache")
    assert not storage.admits("users")
    assert not manifest.rule("emit").admits("order.created")  # nothing declared, nothing allowed


def test_kernel_range() -> None:
    assert Manifest(kernel=f"=={__version__}").supports()
    assert Manifest(kernel="").supports()  # no range: any version
    assert Manifest(kernel=">=0.1,<1").supports("0.9.0rc1")
    assert not Manifest(kernel=">=99").supports()
    with pytest.raises(PluginIncompatibleError, match=r"supports organelle >=99, not") as caught:
        Manifest(kernel=">=99").check_kernel("pricing")
    assert caught.value.code == "organelle.plugin.incompatible"
    assert caught.value.details["module"] == "pricing"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": "one or two"}, "not a version range"),
        ({"rpc": "pricing.quote"}, "rpc must be a tuple of patterns"),
        ({"emit": ("order..created",)}, "emit: pattern 'order..created' has an empty token"),
        ({"subscribe": ("a.>.b",)}, "only allowed as the last token"),
    ],
)
def test_bad_manifests_are_refused_when_declared(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        Manifest(**kwargs)  # type: ignore[arg-type]


def test_manifest_of() -> None:
    class Plain:
        pass

    class Declared:
        manifest = Manifest(rpc=["a.b"])  # type: ignore[arg-type]  # a list from user code is kept as a tuple

    class Wrong:
        manifest = {"rpc": ["a.b"]}

    assert manifest_of(Plain) is None
    found = manifest_of(Declared)
    assert found is not None
    assert found.rpc == ("a.b",)
    assert found.to_dict()["rpc"] == ["a.b"]
    with pytest.raises(PluginError, match="must be an organelle.plugins.Manifest"):
        manifest_of(Wrong)
