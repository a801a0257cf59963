"""What a SIGHUP may change in a running daemon, and what waits for a restart (sans-IO).

Live: ``[log]``, ``[shaping]`` (limits, providers, pause thresholds, AIMD, warm-up plan; not
``enabled``), ``[compliance]`` and ``[retention]`` (read by their background tasks every round),
and ``[[inbound.fbl_reporters]]``.
Everything else is bound at start-up to a socket, a pool, a process or a secret (listen
addresses, the database DSN, the Redis URL and prefix, relay nodes, worker counts, DKIM keys,
``[inbound]``, ``[queue]``, ...): a reload that changes it keeps the running value and names the
key, so the operator knows a restart is due.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.config import Config

#: Sections a reload applies.
LIVE_SECTIONS = ("log", "shaping", "compliance", "retention")
#: Keys inside a live section that still need a restart: shaping on/off decides which objects
#: the daemon builds at start (the Redis limiter, the shaping tasks).
RESTART_KEYS = frozenset({"shaping.enabled"})
#: Keys of other sections a reload applies: the feedback-loop reporters whose complaints are
#: believed (the daemon rebuilds the listener's trust with them).
LIVE_KEYS = frozenset({"inbound.fbl_reporters"})


class ReloadPlan(msgspec.Struct, frozen=True):
    """The configuration to run after a reload and what differs from the running one."""

    config: Config  # the new live values, the running values of everything else
    applied: list[str]  # dotted keys that change now
    refused: list[str]  # dotted keys that changed in the file and wait for a restart


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (lists and tables compare as one value)."""
    if not isinstance(old, msgspec.Struct) or type(old) is not type(new):
        return [prefix] if old != new else []
    out: list[str] = []
    for name in old.__struct_fields__:
        key = f"{prefix}.{name}" if prefix else name
        out += changed_keys(getattr(old, name), getattr(new, name), key)
    return out


def is_live(key: str) -> bool:
    """Does a reload apply this dotted key?"""
    if key in LIVE_KEYS:
        return True
    return key.split(".", 1)[0] in LIVE_SECTIONS and key not in RESTART_KEYS


def _take(running: Any, loaded: Any, path: list[str]) -> Any:
    """``running`` with the setting at ``path`` taken from ``loaded``."""
    name, *rest = path
    value = getattr(loaded, name)
    if rest:
        value = _take(getattr(running, name), value, rest)
    return msgspec.structs.replace(running, **{name: value})


def plan(running: Config, loaded: Config) -> ReloadPlan:
    """Split the differences between ``running`` and ``loaded`` into applied and refused."""
    changed = changed_keys(running, loaded)
    applied = [k for k in changed if is_live(k)]
    config = running
    for key in applied:
        config = _take(config, loaded, key.split("."))
    return ReloadPlan(
        config=config, applied=applied, refused=[k for k in changed if k not in applied]
    )
