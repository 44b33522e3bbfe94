from __future__ import annotations

import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import organelle
from organelle.cli import app
from organelle.cli._target import load_app, parse_only, parse_sets
from organelle.errors import ConfigError
from tests.cli.proc import ROOT, run_once, spawn

SHOP = "examples/shop/app.toml"
APPS = ROOT / "tests" / "cli" / "apps.py"


def _line_of(text: str) -> int:
    """The line of ``tests/cli/apps.py`` that holds ``text`` (where the error is raised)."""
    lines = APPS.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


BADLY_LINE = _line_of("raise ZeroDivisionError")
BROKEN_LINE = _line_of("disk on fire")
runner = CliRunner()


def write_app(tmp_path: Path, modules: list[str], extra: str = "") -> str:
    path = tmp_path / "app.toml"
    refs = ", ".join(f'"tests.cli.apps:{m}"' for m in modules)
    path.write_text(
        f"[kernel]\npythonpath = [{str(ROOT)!r}]\nmodules = [{refs}]\n{extra}", encoding="utf-8"
    )
    return str(path)


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), prog_name="organelle")
    return result.exit_code, result.stdout, result.stderr


# version and check --------------------------------------------------------------


def test_version() -> None:
    code, out, err = cli("--version")
    assert (code, out, err) == (0, f"organelle {organelle.__version__}\n", "")


async def test_python_m_runs_the_same_command() -> None:
    code, out, _ = await run_once("--version")
    assert (code, out) == (0, f"organelle {organelle.__version__}\n")


def test_check_shop_prints_start_order_and_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = cli("check", SHOP)
    assert code == 0, err
    assert "start order (3 levels" in out
    assert "  1. pricing, inventory, notifications\n  2. orders\n  3. demo\n" in out
    assert "pricing        1.2.0" in out
    assert "orders         1.0.0" in out
    assert "requires: pricing<2,>=1.0, inventory<2,>=1.0" in out
    assert out.endswith("ok: 5 modules would start in 3 levels\n")
    assert err == ""


def test_check_only_a_subset(tmp_path: Path) -> None:
    path = write_app(tmp_path, ["Greeter", "Audience"])
    code, out, _ = cli("check", path, "--only", "greeter")
    assert code == 0
    assert "ok: 1 module would start in 1 level" in out
    code, _, err = cli("check", path, "--only", "audience")
    assert code == 2
    assert err == "error: module 'audience' requires 'greeter', which is not registered\n"


@pytest.mark.parametrize("ref", ["tests.cli.apps:kernel", "tests.cli.apps:make_kernel"])
def test_check_a_kernel_reference(ref: str) -> None:
    code, out, _ = cli("check", ref)
    assert code == 0
    assert "  1. greeter\n  2. audience\n" in out
    code, out, _ = cli("check", ref, "--only", "greeter")
    assert code == 0
    assert "audience" not in out


def test_check_a_yaml_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "app.yaml"
    path.write_text(
        f"kernel:\n  pythonpath: [{str(ROOT)!r}]\n"
        "  modules: ['tests.cli.apps:Greeter']\nmodules:\n  greeter: {times: 2}\n",
        encoding="utf-8",
    )
    code, out, err = cli("check", str(path))
    assert code == 0, err
    assert "greeter  1.4.0" in out


# errors: one line on stderr, exit 2 ---------------------------------------------------


def test_bad_config_value_is_one_line(tmp_path: Path) -> None:
    path = write_app(tmp_path, ["Greeter"], '[modules.greeter]\ntimes = "many"\n')
    code, out, err = cli("check", path)
    assert code == 2
    assert out == ""
    assert err == (
        "error: modules.greeter.times: Input should be a valid integer, "
        "unable to parse string as an integer\n"
    )


def test_cycle_is_a_dependency_error(tmp_path: Path) -> None:
    code, _, err = cli("check", write_app(tmp_path, ["CycleA", "CycleB"]))
    assert code == 2
    assert err == "error: dependency cycle: cycle-a -> cycle-b -> cycle-a\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.toml"], "error: config file 'missing.toml' does not exist"),
        (["shop"], "error: 'shop' is neither a config file (.toml, .yaml) nor a"),
        (["tests.cli.nope:kernel"], "error: cannot import 'tests.cli.nope': No module named"),
        (["tests.cli.apps:nope"], "error: 'tests.cli.apps' has no attribute 'nope'"),
        (["tests.cli.apps:not_a_kernel"], "error: tests.cli.apps:not_a_kernel is a int, not a"),
        (["tests.cli.apps:make_nothing"], "error: tests.cli.apps:make_nothing() returned int"),
        (["tests.cli.apps:make_badly"], "error: ZeroDivisionError: division by zero (at "),
        (["tests.cli.apps:kernel", "--set", "a.b=1"], "error: --set needs a config file target"),
        (["tests.cli.apps:kernel", "--only", "x"], "error: --only: no module named 'x' in this"),
        (["tests.cli.apps:kernel", "--only", "a,,b"], "error: --only 'a,,b': empty module name"),
    ],
)
def test_target_errors(args: list[str], expected: str) -> None:
    code, _, err = cli("check", *args)
    assert code == 2
    assert err.startswith(expected)
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("log_level = 'LOUD'\n", "error: kernel.log_level: unknown level 'LOUD'"),
        ("colour = 'blue'\n", "error: kernel.colour: Object contains unknown field"),
        (
            "[modules.greeterr]\nx = 1\n",
            (
                "error: modules.greeterr: the section names no module of this app (modules: "
                "greeter); did you mean [modules.greeter]?"
            ),
        ),
        ("[modules.greeter]\nloud = true\n", "error: modules.greeter.loud: unknown key"),
        ("storage = 'postgress://h/db'\n", "error: kernel.storage: unknown scheme"),
        ("[[broken\n", "error: "),
    ],
)
def test_config_file_errors(tmp_path: Path, extra: str, expected: str) -> None:
    path = write_app(tmp_path, ["Greeter"], extra)
    code, _, err = cli("check", path)
    assert code == 2
    assert err.startswith(expected)
    assert err.count("\n") == 1


def test_unknown_module_reference_in_config(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('[kernel]\nmodules = ["shop.nowhere:Thing"]\n', encoding="utf-8")
    code, _, err = cli("check", str(path))
    assert code == 2
    assert err == (
        "error: kernel.modules[0]: cannot import 'shop.nowhere': No module named 'shop.nowhere'\n"
    )


def test_traceback_flag_shows_where() -> None:
    code, _, err = cli("--traceback", "check", "tests.cli.apps:make_badly")
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.endswith(
        f"error: ZeroDivisionError: division by zero (at {APPS}:{BADLY_LINE}; "
        "run with --traceback for the full trace)\n"
    )


# overrides ---------------------------------------------------------------------------


def test_parse_sets_reads_json_values() -> None:
    assert parse_sets(
        ["modules.a.n=3", "modules.a.on=true", "modules.a.l=[1, 2]", "kernel.x=plain", "k.y="]
    ) == {
        "modules": {"a": {"n": 3, "on": True, "l": [1, 2]}},
        "kernel": {"x": "plain"},
        "k": {"y": ""},
    }
    for bad in ("novalue", "section=1", "a..b=1", "=1"):
        with pytest.raises(ConfigError, match="expected section.key=value"):
            parse_sets([bad])


def test_parse_only_splits_and_dedupes() -> None:
    assert parse_only(["a,b", "b", " c "]) == ["a", "b", "c"]


def test_set_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_app(tmp_path, ["Greeter"], "[modules.greeter]\ntimes = 1\ngreeting = 'yo'\n")
    monkeypatch.setenv("ORGANELLE__MODULES__GREETER__TIMES", "2")
    monkeypatch.setenv("ORGANELLE__MODULES__GREETER__GREETING", "hey")
    loaded = load_app(path, sets=["modules.greeter.times=3"], only=[])
    config = loaded.kernel.module("greeter").config
    assert (config.times, config.greeting) == (3, "hey")


# run: real processes, real signals -----------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_stops_gracefully_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    path = write_app(tmp_path, ["Greeter", "Audience"], "[modules.greeter]\ntimes = 2\n")
    async with spawn("run", path) as child:
        await child.wait_for(r"greeter: greeter ready: hello x2")
        await child.wait_for(r"^organelle: 2 modules active \(greeter, audience\)")
        child.signal(sig)
        code = await child.finish()
    assert code == 0, child.output
    assert f"organelle: stopping ({sig.name})" in child.lines
    assert any(line.endswith("greeter: greeter stopped cleanly") for line in child.lines)
    assert child.lines[-1].startswith("organelle: stopped in ")
    assert "Traceback" not in child.output


async def test_run_a_factory_with_only() -> None:
    async with spawn("run", "tests.cli.apps:make_kernel", "--only", "greeter") as child:
        await child.wait_for(r"greeter ready: hi x1")
        await child.wait_for(r"^organelle: 1 module active \(greeter\)")
        child.signal(signal.SIGINT)
        assert await child.finish() == 0, child.output


async def test_run_failing_start_exits_1_with_one_line(tmp_path: Path) -> None:
    code, out, err = await run_once("run", write_app(tmp_path, ["Greeter", "Broken"]))
    assert code == 1
    assert out == ""
    assert err.splitlines()[-1] == (
        "error: module 'broken': on_start failed: RuntimeError: disk on fire "
        f"(at {APPS}:{BROKEN_LINE}; run with --traceback for the full trace)"
    )
    assert "greeter stopped cleanly" in err  # what had started was stopped


async def test_run_invalid_app_exits_2_without_traceback(tmp_path: Path) -> None:
    code, out, err = await run_once("run", write_app(tmp_path, ["CycleA", "CycleB"]))
    assert (code, out) == (2, "")
    assert err == "error: dependency cycle: cycle-a -> cycle-b -> cycle-a\n"


async def test_second_signal_forces_exit(tmp_path: Path) -> None:
    async with spawn("run", write_app(tmp_path, ["SlowStop"])) as child:
        await child.wait_for(r"^organelle: 1 module active")
        child.signal(signal.SIGINT)
        await child.wait_for(r"slow: stopping takes a while")
        child.signal(signal.SIGINT)
        code = await child.finish()
    assert code == 130, child.output
    assert child.lines[-1] == (
        "organelle: forced exit on a second SIGINT; some modules may not have stopped"
    )
