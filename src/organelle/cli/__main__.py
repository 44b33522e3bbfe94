"""``python -m organelle.cli``: the same command as the ``organelle`` script."""

from __future__ import annotations

from organelle.cli import main

if __name__ == "__main__":
    main()
