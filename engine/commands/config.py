"""`engine config check [--effective]`: validate the configuration as `engine run` would and
print it with every secret masked.

The first line of stdout is ``config ok: ORIGIN`` (the file read, or ``defaults``); then one JSON
document: the keys that differ from the built-in defaults, or with ``--effective`` the whole tree
after defaults, file and ``ENGINE_*`` variables. Beyond the schema it reads every secret file
(with the permission rule of ``engine run``) and the data files the daemon loads (provider table
when shaping is on, bounce patterns), so a broken install fails here, not at the first bounce.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from engine import config as config_mod
from engine.config import Config

#: Keys whose values are secrets wherever they appear in the tree.
SECRET_KEYS = frozenset({"password", "token", "secret", "master_key", "verp_secret"})
#: Keys holding a DSN/URL that may carry a password.
URL_KEYS = frozenset({"dsn", "url"})
MASK = "***"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `config` subcommands."""
    p = sub.add_parser("config", parents=[common], help="validate and show the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser(
        "check", parents=[common], help="validate as `engine run` would; print it, secrets masked"
    )
    c.add_argument("--effective", action="store_true", help="print every key (defaults included)")
    c.set_defaults(func=cmd_check)


def mask(tree: Any) -> Any:
    """``tree`` (plain dicts and lists) with secrets replaced by ``***`` and passwords cut out of
    DSNs and URLs; the one place the config printout is redacted."""
    from engine.redaction import redact

    if isinstance(tree, list):
        return [mask(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key in SECRET_KEYS and value:
            out[key] = MASK
        elif (key in URL_KEYS or key.endswith("_url")) and isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = mask(value)
    return out


def changed(tree: Any, default: Any) -> Any:
    """The parts of ``tree`` that differ from ``default`` (tables recursed, lists whole)."""
    if not (isinstance(tree, dict) and isinstance(default, dict)):
        return tree
    out = {}
    for key, value in tree.items():
        if key not in default:
            out[key] = value
        elif value != default[key]:
            out[key] = changed(value, default[key])
    return out


def check_files(cfg: Config) -> None:
    """Read what `engine run` reads at start beyond the tree; raises ConfigError naming it."""
    from engine.inbound.patterns import load_patterns
    from engine.shaping.providers import ProviderTable

    read = config_mod.read_secret
    read(cfg.admin.token, cfg.admin.token_file, "[admin] token")
    read(cfg.dkim.master_key, cfg.dkim.master_key_file, "[dkim] master_key")
    for node in cfg.relay.nodes:
        read(node.password, node.password_file, f"relay node {node.name} password")
    if cfg.shaping.enabled:
        ProviderTable.from_config(cfg.shaping)
    load_patterns()


def cmd_check(args: argparse.Namespace) -> int:
    file = config_mod.resolve_path(args.config, os.environ)
    cfg = config_mod.load(args.config)
    check_files(cfg)
    tree = msgspec.to_builtins(cfg)
    if not args.effective:
        tree = changed(tree, msgspec.to_builtins(Config()))
    sys.stdout.write(f"config ok: {file if file is not None else 'defaults'}\n")
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(mask(tree)), indent=2).decode())
    sys.stdout.write("\n")
    return 0
