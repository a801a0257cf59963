"""Core commands: run, migrate, tenants, enqueue, status, demo."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the core subcommands."""
