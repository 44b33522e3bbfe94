"""docs/tutorial.md stays true: its files are written, checked, linted and tested as a reader would."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from organelle.testing.servers import NatsServer, shared_nats

if TYPE_CHECKING:
    from collections.abc import Iterator

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


@contextlib.contextmanager
def running_app(project: Path, *sets: str) -> Iterator[tuple[httpx.Client, list[str]]]:
    """``organelle run app.toml`` in the project until the block ends, then SIGINT.

    Yields a client on its gateway (answering once the app is up) and a list that
    holds the app's output lines once the block has ended.
    """
    for leftover in project.glob("organelle*.db*"):  # what an earlier run left: start afresh
        leftover.unlink()
    port = free_port()
    args = ["run", "app.toml", "--set", f"modules.gateway.port={port}"]
    for value in sets:
        args += ["--set", value]
    app = subprocess.Popen(
        [sys.executable, "-m", "organelle", *args],
        cwd=project,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:  # bounded: until the gateway answers or 30 s have passed
                try:
                    client.get("/openapi.json").raise_for_status()
                    break
                except httpx.TransportError:
                    assert app.poll() is None, app.communicate()[0]
                    assert time.monotonic() < deadline, "the app did not come up"
                    time.sleep(0.2)
            yield client, lines
    finally:
        app.send_signal(signal.SIGINT)
        output, _ = app.communicate(timeout=30)
        lines += output.splitlines()
    assert app.returncode == 0, output


@pytest.mark.timeout(60)
def test_the_http_step_answers_what_it_shows(steps: tuple[Path, list[str]]) -> None:
    project, _ = steps
    with running_app(project) as (client, output):
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
    for answer in [*answers, receipt]:
        assert masked(answer.text) in masked(TUTORIAL), answer.text
    lines = masked("\n".join(output)).splitlines()
    shown = [line for line in lines if line.startswith(("organelle: gateway", "organelle: dash"))]
    shown += [
        line for line in lines if "modules active" in line or "notifications: receipt" in line
    ]
    assert len(shown) == 4, output  # the lines step 7 shows: two addresses, active, the receipt
    for line in shown:
        assert line in masked(TUTORIAL), line


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


def table_rows(text: str) -> list[tuple[str, ...]]:
    """The cells of a rich table's body rows, the node column dropped (it names the host)."""
    rows = [line.strip("│").split("│") for line in text.splitlines() if line.startswith("│")]
    return [tuple(cell.strip() for cell in row[1:]) for row in rows]


@pytest.mark.timeout(90)  # the app and five CLI processes, each joining the cluster
def test_the_nats_step_answers_what_it_shows(
    steps: tuple[Path, list[str]], nats_server: NatsServer
) -> None:
    project, _ = steps
    # The suite shares one server: a prefix of its own keeps this cluster apart.
    cluster = [f"kernel.transport={nats_server.url}", "kernel.transport_options.prefix=tut"]
    cli = [arg for value in cluster for arg in ("--set", value)]
    with running_app(project, *cluster):
        organelle = [sys.executable, "-m", "organelle"]
        calls = [
            ["call", "pricing.quote", "sku=apple", "qty=3"],
            ["call", "orders.place_order", "customer=ada", "sku=apple", "qty=2"],
            ["call", "orders.place_order", "customer=bo", "sku=coffee", "qty=5"],
        ]
        answers = [run([*organelle, *c, "--app", "app.toml", *cli], project) for c in calls]
        modules = run([*organelle, "modules", "--app", "app.toml", *cli], project)
        nodes = run([*organelle, "nodes", "app.toml", *cli], project)
    assert [a.returncode for a in answers] == [0, 0, 1], answers
    shown = masked(TUTORIAL)
    assert masked(answers[0].stdout.strip()) in shown
    assert masked(answers[1].stdout.strip()) in shown
    error = re.sub(r"\[node [\w.-]+\]", "", answers[2].stderr.strip())
    assert error in shown, answers[2].stderr
    assert modules.returncode == 0, modules.stderr
    assert sorted(table_rows(modules.stdout)) == sorted(table_rows(TUTORIAL))
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.startswith(f"cluster {nats_server.url} (prefix 'tut'): 1 node\n")
