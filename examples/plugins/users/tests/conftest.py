"""Run the plugin's tests from a checkout: its folder on ``sys.path``, as ``pip install -e .``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
