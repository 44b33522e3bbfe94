"""The README stays true: its example runs, its two commands are the ones CI and tests use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
RUN_LINE = "pip install -e '.[all]' && organelle run examples/shop/app.toml"
TEST_LINE = "pip install -e '.[all,dev]' && python -m pytest -n 2 --dist loadfile"


def test_the_two_commands_are_in_the_readme_and_ci() -> None:
    shell_blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    assert [b.strip() for b in shell_blocks] == [RUN_LINE, TEST_LINE]
    assert TEST_LINE in (ROOT / ".ci" / "run").read_text()


async def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)[0]
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    await namespace["main"]()
    assert capsys.readouterr().out.strip() == "21.98"
