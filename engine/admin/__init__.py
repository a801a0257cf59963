"""The admin HTTP side-port (DESIGN §8): metrics, health, enqueue, search, operator actions.

aiohttp on ``[admin] listen`` (127.0.0.1:8025 by default), bearer-token auth on every route but
``/healthz``. Routes call the same service functions as the CLI (no SQL in a route). Wiring::

    ctx = AdminContext(cfg=cfg, pool=pool, streams=streams, relay=relay, drain=on_drain)
    tasks += [serve(ctx, stop), run_collector(ctx, stop)]
"""

from __future__ import annotations

from engine.admin.app import build_app
from engine.admin.collector import run_collector
from engine.admin.context import AdminContext, Probe
from engine.admin.server import AdminServer, serve

__all__ = ["AdminContext", "AdminServer", "Probe", "build_app", "run_collector", "serve"]
