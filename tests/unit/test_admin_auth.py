"""Admin auth policy and the OpenAPI document, without a database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.admin import openapi
from engine.admin.app import ROUTES
from engine.admin.auth import check_exposure, is_loopback, parse_listen, resolve_token
from engine.config import AdminConfig
from engine.errors import ConfigError

TOKEN = "0123456789abcdef0123"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8025", ("127.0.0.1", 8025)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:0", ("localhost", 0)),
        (":8025", ("0.0.0.0", 8025)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8025", "host:", "host:http", "host:70000", ""])
def test_parse_listen_refuses_garbage(listen: str) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        parse_listen(listen)


@given(st.ip_addresses(), st.integers(0, 65535))
def test_loopback_is_decided_by_the_address(ip: Any, port: int) -> None:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    parsed, got_port = parse_listen(f"{host}:{port}")
    assert got_port == port and is_loopback(parsed) == ip.is_loopback


def test_exposure_rule() -> None:
    check_exposure("127.0.0.1:8025", None)  # loopback, no token: allowed (warned)
    check_exposure("[::1]:8025", None)
    check_exposure("0.0.0.0:8025", TOKEN)
    for listen in ("0.0.0.0:8025", "10.1.2.3:8025", "admin.internal:8025", ":8025"):
        with pytest.raises(ConfigError, match="no admin token"):
            check_exposure(listen, None)


def test_token_sources(tmp_path: Path) -> None:
    assert resolve_token(AdminConfig()) is None
    assert resolve_token(AdminConfig(token="   ")) is None
    assert resolve_token(AdminConfig(token=f" {TOKEN}\n")) == TOKEN
    with pytest.raises(ConfigError, match="shorter than 16"):
        resolve_token(AdminConfig(token="tiny"))
    f = tmp_path / "admin-token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    assert (
        resolve_token(AdminConfig(token="ignored-when-a-file-is-set", token_file=str(f))) == TOKEN
    )
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_token(AdminConfig(token_file=str(f)))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_token(AdminConfig(token_file=str(tmp_path / "missing")))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_document_is_complete_and_self_contained() -> None:
    doc = json.loads(msgspec.json.encode(openapi.document(ROUTES)))
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"] and op["responses"]
        assert ("401" in op["responses"]) is route.auth
        assert op["security"] == ([{"bearer": []}] if route.auth else [])
        for name in route.path_params:
            assert {"name": name, "in": "path"}.items() <= op["parameters"][0].items()
    search = {p["name"]: p for p in doc["paths"]["/v1/messages"]["get"]["parameters"]}
    assert set(search) == {
        "recipient", "message_id", "state", "tenant", "campaign", "sender", "priority", "since",
        "until", "limit", "after",
    }  # fmt: skip
    assert not any(p["required"] for p in search.values())
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
