"""penguinmails-engine: durable, signed, shaped bulk SMTP delivery."""

#: The engine's version, the one place it is written (pyproject.toml reads it through hatch):
#: ``engine --version``, ``engine_build_info``. A literal, not importlib.metadata: every engine
#: process (signers, parse workers, the CLI) imports this package, and that lookup costs more
#: than the rest of a worker's start-up imports.
__version__ = "0.1.0"
