"""The operator dashboard: a web page, its JSON API and its actions, served by the gateway.

Switched on in the gateway's config, never by itself::

    [modules.gateway.dashboard]
    enabled = true
    path = "/_dashboard"        # the page; its JSON lives under /_dashboard/api/...
    roles = ["ops"]             # who may read it (the gateway's auth and RBAC)
    action_roles = ["ops"]      # who may act: retry / purge jobs, reload, sagas, flags
    refresh_s = 2.0

Everything it shows comes from the kernel's introspection API — modules,
subscriptions, RPC call stats, jobs, streams, the cluster registry, health, and the
config with secrets masked, feature flags; charts come from a ring of samples
kept in memory. Actions (``POST <path>/api/actions/<name>``) go through the
kernel's own operator API (``kernel.jobs``, ``reload_module``,
``reload_config``, ``kernel.sagas``, ``kernel.flags``). See docs/dashboard.md.
"""

from __future__ import annotations

from organelle.dashboard.routes import ACTIONS, API_VIEWS, dashboard_routes

__all__ = ["ACTIONS", "API_VIEWS", "dashboard_routes"]
