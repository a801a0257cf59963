"""`engine dkim ...` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `dkim` subcommands (filled in by the dkim package)."""
