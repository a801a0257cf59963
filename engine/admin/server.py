"""Run the admin app on ``[admin] listen`` until the daemon stops."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from engine.admin.app import build_app
from engine.admin.auth import check_exposure, parse_listen, resolve_token
from engine.admin.context import AdminContext
from engine.errors import ConfigError

log = logging.getLogger("engine.admin")

SHUTDOWN_TIMEOUT_S = 5.0


class AdminServer:
    """The side-port's listening socket; ``start()`` returns the bound (host, port)."""

    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx
        self.listen = ctx.cfg.admin.listen
        token = resolve_token(ctx.cfg.admin)
        check_exposure(self.listen, token)  # before binding: refuse an open network port
        self._app = build_app(ctx, token=token)
        # access_log=None: aiohttp's own access log is replaced by the `observe` middleware.
        self._runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        host, port = parse_listen(self.listen)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"admin API cannot listen on {self.listen}: {exc.strerror or exc}",
                hint="another process holds the port; change [admin] listen",
            ) from None
        bound_port = next((int(a[1]) for a in self._runner.addresses), port)  # port 0: the real one
        bound = (host, bound_port)
        self.address = bound
        log.info("admin API listening", extra={"listen": f"{bound[0]}:{bound[1]}"})
        return bound

    async def close(self) -> None:
        await self._runner.cleanup()


async def serve(ctx: AdminContext, stop: asyncio.Event) -> None:
    """Serve the admin API until ``stop`` is set (no-op when ``[admin] enabled = false``).

    Raises :class:`ConfigError` at start when the port cannot be bound or is exposed without a
    token; requests under way get :data:`SHUTDOWN_TIMEOUT_S` to finish at stop.
    """
    if not ctx.cfg.admin.enabled:
        log.info("admin API disabled ([admin] enabled = false)")
        return
    server = AdminServer(ctx)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.close()
