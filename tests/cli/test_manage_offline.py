"""The management commands on an app's files, in process: purge with progress, bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from organelle.cli import app
from organelle.jobs import JobSpec, JobsService, open_queue
from tests.cli.proc import ROOT


def _dead_jobs(url: str, count: int) -> list[str]:
    async def make() -> list[str]:
        queue = await open_queue(url)
        try:
            jobs = JobsService(queue)
            jobs.register("chores.sweep", JobSpec(max_attempts=1))
            ids = [await jobs.enqueue("chores.sweep", {"n": n}) for n in range(count)]

            async def sweep(n: int) -> None:
                raise RuntimeError(f"broom {n} broke")

            await jobs.worker({"chores.sweep": sweep}).drain(timeout_s=10)
            return ids
        finally:
            await queue.close()

    return asyncio.run(make())


def test_purge_every_dead_job_of_an_app_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    ids = _dead_jobs(url, 3)
    config = tmp_path / "app.toml"
    config.write_text(f'[kernel]\njobs = "{url}"\nstorage = "memory://"\n')
    runner = CliRunner()
    listed = runner.invoke(
        app, ["jobs", "--state", "dead", "--json"], env={"ORGANELLE_APP": str(config)}
    )
    assert listed.exit_code == 0, listed.output
    assert sorted(j["id"] for j in json.loads(listed.stdout)) == sorted(ids)
    one = runner.invoke(app, ["jobs", "purge", ids[0], "--app", str(config)])
    assert (one.exit_code, one.stdout.strip()) == (0, "purged: 1")
    rest = runner.invoke(app, ["jobs", "purge", "--app", str(config)])
    assert (rest.exit_code, rest.stdout.strip()) == (0, "purged: 2")
    empty = runner.invoke(app, ["jobs", "--state", "dead", "--json", "--app", str(config)])
    assert json.loads(empty.stdout) == []
    bad = runner.invoke(app, ["jobs", "--state", "zombie", "--app", str(config)])
    assert bad.exit_code == 1
    assert "organelle.validation" in bad.stderr
    memory = runner.invoke(app, ["kv", "get", "k", "--app", str(config)])
    assert memory.exit_code == 2  # the store lives in the app's process: nothing to reach
    assert "needs a running app" in memory.stderr
    unknown = runner.invoke(app, ["jobs", "frobnicate", "--app", str(config)])
    assert unknown.exit_code == 2
    assert "unknown action 'frobnicate'" in unknown.stderr


def test_openapi_of_the_app_http_api_and_of_the_management_api(tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    runner = CliRunner()
    shop = runner.invoke(app, ["openapi", str(ROOT / "examples/shop/http.toml")])
    assert shop.exit_code == 0, shop.output
    document = json.loads(shop.stdout)
    validate(document)
    assert "/notifications" in document["paths"]
    manage = runner.invoke(app, ["openapi", "-o", str(tmp_path / "m.json")])
    assert manage.exit_code == 0, manage.output
    assert "/manage/jobs/{job_id}/retry" in json.loads((tmp_path / "m.json").read_text())["paths"]
    no_gateway = runner.invoke(app, ["openapi", str(ROOT / "examples/shop/app.toml")])
    assert no_gateway.exit_code == 2
    assert "no gateway module" in no_gateway.stderr


def test_check_validates_the_ops_section(tmp_path: Path) -> None:
    config = tmp_path / "app.toml"
    config.write_text('[kernel]\nstorage = "memory://"\n[ops]\nrole = ["ops"]\n')
    bad = CliRunner().invoke(app, ["check", str(config)])
    assert bad.exit_code == 2
    assert "ops.role" in bad.stderr
    config.write_text('[kernel]\nstorage = "memory://"\n[ops.auth.api_keys]\nnope = {id = "x"}\n')
    bad_key = CliRunner().invoke(app, ["check", str(config)])
    assert bad_key.exit_code == 2
    assert "SHA-256" in bad_key.stderr
