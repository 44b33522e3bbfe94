"""``organelle contract check`` knows event versions: data changes need a bump, bumps an upcaster."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.proc import run_once

# The producer emits its event; the class is in its module's namespace, no handler declares it.
V1 = """
from __future__ import annotations

import msgspec
from organelle import Module, event, rpc


@event("up.cli.placed", version=1, key=("order_id",))
class Placed(msgspec.Struct):
    order_id: str
    total: float


class Shop(Module):
    name = "shop"
    version = "1.0.0"

    @rpc
    async def place(self, order_id: str) -> None:
        await self.emit(Placed(order_id=order_id, total=1.0))
"""

V2_CLASS = """
@event("up.cli.placed", version=2, key=("order_id",))
class Placed(msgspec.Struct):
    order_id: str
    cents: int
"""

V1_CLASS = V1[V1.index('@event("up.cli.placed"') : V1.index("class Shop")].rstrip() + "\n"

# Version 2 with the step from 1: what version 1 wrote is still read.
V2_UPCAST = V1.replace(V1_CLASS, V2_CLASS).replace(
    "from organelle import Module, event, rpc",
    "from typing import Any\n\nfrom organelle import Module, event, rpc\n"
    "from organelle.envelope import upcaster",
).replace("total=1.0", "cents=100") + (
    '\n\n@upcaster("up.cli.placed", 1, 2)\n'
    "def _cents(data: dict[str, Any]) -> dict[str, Any]:\n"
    '    return {"order_id": data["order_id"], "cents": round(data["total"] * 100)}\n'
)

# Version 2 and no upcaster: stored version 1 events can no longer be read.
V2_NO_UPCAST = V1.replace(V1_CLASS, V2_CLASS).replace("total=1.0", "cents=100")

# The data changed incompatibly (a new required field) at the same version.
V1_CHANGED = V1.replace("    total: float\n", "    total: float\n    currency: str\n").replace(
    "total=1.0", 'total=1.0, currency="EUR"'
)


def write_app(tmp_path: Path, source: str, name: str) -> str:
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[kernel]\npythonpath = ["."]\nmodules = ["{name}:Shop"]\n', encoding="utf-8")
    return str(path)


async def export_v1(tmp_path: Path) -> Path:
    snapshot_file = tmp_path / "contract.json"
    code, _, err = await run_once(
        "contract", "export", write_app(tmp_path, V1, "v1"), "-o", str(snapshot_file)
    )
    assert (code, err) == (0, ""), err
    return snapshot_file


async def check(tmp_path: Path, source: str, snapshot_file: Path) -> tuple[int, list[str]]:
    app = write_app(tmp_path, source, "v2")
    code, out, err = await run_once("contract", "check", app, "--against", str(snapshot_file))
    assert err == ""
    return code, out.splitlines()


async def test_the_snapshot_holds_the_apps_event_types(tmp_path: Path) -> None:
    data = json.loads((await export_v1(tmp_path)).read_text(encoding="utf-8"))
    assert data["event_types"] == {
        "up.cli.placed": {
            "data": {"$ref": "#/schemas/Placed"},
            "key": ["order_id"],
            "upcasters": [],
            "version": 1,
        }
    }
    assert data["schemas"]["Placed"]["required"] == ["order_id", "total"]
    code, out, _ = await run_once("contract", "export", write_app(tmp_path, V2_UPCAST, "v2"))
    assert code == 0
    assert json.loads(out)["event_types"]["up.cli.placed"]["upcasters"] == [1]


async def test_a_version_bump_with_its_upcaster_is_compatible(tmp_path: Path) -> None:
    snapshot_file = await export_v1(tmp_path)
    code, lines = await check(tmp_path, V2_UPCAST, snapshot_file)
    assert code == 0, lines
    assert lines[1:] == [
        "  compatible  event up.cli.placed  version 1 -> 2, older data upcast",
        "ok: 1 compatible change, none breaking",
    ]
    code, lines = await check(tmp_path, V1, snapshot_file)
    assert (code, lines[-1]) == (0, "ok: no changes")


async def test_a_version_bump_without_an_upcaster_is_breaking(tmp_path: Path) -> None:
    code, lines = await check(tmp_path, V2_NO_UPCAST, await export_v1(tmp_path))
    assert code == 1, lines
    expected = (
        "  breaking    event up.cli.placed  version 1 -> 2 without an upcaster 1 -> 2: version 1 "
        "events and records can no longer be read (register @upcaster('up.cli.placed', 1, 2))"
    )
    assert lines[1:] == [expected, "not compatible: 1 breaking change, 0 compatible changes"]


async def test_data_changed_incompatibly_without_a_version_bump_is_breaking(
    tmp_path: Path,
) -> None:
    code, lines = await check(tmp_path, V1_CHANGED, await export_v1(tmp_path))
    assert code == 1, lines
    (line,) = lines[1:-1]
    assert line.startswith(
        "  breaking    event up.cli.placed  data Placed changed and no longer accepts "
        "everything it did: "
    )
    assert "currency" in line
    assert line.endswith("; bump the version (now 1) and upcast")
    assert lines[-1] == "not compatible: 1 breaking change, 0 compatible changes"
