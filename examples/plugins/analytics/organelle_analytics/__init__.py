"""Time-series counters as an organelle plugin: ``modules = ["analytics"]`` once it is installed.

* ``analytics.count(name, value=1, at=None)`` — adds to the counter's bucket at
  the finest resolution (one minute by default);
* ``[[modules.analytics.counters]]`` — count events: on a topic, by one or by a
  number in the payload;
* a cron job (and ``analytics.rollup(now=None)``) sums finished buckets into
  the coarser resolutions (an hour, a day) and deletes buckets older than each
  resolution keeps;
* ``analytics.query(name, since, until, resolution=None)`` — the points of a
  range, at the resolution asked or the finest that still covers ``since``.

Everything lives in the module's own Store namespace.
"""

from organelle_analytics._module import Analytics, CounterRule, Point, Resolution

__all__ = ["Analytics", "CounterRule", "Point", "Resolution"]
