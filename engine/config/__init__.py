"""The engine's configuration: one frozen msgspec tree, loaded once and validated at start.

Sources, later wins: built-in defaults < TOML file < ``ENGINE_<SECTION>__<KEY>`` environment
variables (DESIGN §8). The file is ``--config F``, else ``$ENGINE_CONFIG``, else
``/etc/penguinmails-engine/engine.toml``; a missing default file means "all defaults".

``schema`` declares the tree (sections and defaults); ``load`` reads, overrides and validates it.
"""

from __future__ import annotations

from engine.config.load import (
    apply_env,
    load,
    parse,
    read_secret,
    resolve_path,
    secret_mode_ok,
)
from engine.config.schema import (
    DEFAULT_CONFIG_PATH,
    ENV_PREFIX,
    EXAMPLE_VERP_SECRETS,
    MIN_VERP_SECRET_BYTES,
    MIN_VERP_SECRET_DISTINCT,
    SYSTEM_DATA_DIR,
    VERP_SECRET_HINT,
    AdminConfig,
    ComplianceConfig,
    Config,
    DatabaseConfig,
    DkimConfig,
    DkimKey,
    DnsConfig,
    EventsConfig,
    FblReporter,
    InboundConfig,
    LogConfig,
    QueueConfig,
    RedisConfig,
    RelayConfig,
    RelayNode,
    RetentionConfig,
    SecurityConfig,
    ShapingConfig,
    ShapingProvider,
    VerpPreviousSecret,
    data_file,
    data_file_candidates,
    packaged_data_file,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "EXAMPLE_VERP_SECRETS",
    "MIN_VERP_SECRET_BYTES",
    "MIN_VERP_SECRET_DISTINCT",
    "SYSTEM_DATA_DIR",
    "VERP_SECRET_HINT",
    "AdminConfig",
    "ComplianceConfig",
    "Config",
    "DatabaseConfig",
    "DkimConfig",
    "DkimKey",
    "DnsConfig",
    "EventsConfig",
    "FblReporter",
    "InboundConfig",
    "LogConfig",
    "QueueConfig",
    "RedisConfig",
    "RelayConfig",
    "RelayNode",
    "RetentionConfig",
    "SecurityConfig",
    "ShapingConfig",
    "ShapingProvider",
    "VerpPreviousSecret",
    "apply_env",
    "data_file",
    "data_file_candidates",
    "load",
    "packaged_data_file",
    "parse",
    "read_secret",
    "resolve_path",
    "secret_mode_ok",
]
