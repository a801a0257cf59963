"""pytest fixtures for the fake MailU node.

Import the ones you need into a conftest or a test module::

    from tests.fakes.fixtures import mailu, mailu_tls  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.mailu import FakeMailU

__all__ = ["MAILU_PASSWORD", "MAILU_USER", "mailu", "mailu_tls"]

MAILU_USER = "relay@example.test"
MAILU_PASSWORD = "s3cret-relay-pass"


@pytest.fixture
def mailu() -> Iterator[FakeMailU]:
    """A plain fake node: no TLS, no AUTH, on 127.0.0.1 and a free port."""
    with FakeMailU() as node:
        yield node


@pytest.fixture
def mailu_tls() -> Iterator[FakeMailU]:
    """A fake node like MailU's submission port: STARTTLS required, then AUTH PLAIN/LOGIN.

    Credentials are ``MAILU_USER`` / ``MAILU_PASSWORD``; verify with ``node.ca_pem_path``.
    """
    with FakeMailU(auth=(MAILU_USER, MAILU_PASSWORD), tls="starttls") as node:
        yield node
