"""docs/tutorial.md stays true: its files are written, checked, linted and tested as a reader would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()
BIN = Path(sys.executable).parent
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[\w./-]+) -->\n```\w+\n(?P<code>.*?)```", re.DOTALL)
GREETER = ("src/shop/greeter.py", "tests/test_greeter.py")


def child_env() -> dict[str, str]:
    """This checkout's organelle, none of this run's overrides or pytest plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORGANELLE"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only what organelle[testing] brings
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command as the reader would, bounded in time."""
    return subprocess.run(
        args, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=30, check=False
    )


def test_the_tutorial_marks_its_files_and_starts_from_organelle_new() -> None:
    paths = {m["path"] for m in FILE_BLOCK.finditer(TUTORIAL)}
    assert paths == {
        "app.toml",
        "src/shop/pricing.py",
        "src/shop/inventory.py",
        "src/shop/orders.py",
        "src/shop/notifications.py",
        "tests/test_shop.py",
    }
    assert "organelle new project shop\n" in TUTORIAL
    assert f"rm {' '.join(GREETER)}\n" in TUTORIAL


def masked(text: str) -> str:
    """Blank what differs between runs: order ids, the gateway's port, timestamps."""
    text = re.sub(r'(?<="id":")[0-9a-f]{12}|(?<=receipt )[0-9a-f]{12}', "<id>", text)
    return re.sub(r"127\.0\.0\.1:\d+|^\d\d:\d\d:\d\d ", "<at>", text, flags=re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The project as the reader has it after the last step, and each step's check output."""
    parent = tmp_path_factory.mktemp("tutorial")
    new = run([sys.executable, "-m", "organelle", "new", "project", "shop", "--dir", "."], parent)
    assert new.returncode == 0, new.stderr
    assert new.stdout.strip() in TUTORIAL  # the output step 1 shows
    project = parent / "shop"
    for name in GREETER:
        (project / name).unlink()
    checks: list[str] = []
    for block in FILE_BLOCK.finditer(TUTORIAL):
        (project / block["path"]).write_text(block["code"])
        if block["path"] == "app.toml":  # each step's app builds, and prints what the step shows
            result = run([sys.executable, "-m", "organelle", "check", "app.toml"], project)
            assert result.returncode == 0, result.stdout + result.stderr
            checks.append(result.stdout.strip())
    return project, checks


@pytest.mark.timeout(120)  # about ten short subprocesses on a shared 2-core machine
def test_every_step_checks_and_the_final_project_passes_its_tests(
    steps: tuple[Path, list[str]],
) -> None:
    project, checks = steps
    assert len(checks) == 5  # steps 2, 3, 4, 5 and 7 each change app.toml
    for output in checks:
        assert output in TUTORIAL, output

    plugins = ["-p", "pytest_asyncio.plugin", "-p", "organelle.testing.pytest_plugin"]
    tests = run([sys.executable, "-m", "pytest", *plugins, "-p", "no:cacheprovider", "-q"], project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    passed = re.search(r"(\d+) passed", tests.stdout)
    assert passed is not None, tests.stdout
    assert f"\n{passed[1]} passed in " in TUTORIAL

    lint = run([str(BIN / "ruff"), "check", "--output-format", "concise", "."], project)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run([str(BIN / "ruff"), "format", "--check", "."], project)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.timeout(60)
def test_the_http_step_answers_what_it_shows(steps: tuple[Path, list[str]]) -> None:
    project, _ = steps
    port = free_port()
    args = ["run", "app.toml", "--set", f"modules.gateway.port={port}"]
    app = subprocess.Popen(
        [sys.executable, "-m", "organelle", *args],
        cwd=project,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:  # bounded: until the gateway answers or 30 s have passed
                try:
                    client.get("/openapi.json").raise_for_status()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the app did not come up"
                    time.sleep(0.2)
            answers = [
                client.get("/prices/apple", params={"qty": 3}),
                client.post("/orders", json={"customer": "ada", "sku": "apple", "qty": 2}),
                client.post("/orders", json={"customer": "bo", "sku": "coffee", "qty": 5}),
                client.get("/inventory/apple"),
            ]
            assert [a.status_code for a in answers] == [200, 201, 409, 200]
            assert client.get("/docs").status_code == 200
            assert client.get("/_dashboard").status_code == 200
            order_id = answers[1].json()["id"]
            deadline = time.monotonic() + 15
            while True:  # bounded: the receipt job runs within the worker's poll interval
                receipt = client.post("/api/notifications/receipt", json={"order_id": order_id})
                if receipt.json() is not None:
                    break
                assert time.monotonic() < deadline, "the receipt job did not run"
                time.sleep(0.2)
        for answer in answers:
            assert masked(answer.text) in masked(TUTORIAL), answer.text
    finally:
        app.send_signal(signal.SIGINT)
        output, _ = app.communicate(timeout=30)
    assert app.returncode == 0, output
    lines = masked(output).splitlines()
    shown = [line for line in lines if line.startswith(("organelle: gateway", "organelle: dash"))]
    shown += [
        line for line in lines if "modules active" in line or "notifications: receipt" in line
    ]
    assert len(shown) == 4, output  # the lines step 7 shows: two addresses, active, the receipt
    for line in shown:
        assert line in masked(TUTORIAL), line
