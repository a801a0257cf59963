"""The ``engine`` command line (DESIGN §8 CLI contract).

Each command group lives in ``engine/commands/<group>.py`` and exposes ``register(sub, common)``;
this module only builds the parser and turns :class:`EngineError` into a one-line message and an
exit code (0 ok, 1 runtime error, 2 usage/config error).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Sequence

from engine import __version__
from engine.errors import EngineError
from engine.redaction import redact

#: Command modules, each registering its subcommands. Add one line per new group.
COMMAND_MODULES: tuple[str, ...] = (
    "engine.commands.core",
    "engine.commands.dkim",
    "engine.commands.bounce",
    "engine.commands.shaping",
    "engine.commands.senders",
    "engine.commands.gdpr",
    "engine.commands.retention",
    "engine.commands.domains",
    "engine.commands.nodes",
    "engine.commands.mailu",
    "engine.commands.config",
    "engine.commands.keys",
    "engine.commands.messages",
    "engine.commands.campaigns",
)


def version_line() -> str:
    """``engine --version``: the engine's version first, then the Python running it."""
    return (
        f"engine {__version__} (penguinmails-engine; "
        f"{platform.python_implementation()} {platform.python_version()})"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"engine: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; ``--config`` is accepted by every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="F", help="config file (default $ENGINE_CONFIG)")
    parser = _Parser(prog="engine", description="PenguinMails dispatch engine", parents=[common])
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m engine``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except EngineError as exc:
        sys.stderr.write(f"engine: {redact(str(exc))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
