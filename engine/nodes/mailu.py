"""``engine mailu overrides``: the engine's provider table → a MailU node's override files.

Reads the provider table the shaper uses (the packaged or ``/etc`` ``providers.toml`` merged
with ``[[shaping.providers]]``) and routes each ``[dns.overrides]`` domain to the provider its
MX rolls up to; :mod:`engine.nodes.overrides` renders the files.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import Config
from engine.errors import UsageError
from engine.nodes.overrides import DEFAULT_DELAY_WARNING, MailuOverrides, render_overrides
from engine.shaping.providers import ProviderTable

__all__ = ["mailu_overrides", "write_overrides"]


def mailu_overrides(
    cfg: Config, *, delay_warning_time: str = DEFAULT_DELAY_WARNING
) -> MailuOverrides:
    """The override files for this config's providers."""
    table = ProviderTable.from_config(cfg.shaping)
    extra: dict[str, list[str]] = {}
    for domain, hosts in cfg.dns.overrides.items():
        if hosts:
            name = table.match(hosts[0]).name
            if name in table.entries:
                extra.setdefault(name, []).append(domain)
    return render_overrides(table.entries.values(), extra, delay_warning_time=delay_warning_time)


def write_overrides(overrides: MailuOverrides, directory: Path) -> list[Path]:
    """Write the files into ``directory`` (MailU's overrides directory); returns their paths."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory", hint="create it, or pick MailU's")
    written = []
    for name, text in overrides.files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
