"""Build hook: compile organelle's optional C hot path (``organelle._speedups``).

Where no compiler is found the build goes on and organelle runs its pure
Python path, which behaves the same, only slower. ``ORGANELLE_NO_EXTENSIONS=1``
skips the compile. ``python hatch_build.py`` rebuilds the extension in place
(``src/organelle/``) after editing the C sources in ``src/organelle/_csrc/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "src" / "organelle"
SOURCES = PACKAGE / "_csrc"
NAME = "organelle._speedups"


def source_hash() -> str:
    """What the built module reports as ``SOURCE_HASH`` (a test checks it is current)."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.glob("*.[ch]")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def compile_extension(out_dir: Path) -> Path:
    """Compile the extension into ``out_dir``; return the built file."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    ext = Extension(
        NAME,
        [str(path.relative_to(ROOT)) for path in sorted(SOURCES.glob("*.c"))],
        include_dirs=[str(SOURCES.relative_to(ROOT))],
        depends=[str(path.relative_to(ROOT)) for path in sorted(SOURCES.glob("*.h"))],
        define_macros=[("ORGANELLE_SOURCE_HASH", f'"{source_hash()}"')],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"],
    )
    dist = Distribution({"name": "organelle", "ext_modules": [ext]})
    cmd = build_ext(dist)
    cmd.build_lib = str(out_dir)
    cmd.build_temp = str(out_dir / "tmp")
    cmd.ensure_finalized()
    cwd = Path.cwd()
    os.chdir(ROOT)  # setuptools wants sources relative to the project
    try:
        cmd.run()
    finally:
        os.chdir(cwd)
    return Path(cmd.get_ext_fullpath(NAME))


def build_in_place() -> Path:
    """Compile into ``src/organelle/`` (editable installs and development)."""
    with tempfile.TemporaryDirectory() as tmp:
        built = compile_extension(Path(tmp))
        target = PACKAGE / built.name
        # A new file swapped in by rename: a process that has the old one
        # mapped keeps it, where copying over it in place could crash it.
        staged = target.with_name(f".{target.name}.new")
        shutil.copyfile(built, staged)
        os.replace(staged, target)
    return target


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script without hatchling
    BuildHookInterface = object  # type: ignore[assignment,misc]


class SpeedupsHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Compile the extension for wheels; in place for editable installs."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile before hatchling packs the wheel; never fail the build over it."""
        if self.target_name != "wheel" or os.environ.get("ORGANELLE_NO_EXTENSIONS"):
            return
        try:
            if version == "editable":
                build_in_place()
            else:
                out = Path(self.directory) / "speedups"
                built = compile_extension(out)
                build_data["force_include"][str(built)] = f"organelle/{built.name}"
        except Exception as exc:
            self.app.display_warning(
                f"organelle: C speedups not built ({exc}); the pure Python path will be used"
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


if __name__ == "__main__":
    sys.stderr.write(f"{build_in_place()}\n")
