"""Rules in config as an organelle plugin: ``modules = ["automation"]`` once it is installed.

::

    [[modules.automation.rules]]
    name = "big-order"
    on = "order.created"                       # a topic pattern (*, >)
    when = "data.total > `100`"                # a JMESPath condition on {topic, data}
    call = "notifications.send"                # or: emit = "topic", or: enqueue = "module.job"
    # "=…": JMESPath on the event (here: the payload becomes the template's params)
    params = { to = "ops@example.com", template = "big-order", params = "=data" }

Rules are checked when the config loads and on every reload (a bad one
rejects the whole reload), and apply from the next event on: no restart.
The module's manifest declares the events it may hear and the targets it
may reach; ``allow`` in its config narrows them per app.
"""

from organelle_automation._module import Automation
from organelle_automation._rules import Rule, RuleStats

__all__ = ["Automation", "Rule", "RuleStats"]
