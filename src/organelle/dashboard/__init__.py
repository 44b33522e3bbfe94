"""The operator dashboard: a read-only web page and JSON API served by the gateway.

Switched on in the gateway's config, never by itself::

    [modules.gateway.dashboard]
    enabled = true
    path = "/_dashboard"        # the page; its JSON lives under /_dashboard/api/...
    roles = ["ops"]             # who may read it (the gateway's auth and RBAC)
    refresh_s = 2.0

Everything it shows comes from the kernel's introspection API — modules,
subscriptions, RPC call stats, jobs, streams, the cluster registry, health, and the
config with secrets masked. It changes nothing. See docs/dashboard.md.
"""

from __future__ import annotations

from organelle.dashboard.routes import API_VIEWS, dashboard_routes

__all__ = ["API_VIEWS", "dashboard_routes"]
