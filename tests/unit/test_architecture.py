"""The layering rules of docs/architecture.md, checked on the source with ``ast``.

Each rule is a table: which engine packages a package may import (the one-way arrows), which
modules must stay sans-IO, and which modules may hold SQL. Every import follows the arrows
(no known exceptions): a new sideways import fails, and the fix is to move the code to the
layer that owns it, or to change the rule here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"

#: Package (or top-level module) of engine/ -> the engine packages it may import.
#: A package always may import itself. Keep in step with docs/architecture.md, "Layers".
ALLOWED: dict[str, frozenset[str]] = {
    name: frozenset(deps.split())
    for name, deps in {
        # Foundation: imported by everyone, imports (almost) nothing.
        "errors": "",
        "config": "errors",
        "model": "errors",
        "metrics": "",
        "logs": "redaction",
        "redaction": "",
        "sdnotify": "",
        "looplag": "metrics",
        "backoff": "",
        "luascript": "",
        "gcra": "",
        "periodic": "backoff metrics",
        "workerpipe": "",
        "workerspawn": "workerpipe",
        "psl": "",
        "resolver": "errors",
        "reload": "config",
        "smtp": "",
        # Storage layer.
        "store": "config errors model redaction",
        "audit": "errors store",
        # Sans-IO cores (each with its I/O edge modules).
        "compose": "config errors model",
        "dkim": "config errors psl resolver workerpipe workerspawn",
        "shaping": "config errors gcra luascript model periodic psl resolver smtp",
        "relay": "config errors luascript model periodic smtp",
        "nodes": "compose config errors relay shaping smtp",
        "compliance": "compose config dkim errors model psl resolver senders shaping store",
        # Services over the storage layer.
        "events": "backoff config errors luascript metrics model periodic store",
        "tenancy": "compose errors model psl store",
        "enqueue": "compose errors events metrics model psl store tenancy",
        "queue": "config errors luascript metrics model periodic redaction store",
        "gdpr": "audit errors model store",
        "retention": "audit config errors store",
        "olap_drain": "periodic store",
        "senders": "audit config events store",
        "client": "config enqueue model store",
        "campaigns": "compose errors model store",
        "keys": "audit errors gcra luascript store",
        "messages": "audit compose enqueue errors model smtp store",
        # The two pipelines: sending and receiving.
        "dispatch": "backoff compose config dkim errors events metrics model periodic queue relay"
        " senders shaping smtp store",
        "inbound": "audit backoff compliance compose config dkim errors events metrics model"
        " resolver shaping smtp store workerpipe workerspawn",
        # Operator surfaces.
        "admin": "audit campaigns compose config enqueue errors events inbound keys messages"
        " metrics model nodes periodic queue redaction relay senders store tenancy",
        # Entry points: the only modules that may import the daemon, the supervisor and the CLI.
        "daemon": "admin compliance compose config dispatch dkim errors events inbound logs"
        " looplag olap_drain periodic queue relay reload resolver retention sdnotify shaping store",
        "supervisor": "metrics sdnotify",
        "servers": "errors",
        "sink": "",
        "demo": "config dkim enqueue errors redaction servers sink store tenancy",
        "commands": "audit campaigns compliance compose config daemon demo dkim enqueue errors gdpr"
        " inbound keys logs messages model nodes queue redaction resolver retention senders shaping"
        " store"
        " supervisor tenancy",
        "cli": "errors redaction",  # and engine.commands.<group>, loaded by name (importlib)
        "__main__": "cli",
    }.items()
}

#: Modules that must not do I/O: they import no asyncio, database, Redis, HTTP, SMTP, socket
#: or DNS library, directly or through another engine module.
SANS_IO: tuple[str, ...] = (
    "engine.compose",
    "engine.compose._base36",
    "engine.compose.address",
    "engine.compose.headers",
    "engine.compose.message_id",
    "engine.compose.mime",
    "engine.compose.unsubscribe",
    "engine.compose.validate",
    "engine.compose.verp",
    "engine.compose.template",
    "engine.dkim.canon",
    "engine.dkim.sign",
    "engine.dkim.verify",
    "engine.shaping.aimd",
    "engine.shaping.clock",
    "engine.gcra",
    "engine.shaping.keys",
    "engine.shaping.model",
    "engine.shaping.reputation",
    "engine.shaping.signals",
    "engine.shaping.warmup",
    "engine.relay.breaker",
    "engine.relay.dsn",
    "engine.relay.replies",
    "engine.relay.results",
    "engine.relay.select",
    "engine.relay.transaction",
    "engine.relay.wire",
    "engine.smtp.codes",
    "engine.nodes.report",
    "engine.nodes.overrides",
    "engine.inbound",
    "engine.inbound.arf",
    "engine.inbound.autoreply",
    "engine.inbound.classify",
    "engine.inbound.dsn",
    "engine.inbound.evidence",
    "engine.inbound.hints",
    "engine.inbound.htmltext",
    "engine.inbound.limits",
    "engine.inbound.message",
    "engine.inbound.mime",
    "engine.inbound.nonstandard",
    "engine.inbound.original",
    "engine.inbound.parse",
    "engine.inbound.patterns",
    "engine.inbound.phrases",
    "engine.inbound.rawcuts",
    "engine.inbound.reasons",
    "engine.inbound.recipients",
    "engine.inbound.report",
    "engine.inbound.ses",
    "engine.inbound.smtpdata",
    "engine.inbound.smtpstage",
    "engine.inbound.textscan",
    "engine.compliance.dmarc",
    "engine.relay.ip_warmup",
    "engine.relay.tenant_pools",
    "engine.events.model",
    "engine.events.signature",
    "engine.gdpr.pseudonym",
    "engine.gdpr.scan",
    "engine.backoff",
    "engine.model",
    "engine.errors",
)

#: Third-party and stdlib top-level modules that mean I/O.
_IO = "aiohttp aiosmtpd aiosmtplib asyncio asyncpg dns http redis selectors socket ssl subprocess"
IO_LIBRARIES = frozenset(f"{_IO} urllib uvloop".split())
#: Submodules of those that only compute on strings (urllib.request is urllib's I/O part).
PURE_SUBMODULES = frozenset({"urllib.parse"})

#: Engine modules a sans-IO module may reach although they import an I/O library, and why.
KNOWN_SANS_IO_EXCEPTIONS: dict[str, str] = {}

#: SQL statements (a string constant or f-string that starts like one).
_SQL = re.compile(
    r"\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w|DELETE\s+FROM|WITH\s+\w+\s+AS|COPY\s|LOCK\s+TABLE"
    r"|TRUNCATE|CREATE\s|ALTER\s|DROP\s|NOTIFY\s|LISTEN\s)"
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_modules()[name].read_text(encoding="utf-8"))


def _imports(name: str) -> Iterator[str]:
    """Every module ``name`` imports (anywhere in the file), engine ones resolved to modules."""
    modules = _modules()
    is_package = modules[name].name == "__init__.py"
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in modules else source


def _engine_imports(name: str) -> set[str]:
    modules = _modules()
    return {t for t in _imports(name) if t in modules and t != "engine"}


def _unit(name: str) -> str:
    """The package (or top-level module) a module belongs to: engine.a.b -> a."""
    return name.split(".")[1]


def test_the_import_graph_is_read() -> None:
    assert "engine.dispatch.worker" in _modules()
    assert "engine.store.jobs" in _engine_imports("engine.dispatch.worker")
    assert "engine.compose.verp_keys" in _engine_imports("engine.dispatch.worker")


def test_every_package_is_placed_in_a_layer() -> None:
    units = {_unit(m) for m in _modules() if m != "engine"}
    missing = sorted(units - ALLOWED.keys())
    assert not missing, (
        f"engine packages/modules with no row in ALLOWED: {missing}; add each to "
        "tests/unit/test_architecture.py and docs/architecture.md with the packages it may import"
    )


def test_imports_follow_the_arrows() -> None:
    leaks = []
    for name in _modules():
        if name == "engine":
            continue
        unit = _unit(name)
        for target in sorted(_engine_imports(name)):
            other = _unit(target)
            if other != unit and other not in ALLOWED.get(unit, frozenset()):
                leaks.append(f"{name} -> {target}")
    assert not leaks, (
        "imports against the layering of docs/architecture.md (move the code to the layer "
        "that owns it, or change the rule there and in ALLOWED):\n  " + "\n  ".join(leaks)
    )


def test_the_allowed_arrows_have_no_cycle() -> None:
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in path, f"cycle in ALLOWED: {' -> '.join((*path, unit))}"
        if unit in done:
            return
        for dep in ALLOWED.get(unit, frozenset()):
            visit(dep, (*path, unit))
        done.add(unit)

    for unit in ALLOWED:
        visit(unit, ())


def test_nothing_imports_the_entry_points() -> None:
    """Only the CLI layer imports ``engine.cli``, ``engine.commands`` and ``engine.daemon``."""
    entry = {"cli", "commands", "daemon", "supervisor", "demo", "__main__"}
    offenders = [
        f"{name} -> {target}"
        for name in _modules()
        if name != "engine" and _unit(name) not in entry
        for target in _engine_imports(name)
        if _unit(target) in entry
    ]
    assert not offenders, offenders


def _io_imports(name: str) -> set[str]:
    return {t.split(".")[0] for t in _imports(name) if t not in PURE_SUBMODULES} & IO_LIBRARIES


def test_sans_io_modules_import_no_io() -> None:
    modules = _modules()
    failures = []
    for root in SANS_IO:
        assert root in modules, f"SANS_IO names {root}, which does not exist"
        seen: set[str] = set()
        todo = [(root, (root,))]
        while todo:
            name, path = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in KNOWN_SANS_IO_EXCEPTIONS:
                continue
            io = _io_imports(name)
            if io:
                failures.append(f"{' -> '.join(path)} imports {sorted(io)}")
            todo.extend((t, (*path, t)) for t in _engine_imports(name))
    assert not failures, "sans-IO modules reaching I/O:\n  " + "\n  ".join(failures)


def _in_storage_layer(name: str) -> bool:
    return name.startswith("engine.store.") or name.endswith(".store")


def _holds_sql(name: str) -> bool:
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
        else:
            continue
        if _SQL.match(text):
            return True
    return False


def test_sql_lives_in_the_storage_layer() -> None:
    outside = sorted(
        name for name in _modules() if not _in_storage_layer(name) and _holds_sql(name)
    )
    assert not outside, (
        f"SQL outside engine/store/ and the packages' store.py: {outside}; move the statements "
        "to the storage layer and call them from there"
    )
