"""`engine bounce ...` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `bounce` subcommands (filled in by the bounce package)."""
