"""Bearer auth (operator token or tenant API key) for the admin side-port; where it may listen.

The token comes from ``[admin] token`` / ``ENGINE_ADMIN__TOKEN`` or ``[admin] token_file`` /
``ENGINE_ADMIN__TOKEN_FILE`` (a 0600 file, e.g. a systemd credential). It is compared in constant
time and never logged. Policy (decided here, documented in docs/operations.md):

* a token is configured → every route except the public ones (``/healthz``, one-click
  unsubscribe) needs ``Authorization: Bearer <token>`` or a tenant API key (``pm_live_...``,
  engine/keys/), and a key only reaches the routes its scope allows (403 otherwise);
* no token and a loopback listen address → the port is open to local processes only, and a
  warning is logged at start (convenient for ``make demo`` and a single-host setup);
* no token and any other address → the engine refuses to start (:class:`ConfigError`): an
  unauthenticated enqueue/drain API on the network is never what an operator wants.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.admin.routing import PRINCIPAL
from engine.config import AdminConfig, read_secret
from engine.errors import ConfigError
from engine.keys.service import Authenticator
from engine.keys.token import OPERATOR, Access, Principal, looks_like_key

log = logging.getLogger("engine.admin")

MIN_TOKEN_LENGTH = 16
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


def _unauthorized(what: str) -> web.Response:
    return web.json_response(
        {"error": f"{what}: send Authorization: Bearer <[admin] token or a tenant API key>"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="penguinmails-engine"'},
    )


def _forbidden(principal: Principal, access: Access) -> web.Response:
    need = "the operator token" if access is Access.OPERATOR else f"a key with scope {access}"
    return web.json_response(
        {"error": f"this route needs {need}; this key has scope {principal.scope}"}, status=403
    )


def bearer_middleware(
    token: str | None,
    authenticator: Authenticator,
    access_of: Callable[[str, str], Access | None],
) -> Middleware:
    """Who is calling: the operator token, a tenant API key, or nobody (401); then the scope.

    ``access_of(method, route pattern)`` is the route's declared access (None: no such route,
    which needs credentials like any other and then answers 404/405). The caller is stored as
    :data:`~engine.admin.routing.PRINCIPAL` for the handlers.
    """
    expected = token.encode() if token is not None else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        access = access_of(request.method, resource.canonical) if resource is not None else None
        if access is Access.PUBLIC:
            return await handler(request)
        given = _presented(request)
        principal: Principal | None
        if given is not None and looks_like_key(given):
            principal = await authenticator.authenticate(given)
            if principal is None:
                return _unauthorized("unknown, revoked or malformed API key")
        elif expected is None:
            principal = OPERATOR  # no token: the loopback-only open port (check_exposure)
        elif given is None:
            return _unauthorized("missing bearer token")
        # compare_digest: the time taken does not reveal how much of the token matched.
        elif hmac.compare_digest(given.encode(), expected):
            principal = OPERATOR
        else:
            return _unauthorized("invalid bearer token")
        if access is not None and not principal.may(access):
            return _forbidden(principal, access)
        request[PRINCIPAL] = principal
        return await handler(request)

    return auth
