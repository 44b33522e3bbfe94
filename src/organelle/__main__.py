"""``python -m organelle``: the ``organelle`` command, for when the script is not on PATH."""

from __future__ import annotations

from organelle.cli import main

if __name__ == "__main__":
    main()
