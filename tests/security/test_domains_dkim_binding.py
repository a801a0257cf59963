"""DKIM keys are bound to tenants: tenant B's mail is never signed with tenant A's key.

Not for A's domain, not for a subdomain of it through parent-domain fallback, and the binding
survives the periodic refresh of stored keys. An unbound config key stays a shared legacy key.
"""

from __future__ import annotations

import os

import pytest

from engine.config import DkimConfig, DkimKey
from engine.dkim.crypto_box import KeyBox
from engine.dkim.keys import KeyRing, generate_key
from engine.errors import DkimKeyMissingError

PEMS = {name: generate_key("ed25519")[0] for name in ("a", "b", "shared")}


def ring(*, required: bool = False) -> KeyRing:
    cfg = DkimConfig(
        required=required,
        keys=[
            DkimKey(
                domain="acme.example",
                selector="s1",
                private_key_file="a",
                tenant="A",
                algorithm="ed25519-sha256",
            ),
            DkimKey(
                domain="globex.example",
                selector="s1",
                private_key_file="b",
                tenant="B",
                algorithm="ed25519-sha256",
            ),
            DkimKey(
                domain="legacy.example",
                selector="s1",
                private_key_file="shared",
                algorithm="ed25519-sha256",
            ),
        ],
    )
    return KeyRing.from_config(cfg, read=lambda path: PEMS[path])


def test_a_tenants_key_signs_its_own_mail_only() -> None:
    r = ring()
    (key,) = r.keys_for("acme.example", tenant_id="A")
    assert key.domain == "acme.example"
    (sub,) = r.keys_for("news.acme.example", tenant_id="A")  # own parent-domain fallback
    assert sub is key
    assert r.keys_for("acme.example", tenant_id="B") == ()
    assert r.keys_for("news.acme.example", tenant_id="B") == ()  # no fallback across tenants
    assert r.keys_for("acme.example") == ()  # no tenant named: no tenant's key either
    assert len(r.keys_for("legacy.example", tenant_id="B")) == 1  # unbound: shared


def test_required_holds_the_mail_instead_of_borrowing_a_key() -> None:
    with pytest.raises(DkimKeyMissingError, match="tenant B"):
        ring(required=True).keys_for("news.acme.example", tenant_id="B")


def test_the_binding_survives_a_refresh_of_stored_keys() -> None:
    r = ring()
    r.replace_stored([], KeyBox(os.urandom(32)))
    assert len(r.keys_for("acme.example", tenant_id="A")) == 1
    assert r.keys_for("acme.example", tenant_id="B") == ()
