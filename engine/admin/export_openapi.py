"""Print the admin API's OpenAPI document in its committed form.

``uv run python -m engine.admin.export_openapi > clients/node/openapi.json`` (``make openapi``
runs it and regenerates the Node client's types).
"""

from __future__ import annotations

import sys

from engine.admin.app import ROUTES
from engine.admin.openapi import document, render


def main() -> None:
    """Write the document for the whole route table to standard output."""
    sys.stdout.buffer.write(render(document(ROUTES)))


if __name__ == "__main__":
    main()
