"""The ``organelle`` command: run or check an app.

Only the entry points import this package (the ``organelle`` script and
``python -m organelle.cli``), so ``import organelle`` never pays for typer
and rich.
"""

from __future__ import annotations

from organelle.cli._app import app, main

__all__ = ["app", "main"]
