from __future__ import annotations

import itertools
import random

from organelle.module._topicindex import TopicIndex
from organelle.module._topics import matches

TOKENS = ["a", "b", "c"]


def all_patterns(depth: int) -> list[str]:
    """Every pattern of up to ``depth`` tokens over a, b, c, ``*`` and a trailing ``>``."""
    out: list[str] = []
    for length in range(1, depth + 1):
        for combo in itertools.product([*TOKENS, "*"], repeat=length):
            out.append(".".join(combo))
            if length < depth:
                out.append(".".join([*combo, ">"]))
    return [*out, ">"]


def all_topics(depth: int) -> list[str]:
    return [
        ".".join(combo)
        for length in range(1, depth + 1)
        for combo in itertools.product(TOKENS, repeat=length)
    ]


def test_match_agrees_with_matches_on_every_pattern_and_topic() -> None:
    patterns = all_patterns(3)
    index = TopicIndex[str]()
    for pattern in patterns:
        index.add(pattern, pattern)
    assert len(index) == len(patterns)
    for topic in all_topics(4):
        expected = sorted(p for p in patterns if matches(p, topic))
        assert sorted(index.match(topic)) == expected, topic


def test_removal_takes_out_exactly_that_item_and_prunes() -> None:
    index = TopicIndex[object]()
    first, second = object(), object()
    index.add("orders.*", first)
    index.add("orders.*", second)
    index.add("orders.>", first)
    index.remove("orders.*", first)
    assert {id(x) for x in index.match("orders.paid")} == {id(first), id(second)}
    assert index.match("orders") == []
    index.remove("orders.>", first)
    index.remove("orders.*", second)
    assert index.match("orders.paid") == []
    assert len(index) == 0
    assert index._root.empty()  # no empty branches left behind
    index.remove("orders.*", second)  # absent: nothing happens
    index.remove("never.seen", first)
    assert len(index) == 0


def test_random_adds_and_removes_stay_in_step_with_a_list() -> None:
    rng = random.Random(17)
    patterns = all_patterns(3)
    topics = all_topics(4)
    index = TopicIndex[tuple[str, int]]()
    live: list[tuple[str, int]] = []
    for step in range(2_000):
        if live and rng.random() < 0.4:
            item = live.pop(rng.randrange(len(live)))
            index.remove(item[0], item)
        else:
            item = (rng.choice(patterns), step)
            live.append(item)
            index.add(item[0], item)
        if step % 50 == 0:
            topic = rng.choice(topics)
            assert sorted(index.match(topic)) == sorted(i for i in live if matches(i[0], topic))
    assert len(index) == len(live)
