"""The committed OpenAPI document (clients/node/openapi.json) is the one the route table gives.

The Node client's types are generated from the committed copy, so a route or schema change that
is not re-exported would ship a client that no longer matches the engine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from engine.admin.app import ROUTES
from engine.admin.openapi import document, render

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "node"
REGENERATE = (
    "make openapi  (uv run python -m engine.admin.export_openapi > clients/node/openapi.json;"
    " cd clients/node && npm run gen)"
)


def test_committed_openapi_json_is_current() -> None:
    committed = (CLIENT / "openapi.json").read_bytes()
    assert committed == render(document(ROUTES)), (
        f"clients/node/openapi.json is stale: the admin routes changed. Regenerate it: {REGENERATE}"
    )


def test_document_describes_the_standard_webhooks_post() -> None:
    doc = document(ROUTES)
    post = doc["webhooks"]["events"]["post"]
    headers = {p["name"]: p for p in post["parameters"]}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers.keys()
    assert headers["X-PenguinMails-Signature"]["deprecated"] is True
    payload = doc["components"]["schemas"]["WebhookPayload"]
    event = doc["components"]["schemas"]["Event"]["properties"]
    assert payload["properties"]["events"]["items"]["$ref"].endswith("/Event")
    assert {"campaign_id", "idempotency_key", "metadata", "kind", "job_id"} <= event.keys()


def test_committed_typescript_types_match_the_document() -> None:
    npm = shutil.which("npm")
    if npm is None or not (CLIENT / "node_modules" / ".bin" / "openapi-typescript").exists():
        pytest.skip("clients/node dependencies missing: run scripts/bootstrap.sh (npm ci)")
    done = subprocess.run(
        [npm, "run", "--silent", "check-types"],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, (
        f"clients/node/src/schema.d.ts is stale ({done.stdout}{done.stderr}). "
        f"Regenerate it: {REGENERATE}"
    )
