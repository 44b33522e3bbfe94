from __future__ import annotations

import time

from organelle.context import Context, context, current_context, root_context


def test_root_context_ids() -> None:
    ctx = root_context(None)
    assert ctx.request_id == ctx.correlation_id
    assert ctx.causation_id is None
    assert ctx.remaining_s() is None


def test_child_links_to_cause_and_root() -> None:
    root = root_context(time.monotonic() + 10, meta={"tenant": "t1"})
    child = root.child(root.deadline)
    grandchild = child.child(child.deadline, meta={"extra": 1})
    assert child.causation_id == root.request_id
    assert grandchild.causation_id == child.request_id
    assert grandchild.correlation_id == root.request_id
    assert len({root.request_id, child.request_id, grandchild.request_id}) == 3
    assert grandchild.meta == {"tenant": "t1", "extra": 1}
    assert root.meta == {"tenant": "t1"}


def test_ids_from_the_wire_are_kept() -> None:
    ctx = Context("abc", None, "corr-1", "cause-1")
    assert ctx.request_id == "abc"
    assert ctx.correlation_id == "corr-1"
    assert ctx.child(None).correlation_id == "corr-1"


def test_context_outside_handler_is_fresh_root() -> None:
    assert current_context() is None
    a, b = context(), context()
    assert a.request_id != b.request_id
