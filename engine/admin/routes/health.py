"""``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics``."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.admin.context import AdminContext, Probe
from engine.admin.routing import Route, ctx_of, json_response
from engine.admin.schemas import Health, Readiness
from engine.keys.token import Access
from engine.metrics import scrape_registry
from engine.redaction import redact
from engine.store.pool import ping

PROBE_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    return json_response(Health("ok"))


def builtin_probes(ctx: AdminContext) -> list[Probe]:
    """PostgreSQL answers ``SELECT 1``, Redis answers ``PING``, one relay node is reachable."""

    async def postgresql() -> object:
        return await ping(ctx.pool)

    async def redis() -> object:
        return await ctx.streams.client.ping()

    async def relay() -> object:
        statuses = await ctx.relay.check_health()
        up = [s.name for s in statuses if s.healthy]
        if not up:
            detail = "; ".join(f"{s.name}: {s.last_error or s.breaker}" for s in statuses)
            raise ConnectionError(f"no relay node reachable ({detail or 'none configured'})")
        return f"{len(up)}/{len(statuses)} nodes reachable"

    return [("postgresql", postgresql), ("redis", redis), ("relay", relay)]


async def _run(probe: Probe) -> tuple[str, bool, str]:
    name, check = probe
    try:
        detail = await asyncio.wait_for(check(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return name, False, f"error: no answer within {PROBE_TIMEOUT_S:.0f}s"
    except Exception as exc:  # a failed probe is the answer, not an error of the endpoint
        return name, False, redact(f"error: {exc or type(exc).__name__}")
    return name, True, detail if isinstance(detail, str) else "ok"


async def readyz(request: web.Request) -> web.Response:
    """200 when every probe passed; 503 naming what failed (or that a drain is under way)."""
    ctx = ctx_of(request)
    results = await asyncio.gather(*(_run(p) for p in [*builtin_probes(ctx), *ctx.ready]))
    checks = {name: detail for name, _, detail in results}
    ok = all(passed for _, passed, _ in results) and not ctx.draining
    body = Readiness(ready=ok, draining=ctx.draining, checks=checks)
    return json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(scrape_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


ROUTES = [
    Route(
        "GET",
        "/healthz",
        healthz,
        "The process is alive (no dependency checked; no token needed)",
        "health",
        responses={200: Health},
        access=Access.PUBLIC,
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "PostgreSQL, Redis and at least one relay node reachable, and not draining",
        "health",
        responses={200: Readiness, 503: Readiness},
        access=Access.OPERATOR,
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (text exposition format)",
        "health",
        responses={200: None},
        media_type="text/plain",
        access=Access.OPERATOR,
    ),
]
