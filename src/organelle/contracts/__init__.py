"""Contract snapshots and a backward-compatibility check between two versions of an app.

``snapshot(kernel)`` describes every module's public contract (RPC methods,
jobs, event subscriptions and stream consumers, with JSON Schemas) and the
app's ``@event`` types (version, data schema, upcasters) as plain JSON-able
data; ``compare(old, new)`` lists what changed and which changes would break
a client of the old version — or leave old events unreadable. The ``organelle contract`` command
wraps both for CI. ``asyncapi(kernel)`` describes the same handlers as an
AsyncAPI 3.0 document of the app's NATS subjects (``organelle asyncapi``).

Not imported by ``import organelle``: only by the command and by those who ask.

Example::

    from organelle.contracts import compare, loads, snapshot

    old = loads(Path("contract.json").read_text())
    for change in compare(old, snapshot(kernel)):
        print(change)   # breaking: pricing.quote(qty): became required: ...
"""

from __future__ import annotations

from organelle.contracts._asyncapi import ASYNCAPI, asyncapi
from organelle.contracts._compare import ContractChange, compare
from organelle.contracts._format import FORMAT, dumps, loads
from organelle.contracts._snapshot import snapshot, specs_of

__all__ = [
    "ASYNCAPI",
    "FORMAT",
    "ContractChange",
    "asyncapi",
    "compare",
    "dumps",
    "loads",
    "snapshot",
    "specs_of",
]
