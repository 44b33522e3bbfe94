"""Types the contract tests' modules use: module-level, so type hints resolve."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Literal

import msgspec
import pydantic


class Quote(msgspec.Struct):
    sku: str
    price: float


class QuoteMore(msgspec.Struct):
    """Quote with an optional field added."""

    sku: str
    price: float
    currency: str = "EUR"


class QuoteLess(msgspec.Struct):
    """Quote without its required price."""

    sku: str


class QuoteStrict(msgspec.Struct, forbid_unknown_fields=True):
    sku: str


class Line(pydantic.BaseModel):
    sku: str
    qty: int = 1


class LineNote(pydantic.BaseModel):
    """Line with an optional note."""

    sku: str
    qty: int = 1
    note: str | None = None


class LineStrictQty(pydantic.BaseModel):
    """Line whose qty must now be positive."""

    sku: str
    qty: Annotated[int, pydantic.Field(gt=0)] = 1


class LineTextQty(pydantic.BaseModel):
    sku: str
    qty: str = "1"


@dataclasses.dataclass
class Shipped:
    order_id: str
    items: list[str]


@dataclasses.dataclass
class ShippedAt:
    """Shipped with a new required field."""

    order_id: str
    items: list[str]
    carrier: str


class Tree(msgspec.Struct):
    label: str
    children: list[Tree] = []


class TreeInt(msgspec.Struct):
    label: int
    children: list[TreeInt] = []


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class MoreColour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


Mode = Literal["fast", "slow"]
MoreMode = Literal["fast", "slow", "auto"]
Positive = Annotated[int, msgspec.Meta(ge=0)]


class Opaque:
    """A return type neither msgspec nor pydantic can describe."""


# Same class name as the pydantic model in clash.py: the snapshot must keep both apart.
class Clash(msgspec.Struct):
    a: int
