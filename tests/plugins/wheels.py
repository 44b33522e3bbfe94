"""Real plugin distributions for tests: a wheel built from files, installed with pip --target."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

PRICING = """
from organelle import Module, rpc
from organelle.plugins import Manifest


class Pricing(Module):
    name = "pricing"
    version = "1.2.0"
    manifest = Manifest(
        kernel=">=0.1,<1",
        rpc=("inventory.reserve",),
        emit=("pricing.>",),
        storage=(),
    )

    @rpc
    async def quote(self, sku: str) -> str:
        return await self.call("inventory.reserve", sku=sku)

    @rpc
    async def peek(self, sku: str) -> str:
        return await self.call("inventory.release", sku=sku)
"""


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(
    out: Path,
    *,
    dist: str = "shop-pricing",
    version: str = "1.2.0",
    files: dict[str, str] | None = None,
    entry_points: dict[str, str] | None = None,
) -> Path:
    """Write a pure-Python wheel (PEP 427) with ``organelle.modules`` entry points."""
    files = files if files is not None else {"shop_pricing/__init__.py": PRICING}
    entry_points = entry_points if entry_points is not None else {"pricing": "shop_pricing:Pricing"}
    stem = dist.replace("-", "_")
    info = f"{stem}-{version}.dist-info"
    lines = "\n".join(f"{name} = {ref}" for name, ref in entry_points.items())
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[organelle.modules]\n{lines}\n",
    }
    record = [
        f"{path},{_record_hash(text.encode())},{len(text.encode())}"
        for path, text in contents.items()
    ]
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def pip_install(wheel: Path, target: Path) -> None:
    """Install ``wheel`` into ``target`` with pip (offline), as a user would into a venv."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=120,
    )
