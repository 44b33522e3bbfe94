"""Topic names and NATS-style wildcard patterns, for code that routes events itself.

The kernel routes ``@on`` handlers on its own; a plugin that keeps rules
of its own (automation triggers, notification templates, analytics filters)
checks and matches topics with the same rules through this module:
``*`` matches exactly one dot-separated token, ``>`` one or more trailing
tokens, and emitted topics never contain wildcards.
"""

from __future__ import annotations

from organelle.module._topics import check_topic, matches, pattern_error, topic_error

__all__ = ["check_topic", "matches", "pattern_error", "topic_error"]
