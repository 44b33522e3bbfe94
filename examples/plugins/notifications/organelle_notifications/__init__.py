"""Email as an organelle plugin: ``modules = ["notifications"]`` once it is installed.

* ``notifications.send(to, template, params)`` — renders a template from the
  config and queues the message; a durable job delivers it through SMTP,
  retrying transient failures with exponential backoff;
* ``[[modules.notifications.subscriptions]]`` — on an event, send a template
  to an address taken from the event's payload;
* ``notifications.get(id)`` / ``notifications.messages()`` — the record of
  each message (status, attempts, last error), kept in the module's own Store
  namespace.

The manifest lets it hear events and emit ``notifications.>`` and nothing else.
"""

from organelle_notifications._module import Message, Notifications
from organelle_notifications._templates import EmailTemplate, Subscription

__all__ = ["EmailTemplate", "Message", "Notifications", "Subscription"]
