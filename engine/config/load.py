"""Reading the configuration: file, environment overrides, validation, secrets (start-up only)."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from engine.config.schema import (
    _DROP_PREVIOUS,
    DEFAULT_CONFIG_PATH,
    EXAMPLE_VERP_SECRETS,
    MIN_VERP_SECRET_BYTES,
    MIN_VERP_SECRET_DISTINCT,
    VERP_SECRET_HINT,
    Config,
    EventsConfig,
    InboundConfig,
)
from engine.errors import ConfigError

_ENV_KEY = re.compile(r"^ENGINE_([A-Z0-9]+)__([A-Z0-9_]+)$")


def _parse_env_value(raw: str) -> Any:
    """Read an override as a TOML value when it is one (``5``, ``true``, ``["a"]``), else text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Return ``data`` with every ``ENGINE_<SECTION>__<KEY>`` override applied."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    sections = set(Config.__struct_fields__)
    for name, raw in env.items():
        m = _ENV_KEY.match(name)
        if not m:
            continue
        section, key = m.group(1).lower(), m.group(2).lower()
        if section not in sections:
            raise ConfigError(
                f"environment variable {name} names unknown section [{section}]",
                hint=f"known sections: {', '.join(sorted(sections))}",
            )
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}] in the config file is not a table")
        target[key] = _parse_env_value(raw)
    return out


def _describe(err: msgspec.ValidationError, origin: str) -> str:
    text = str(err)
    m = re.search(r"at `\$\.(.+)`$", text)
    where = m.group(1) if m else "the top level"
    what = text.split(" - at ")[0]
    return f"config {origin}: invalid value at {where}: {what}"


def parse(data: Mapping[str, Any], *, origin: str = "<memory>") -> Config:
    """Validate a config mapping into the frozen tree, naming the bad key on error."""
    try:
        cfg = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, origin), hint="fix the key or remove it") from None
    _check(cfg, origin)
    return _resolve_verp_secrets(cfg, origin)


def _check_relay(cfg: Config, origin: str) -> None:
    names = [n.name for n in cfg.relay.nodes]
    if len(set(names)) != len(names):
        raise ConfigError(f"config {origin}: [[relay.nodes]] names must be unique, got {names}")
    for node in cfg.relay.nodes:
        if not 0 < node.port < 65536:
            raise ConfigError(f"config {origin}: relay node {node.name!r} port {node.port} invalid")
        if node.max_connections < 1:
            raise ConfigError(f"config {origin}: relay node {node.name!r} max_connections < 1")
    fraction = cfg.relay.dsn_success_fraction
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(
            f"config {origin}: relay.dsn_success_fraction must be between 0 and 1"
            f" (a share of messages), got {fraction}"
        )


#: Why the queue and oltp tiers share the [database] server: the transactions that write them
#: together (docs/scaling.md, "Tiers on separate servers"). content and olap may live apart.
TIER_TIES: dict[str, str] = {
    "queue": "a job's state change commits with its oltp.events row (the event outbox)",
    "oltp": "events, suppressions and bounce counts commit with the queue.jobs state change",
}

#: The tiers that may name another server.
APART_TIERS = ("content", "olap")


def _check_tiers(cfg: Config, origin: str) -> None:
    """queue and oltp repeat [database]'s server; content and olap may name another one."""
    db = cfg.database
    for name, why in TIER_TIES.items():
        tier = getattr(db, name)
        for key, main in (("dsn", db.dsn), ("replica_dsn", db.replica_dsn)):
            value = getattr(tier, key)
            if value is not None and value != main:
                raise ConfigError(
                    f"config {origin}: database.{name}.{key} names another server than"
                    f" database.{key}, but the {name} tier cannot live apart: {why}",
                    hint=f"remove [database.{name}] {key}; only [database.content] and"
                    " [database.olap] may name another server (docs/scaling.md, tiers)",
                )
    for name in APART_TIERS:
        tier = getattr(db, name)
        if db.apart(name) or tier.replica_dsn in (None, db.replica_dsn):
            continue
        raise ConfigError(
            f"config {origin}: database.{name}.replica_dsn is set but database.{name}.dsn is"
            f" [database]'s server, whose replica is database.replica_dsn",
            hint=f"set [database.{name}] dsn to the tier's own server, or remove its replica_dsn",
        )
    if db.replica_retry_s <= 0:
        raise ConfigError(f"config {origin}: database.replica_retry_s must be > 0")


def _check(cfg: Config, origin: str) -> None:
    _check_relay(cfg, origin)
    _check_tiers(cfg, origin)
    if len(cfg.queue.weights) != 3 or min(cfg.queue.weights) < 1:
        raise ConfigError(f"config {origin}: queue.weights must be three positive integers")
    _check_redis(cfg, origin)
    if cfg.database.role is not None and not re.fullmatch(
        r"[a-z_][a-z0-9_]{0,62}", cfg.database.role
    ):
        raise ConfigError(
            f"config {origin}: database.role {cfg.database.role!r} is not a role name",
            hint='e.g. role = "engine_worker" (lower-case letters, digits, _)',
        )
    if cfg.database.pool_min > cfg.database.pool_max:
        raise ConfigError(f"config {origin}: database.pool_min is above database.pool_max")
    if not (cfg.admin.key_enqueue_rate_per_s > 0 and cfg.admin.key_enqueue_burst >= 1):
        raise ConfigError(
            f"config {origin}: admin.key_enqueue_rate_per_s must be > 0 and"
            " admin.key_enqueue_burst at least 1"
        )
    if cfg.queue.body_cache_mb < 1:
        raise ConfigError(
            f"config {origin}: queue.body_cache_mb must be at least 1,"
            f" got {cfg.queue.body_cache_mb}"
        )
    if cfg.dkim.signer_workers < 0:
        raise ConfigError(
            f"config {origin}: dkim.signer_workers must be 0 (one per core) or more, "
            f"got {cfg.dkim.signer_workers}"
        )
    c = cfg.compliance
    if c.throttle_rate_per_s <= 0 or c.poll_s <= 0 or c.check_interval_s <= 0:
        raise ConfigError(
            f"config {origin}: compliance.throttle_rate_per_s, poll_s and check_interval_s must be"
            ' > 0 (to stop a failing domain from sending, use on_fail = "block")'
        )
    _check_inbound_limits(cfg.inbound, origin)
    _check_webhooks(cfg.events, origin)


def _check_redis(cfg: Config, origin: str) -> None:
    r = cfg.redis
    if r.mode == "sentinel" and not r.sentinels:
        raise ConfigError(
            f'config {origin}: redis.mode = "sentinel" needs redis.sentinels',
            hint='e.g. sentinels = ["10.0.0.1:26379", "10.0.0.2:26379"] and service_name',
        )
    for addr in r.sentinels:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"config {origin}: redis.sentinels entry {addr!r} is not host:port",
                hint='e.g. "10.0.0.1:26379"',
            )
    if not 0 <= r.stream_shards <= 1024:
        raise ConfigError(
            f"config {origin}: redis.stream_shards must be 0 (automatic) to 1024,"
            f" got {r.stream_shards}"
        )
    q = cfg.queue
    if q.stream_backlog_s < 0 or q.stream_backlog_min < 1 or q.in_flight_s < 0:
        raise ConfigError(
            f"config {origin}: queue.stream_backlog_s and queue.in_flight_s must be >= 0"
            " (0: no time cap), queue.stream_backlog_min and in_flight_min at least 1"
        )
    if q.in_flight_min < 1:
        raise ConfigError(f"config {origin}: queue.in_flight_min must be at least 1")


def _check_webhooks(e: EventsConfig, origin: str) -> None:
    for cidr in e.webhook_allow_cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"config {origin}: events.webhook_allow_cidrs entry {cidr!r} is not a CIDR",
                hint='write it like "10.20.0.0/16" or "fd12:3456::/48"',
            ) from None
    for port in e.webhook_ports:
        if not 0 < port < 65536:
            raise ConfigError(f"config {origin}: events.webhook_ports entry {port} is not a port")


def _check_inbound_limits(i: InboundConfig, origin: str) -> None:
    counts = {
        "parse_workers": i.parse_workers,
        "queue_max": i.queue_max,
        "queue_max_bytes": i.queue_max_bytes,
        "max_connections": i.max_connections,
        "max_messages_per_hour_per_ip": i.max_messages_per_hour_per_ip,
        "max_bytes_per_hour_per_ip": i.max_bytes_per_hour_per_ip,
    }
    for key, value in counts.items():
        if value < 1:
            raise ConfigError(f"config {origin}: inbound.{key} must be at least 1, got {value}")
    if i.parse_cpu_budget_ms <= 0 or i.sweep_interval_s <= 0:
        raise ConfigError(
            f"config {origin}: inbound.parse_cpu_budget_ms and inbound.sweep_interval_s must be > 0"
        )
    if i.max_session_s <= 0:
        raise ConfigError(f"config {origin}: inbound.max_session_s must be > 0")


def _verp_secret(
    value: str, file: str | None, key: str, origin: str, generate: str = VERP_SECRET_HINT
) -> str:
    """One VERP secret from its inline value or file, refused when guessable."""
    file = file or None  # an empty ENGINE_..._FILE override means "no file"
    if value and file is not None:
        raise ConfigError(
            f"config {origin}: {key} and {key}_file are both set", hint="keep only one of them"
        )
    if file is not None:
        value = read_secret(None, file, key) or ""
        if not value:
            raise ConfigError(f"config {origin}: {key}_file {file} is empty", hint=generate)
    if not value:
        return ""
    if value.strip().lower() in EXAMPLE_VERP_SECRETS:
        raise ConfigError(
            f"config {origin}: {key} is an example value, public: anyone could forge bounce and"
            " unsubscribe addresses",
            hint=generate,
        )
    if len(value.encode("utf-8")) < MIN_VERP_SECRET_BYTES:
        raise ConfigError(
            f"config {origin}: {key} is shorter than {MIN_VERP_SECRET_BYTES} bytes", hint=generate
        )
    if len(set(value)) < MIN_VERP_SECRET_DISTINCT:
        raise ConfigError(
            f"config {origin}: {key} looks like a placeholder (fewer than"
            f" {MIN_VERP_SECRET_DISTINCT} distinct characters)",
            hint=generate,
        )
    return value


def _resolve_verp_secrets(cfg: Config, origin: str) -> Config:
    """Validate the VERP secrets and put the files' contents in the tree (read once, at load).

    Unset stays "" here: commands that never sign or check an address (migrate, status, dkim)
    run without one; the daemon refuses to start without it (engine/compose/verp_keys.py).
    """
    inbound = cfg.inbound
    current = _verp_secret(
        inbound.verp_secret, inbound.verp_secret_file, "[inbound] verp_secret", origin
    )
    previous = []
    for i, entry in enumerate(inbound.verp_previous, 1):
        key = f"[[inbound.verp_previous]] #{i} secret"
        secret = _verp_secret(entry.secret, entry.secret_file, key, origin, _DROP_PREVIOUS)
        if not secret:
            raise ConfigError(
                f"config {origin}: {key} is not set", hint="set secret or secret_file, and until"
            )
        previous.append(msgspec.structs.replace(entry, secret=secret))
    if current == inbound.verp_secret and previous == inbound.verp_previous:
        return cfg
    return msgspec.structs.replace(
        cfg,
        inbound=msgspec.structs.replace(inbound, verp_secret=current, verp_previous=previous),
    )


def resolve_path(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """Which file to read: explicit, $ENGINE_CONFIG, the system default if present, or none."""
    if path is not None:
        return Path(path)
    if env.get("ENGINE_CONFIG"):
        return Path(env["ENGINE_CONFIG"])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load the configuration once, at start; raises :class:`ConfigError` naming the bad key."""
    env = os.environ if env is None else env
    file = resolve_path(path, env)
    data: dict[str, Any] = {}
    origin = "defaults"
    if file is not None:
        origin = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"config file {file} does not exist", hint="pass --config or set ENGINE_CONFIG"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    return parse(apply_env(data, env), origin=origin)


def secret_mode_ok(mode: int, owner_uid: int) -> bool:
    """Whether a secret file's permissions keep it private: nothing for others and no group
    write, ever; group read only when root owns the file (``root:penguinmails 0640``, the
    packaged layout: the administrator chose the group, and the service cannot rewrite it)."""
    if mode & 0o037:
        return False
    return not (mode & 0o040) or owner_uid == 0


def read_secret(value: str | None, file: str | None, what: str) -> str | None:
    """A secret given inline or as a file path; the file must be private (``secret_mode_ok``)."""
    if file is None:
        return value
    p = Path(file)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} file {file} cannot be read: {exc.strerror or exc}") from None
    if not secret_mode_ok(st.st_mode, st.st_uid):
        raise ConfigError(
            f"{what} file {file} is readable by group/others",
            hint=f"chmod 600 {file} (or chown root:GROUP and chmod 640 for the service's group)",
        )
    try:
        return p.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            f"{what} file {file} is not UTF-8 text", hint="write the secret as hex or base64"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} file {file} cannot be read: {exc.strerror or exc}") from None
