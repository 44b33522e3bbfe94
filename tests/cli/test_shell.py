"""``organelle shell``: a REPL on a started kernel, fed by a pipe as a person would type."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.proc import ROOT
from tests.cli.test_cli import write_app


def shell(app: str, typed: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run(
        [sys.executable, "-m", "organelle", "shell", "--app", app, "--plain", *extra],
        input=typed,
        env=env,
        cwd=Path(app).parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


TYPED = """\
print(await kernel.call("greeter.greet", who="ann"))
await kernel.call("greeter.greet", who="bo")
await kernel.call("greeter.nope")
total = sum(range(4))
print("still here", total, kernel.running)
exit()
"""


def test_await_works_errors_show_and_the_kernel_stops(tmp_path: Path) -> None:
    app = write_app(tmp_path, ["Greeter"], "[modules.greeter]\ngreeting = 'hey'\n")
    result = shell(app, TYPED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hey ann" in result.stdout
    assert "'hey bo'" in result.stdout  # an awaited expression is echoed, as in the REPL
    assert "NotFoundError: module 'greeter' has no RPC method 'nope'" in result.stderr
    assert "still here 6 True" in result.stdout  # the error did not end the session
    assert "(greeter)" in result.stderr  # the banner names the modules
    assert "greeter stopped cleanly" in result.stderr  # exit() stopped the kernel


def test_end_of_input_stops_the_kernel_too(tmp_path: Path) -> None:
    app = write_app(tmp_path, ["Greeter"])
    result = shell(
        app,
        'print(await kernel.call("greeter.greet", who="cy"))\n',
        "--set",
        "modules.greeter.greeting=yo",
    )
    assert result.returncode == 0, result.stderr
    assert "yo cy" in result.stdout
    assert "greeter stopped cleanly" in result.stderr


def test_an_app_that_cannot_be_built_exits_2(tmp_path: Path) -> None:
    app = write_app(tmp_path, ["NoSuchModule"])
    result = shell(app, "")
    assert result.returncode == 2
    assert "error:" in result.stderr


def test_ipython_awaits_on_the_kernel_loop(tmp_path: Path) -> None:
    # optional for users, but in the dev extra: a missing IPython fails here, never skips
    assert importlib.util.find_spec("IPython"), "pip install -e '.[dev]' brings IPython"
    app = write_app(tmp_path, ["Greeter"])
    env_home = tmp_path / "home"  # IPython writes its profile under $HOME
    env_home.mkdir()
    typed = 'await kernel.call("greeter.greet", who="di")\nexit()\n'
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE")}
    result = subprocess.run(
        [sys.executable, "-m", "organelle", "shell", "--app", app],
        input=typed,
        env={
            **env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path]),
            "HOME": str(env_home),
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Out[1]: 'hello di'" in result.stdout
