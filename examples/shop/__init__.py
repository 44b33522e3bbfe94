"""shop: the organelle example app — pricing, inventory, orders, notifications and a demo.

Run it from the repository root with ``organelle run examples/shop/app.toml``;
docs/example.md walks through it.
"""
