"""Wildcard patterns indexed by token, so matching a topic costs its length, not their number.

A flat list of patterns makes every new topic a scan of all of them: with a
wildcard subscription per module, starting 5,000 modules (each announcing its
state on a fresh route) took quadratic time. Here patterns sit in a trie of
their tokens; a topic walks its own tokens, branching only at ``*`` and
collecting ``>`` on the way, with the NATS rules of ``matches``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["TopicIndex"]

T = TypeVar("T")


class _TrieNode(Generic[T]):
    __slots__ = ("children", "items", "tail")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode[T]] = {}  # by token, ``*`` included
        self.items: list[T] = []  # patterns that end here
        self.tail: list[T] = []  # patterns whose next token is ``>``

    def empty(self) -> bool:
        return not (self.children or self.items or self.tail)


class TopicIndex(Generic[T]):
    """Items keyed by subscription pattern; ``match(topic)`` returns those whose pattern matches.

    Example::

        index = TopicIndex[str]()
        index.add("orders.*", "a")
        index.add("orders.>", "b")
        index.match("orders.paid")  # ["b", "a"] (in no particular order)
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _TrieNode[T] = _TrieNode()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str, item: T) -> None:
        """Index ``item`` under ``pattern`` (a valid pattern, see ``pattern_error``)."""
        node = self._root
        for token in pattern.split("."):
            if token == ">":  # noqa: S105 - a wildcard, not a password
                node.tail.append(item)
                break
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _TrieNode()
            node = child
        else:
            node.items.append(item)
        self._size += 1

    def remove(self, pattern: str, item: T) -> None:
        """Remove ``item`` (the same object) from ``pattern``; empty branches are pruned."""
        path: list[tuple[_TrieNode[T], str]] = []
        node = self._root
        for token in pattern.split("."):
            if token == ">":  # noqa: S105 - a wildcard, not a password
                bucket = node.tail
                break
            child = node.children.get(token)
            if child is None:
                return
            path.append((node, token))
            node = child
        else:
            bucket = node.items
        for i, found in enumerate(bucket):
            if found is item:
                del bucket[i]
                self._size -= 1
                break
        else:
            return
        while path and node.empty():
            parent, token = path.pop()
            del parent.children[token]
            node = parent

    def match(self, topic: str) -> list[T]:
        """Every item whose pattern matches ``topic`` (a topic has no wildcards)."""
        tokens = topic.split(".")
        last = len(tokens)
        found: list[T] = []
        stack: list[tuple[_TrieNode[T], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == last:
                found += node.items
                continue
            found += node.tail  # ``>`` takes one or more tokens: there is at least one left
            children = node.children
            token = tokens[i]
            child = children.get(token)
            if child is not None:
                stack.append((child, i + 1))
            if token != "*":  # noqa: S105 - a wildcard, not a password
                star = children.get("*")
                if star is not None:
                    stack.append((star, i + 1))
        return found
