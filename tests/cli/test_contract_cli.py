"""``organelle contract export|check`` run for real, on apps written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.proc import run_once

V1 = """
from __future__ import annotations

import msgspec
from organelle import Module, job, on, rpc


class Quote(msgspec.Struct):
    sku: str
    price: float


class Pricing(Module):
    name = "pricing"
    version = "1.2.0"

    async def on_load(self) -> None:
        raise RuntimeError("on_load must not run")

    async def on_start(self) -> None:
        raise RuntimeError("on_start must not run")

    @rpc
    async def quote(self, sku: str, qty: int = 1) -> Quote:
        return Quote(sku=sku, price=qty * 1.0)

    @job
    async def reindex(self, sku: str) -> None: ...

    @on("order.created")
    async def on_order(self, event: dict[str, str]) -> None: ...
"""

# Compatible: a new optional parameter, a wider type, a new method.
V2_COMPATIBLE = V1.replace(
    "async def quote(self, sku: str, qty: int = 1)",
    'async def quote(self, sku: str, qty: float = 1, region: str = "eu")',
).replace(
    "    @job\n",
    "    @rpc\n    async def ping(self) -> str:\n        return 'pong'\n\n    @job\n",
)

# Breaking: a new required parameter, a removed job; the version stays 1.x.
V2_BREAKING = V1.replace(
    "async def quote(self, sku: str, qty: int = 1)",
    "async def quote(self, sku: str, region: str, qty: int = 1)",
).replace("    @job\n    async def reindex(self, sku: str) -> None: ...\n", "")


def write_app(tmp_path: Path, source: str, name: str) -> str:
    """An app.toml whose one module lives in ``<name>.py`` (a new name per version)."""
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[kernel]\npythonpath = ["."]\nmodules = ["{name}:Pricing"]\n', encoding="utf-8"
    )
    return str(path)


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    return tmp_path / "contract.json"


async def export(tmp_path: Path, snapshot_file: Path) -> None:
    code, out, err = await run_once(
        "contract", "export", write_app(tmp_path, V1, "v1"), "-o", str(snapshot_file)
    )
    assert (code, err) == (0, ""), err
    assert out == f"wrote the contract of 1 module to {snapshot_file}\n"


async def test_export_to_stdout_and_to_a_file(tmp_path: Path, snapshot_file: Path) -> None:
    app = write_app(tmp_path, V1, "v1")
    code, out, err = await run_once("contract", "export", app)
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["format"] == 1
    pricing = data["modules"]["pricing"]
    assert pricing["version"] == "1.2.0"
    assert pricing["rpc"]["quote"]["params"]["qty"] == {
        "default": 1,
        "required": False,
        "schema": {"type": "integer"},
    }
    assert pricing["rpc"]["quote"]["returns"] == {"$ref": "#/schemas/Quote"}
    assert list(pricing["jobs"]) == ["reindex"]
    await export(tmp_path, snapshot_file)
    assert snapshot_file.read_text(encoding="utf-8") == out  # the same bytes either way


async def test_check_unchanged_app_exits_0(tmp_path: Path, snapshot_file: Path) -> None:
    await export(tmp_path, snapshot_file)
    code, out, err = await run_once(
        "contract", "check", write_app(tmp_path, V1, "again"), "--against", str(snapshot_file)
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "ok: no changes"


async def test_check_compatible_changes_exits_0(tmp_path: Path, snapshot_file: Path) -> None:
    await export(tmp_path, snapshot_file)
    app = write_app(tmp_path, V2_COMPATIBLE, "v2")
    code, out, err = await run_once("contract", "check", app, "--against", str(snapshot_file))
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert lines[0] == f"contract of {app} (1 module) against {snapshot_file}"
    assert lines[1:-1] == [
        "  compatible  pricing.ping           new RPC method",
        "  compatible  pricing.quote(qty)     type widened from integer to number",
        "  compatible  pricing.quote(region)  new optional parameter",
    ]
    assert lines[-1] == "ok: 3 compatible changes, none breaking"


async def test_check_breaking_changes_exits_1(tmp_path: Path, snapshot_file: Path) -> None:
    await export(tmp_path, snapshot_file)
    app = write_app(tmp_path, V2_BREAKING, "v2")
    code, out, err = await run_once("contract", "check", app, "-a", str(snapshot_file))
    assert (code, err) == (1, ""), out
    lines = out.splitlines()
    assert lines[1:-1] == [
        "  breaking    pricing.quote(region)  new required parameter: callers that omit it fail with 'missing required parameter'",
        "  breaking    job pricing.reindex    job removed: enqueueing it fails and queued runs cannot execute",
        "  breaking    pricing                2 breaking changes but version 1.2.0 -> 1.2.0 is not a major bump (expected 2.0.0 or later)",
    ]
    assert lines[-1] == "not compatible: 3 breaking changes, 0 compatible changes"


async def test_check_a_kernel_reference_with_only(tmp_path: Path) -> None:
    snapshot_file = tmp_path / "greeter.json"
    code, _, err = await run_once(
        "contract", "export", "tests.cli.apps:kernel", "--only", "greeter", "-o", str(snapshot_file)
    )
    assert (code, err) == (0, "")
    assert list(json.loads(snapshot_file.read_text(encoding="utf-8"))["modules"]) == ["greeter"]
    code, out, _ = await run_once(
        "contract", "check", "tests.cli.apps:kernel", "--against", str(snapshot_file)
    )
    assert code == 0
    assert "  compatible  audience  new module (0.3.0)" in out.splitlines()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "error: cannot read snapshot {path}: No such file or directory"),
        ("{not json", "error: {path} is not valid JSON: "),
        (
            '{"format": 1, "modules": []}',
            "error: {path} is not a contract snapshot: Expected `object`, got `array` - at `$.modules`",
        ),
        (
            '{"format": 7, "modules": {}}',
            "error: {path} has snapshot format 7; this organelle reads format 1",
        ),
    ],
)
async def test_check_bad_snapshot_exits_2_with_one_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "contract.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code, out, err = await run_once(
        "contract", "check", write_app(tmp_path, V1, "v1"), "--against", str(path)
    )
    assert code == 2
    assert out == ""
    assert err.startswith(expected.format(path=path))
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_bad_target_exits_2(tmp_path: Path, snapshot_file: Path) -> None:
    snapshot_file.write_text('{"format": 1, "modules": {}}', encoding="utf-8")
    for args in (
        ("contract", "export", str(tmp_path / "missing.toml")),
        ("contract", "check", "tests.cli.nope:kernel", "--against", str(snapshot_file)),
    ):
        code, out, err = await run_once(*args)
        assert (code, out) == (2, "")
        assert err.startswith("error: ")
        assert err.count("\n") == 1


async def test_export_to_an_unwritable_path_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir.json"
    code, _, err = await run_once(
        "contract", "export", write_app(tmp_path, V1, "v1"), "-o", str(target)
    )
    assert code == 2
    assert err == f"error: cannot write {target}: No such file or directory\n"


async def test_check_needs_against(tmp_path: Path) -> None:
    code, _, err = await run_once("contract", "check", write_app(tmp_path, V1, "v1"))
    assert code == 2
    assert "--against" in err
