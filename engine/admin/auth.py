"""Bearer-token auth for the admin side-port, and the rule for where it may listen.

The token comes from ``[admin] token`` / ``ENGINE_ADMIN__TOKEN`` or ``[admin] token_file`` /
``ENGINE_ADMIN__TOKEN_FILE`` (a 0600 file, e.g. a systemd credential). It is compared in constant
time and never logged. Policy (decided here, documented in docs/operations.md):

* a token is configured → every route except ``/healthz`` needs ``Authorization: Bearer <token>``;
* no token and a loopback listen address → the port is open to local processes only, and a
  warning is logged at start (convenient for ``make demo`` and a single-host setup);
* no token and any other address → the engine refuses to start (:class:`ConfigError`): an
  unauthenticated enqueue/drain API on the network is never what an operator wants.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.config import AdminConfig, read_secret
from engine.errors import ConfigError

log = logging.getLogger("engine.admin")

MIN_TOKEN_LENGTH = 16
PUBLIC_PATHS = frozenset({"/healthz"})
# One-click unsubscribe links carry their own HMAC token (engine/admin/routes/unsubscribe.py).
PUBLIC_PREFIXES = ("/v1/unsubscribe/",)
_GENERATE = "generate one with: openssl rand -hex 32"


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); raises :class:`ConfigError` when invalid."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ConfigError(f"[admin] listen {listen!r} is not host:port", hint="e.g. 127.0.0.1:8025")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; names other than localhost count as remote."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(cfg: AdminConfig) -> str | None:
    """The configured token (file wins over inline), or None; refuses short tokens."""
    token = read_secret(cfg.token, cfg.token_file, "[admin] token")
    if token is None or not token.strip():
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"[admin] token is shorter than {MIN_TOKEN_LENGTH} characters", hint=_GENERATE
        )
    return token


def check_exposure(listen: str, token: str | None) -> None:
    """Refuse an unauthenticated admin port on anything but loopback."""
    host, port = parse_listen(listen)
    if token is not None:
        return
    if not is_loopback(host):
        raise ConfigError(
            f"[admin] listen {listen} is not a loopback address and no admin token is set",
            hint=f"set [admin] token_file (or ENGINE_ADMIN__TOKEN); {_GENERATE}",
        )
    log.warning(
        "admin API has no token: open to every local process on this host",
        extra={"listen": f"{host}:{port}"},
    )


def _presented(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def bearer_middleware(token: str | None) -> Middleware:
    """A middleware answering 401 (JSON) unless the request carries the token."""
    expected = token.encode() if token is not None else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            expected is None
            or request.path in PUBLIC_PATHS
            or request.path.startswith(PUBLIC_PREFIXES)
        ):
            return await handler(request)
        given = _presented(request)
        # compare_digest: the time taken does not reveal how much of the token matched.
        if given is None or not hmac.compare_digest(given.encode(), expected):
            what = "missing bearer token" if given is None else "invalid bearer token"
            return web.json_response(
                {"error": f"{what}: send Authorization: Bearer <[admin] token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="penguinmails-engine"'},
            )
        return await handler(request)

    return auth
