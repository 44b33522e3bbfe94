"""A pydantic model named like a msgspec Struct of models.py."""

from __future__ import annotations

import pydantic


class Clash(pydantic.BaseModel):
    b: str
