"""``organelle.topics``: the topic rules the kernel routes by, public for plugins that route."""

from __future__ import annotations

import pytest

from organelle.errors import ValidationError
from organelle.topics import check_topic, matches, pattern_error, topic_error


def test_patterns_match_as_the_kernel_routes() -> None:
    assert matches("order.*", "order.placed")
    assert not matches("order.*", "order.placed.eu")
    assert matches("order.>", "order.placed.eu")
    assert not matches("order.>", "order")


def test_bad_topics_and_patterns_say_why() -> None:
    assert topic_error("order.placed") is None
    assert topic_error("order.*") is not None
    assert (
        pattern_error("order.>.x") == "pattern 'order.>.x': '>' is only allowed as the last token"
    )
    assert pattern_error("a..b") is not None
    with pytest.raises(ValidationError):
        check_topic("")
