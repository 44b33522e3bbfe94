"""``organelle run --reload``: edit a module file, see the new code run; a broken edit waits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from organelle.cli._watch import watched_dirs
from tests.cli.proc import ROOT, Child

MODULE = """
from organelle import Module


class Hot(Module):
    name = "hot"

    async def on_start(self) -> None:
        self.log.info("hot ready: %s", {version!r})
"""


def write_module(folder: Path, version: str) -> None:
    (folder / "hot.py").write_text(MODULE.format(version=version))


async def start(folder: Path) -> Child:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE")}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "organelle", "run", "app.toml", "--reload"),
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its child too is ours to kill if the test fails
    )
    return Child(proc)


async def test_an_edit_restarts_the_app_with_the_new_code(tmp_path: Path) -> None:
    write_module(tmp_path, "v1")
    (tmp_path / "app.toml").write_text(
        '[kernel]\npythonpath = ["."]\nmodules = ["hot:Hot"]\nstorage = "memory://"\n'
    )
    child = await start(tmp_path)
    try:
        await child.wait_for(r"reload: watching .*" + tmp_path.name, timeout_s=30)
        await child.wait_for(r"hot ready: v1", timeout_s=30)
        await child.wait_for(r"1 module active \(hot\)", timeout_s=30)

        write_module(tmp_path, "v2")
        await child.wait_for(r"reload: hot\.py changed; restarting", timeout_s=30)
        await child.wait_for(r"stopping \(SIGINT\)", timeout_s=30)  # the old one stops gracefully
        await child.wait_for(r"hot ready: v2", timeout_s=30)

        (tmp_path / "hot.py").write_text("class Hot(:\n")  # a typo: that child exits ...
        await child.wait_for(r"SyntaxError|error:", timeout_s=30)
        write_module(tmp_path, "v3")  # ... and the fix starts the app again
        await child.wait_for(r"hot ready: v3", timeout_s=30)

        child.signal(signal.SIGTERM)
        code = await child.finish(timeout_s=30)
        assert code == 0, child.output
        assert child.lines[-1] == "organelle: reload: stopped"
        assert any(line.startswith("organelle: stopped in") for line in child.lines[-4:])
    finally:
        if child.proc.returncode is None:
            os.killpg(child.proc.pid, signal.SIGKILL)
            await child.proc.wait()


def test_watched_dirs_are_the_config_folder_and_its_pythonpath(tmp_path: Path) -> None:
    app = tmp_path / "app" / "app.toml"
    (tmp_path / "app" / "src").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    app.write_text('[kernel]\npythonpath = ["src", "../lib"]\n')
    assert watched_dirs(str(app)) == [tmp_path / "app", tmp_path / "lib"]  # src is inside app
    assert watched_dirs(str(app), [tmp_path]) == [tmp_path]
    app.write_text("[kernel\n")  # broken: still watched, so a fix restarts the app
    assert watched_dirs(str(app)) == [tmp_path / "app"]
