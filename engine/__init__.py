"""penguinmails-engine: durable, signed, shaped bulk SMTP delivery."""

from __future__ import annotations

from importlib import metadata

try:
    #: The installed distribution's version (``engine --version``, ``engine_build_info``).
    __version__ = metadata.version("penguinmails-engine")
except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
