"""pytest fixtures for the fake MailU node and for a real Postfix node with fake providers.

Import the ones you need into a conftest or a test module::

    from tests.fakes.fixtures import mailu, mailu_tls  # noqa: F401
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.fakes.mailu import FakeMailU
from tests.fakes.postfix import PostfixNode, Provider
from tests.fakes.postfix import skip_reason as postfix_skip_reason

__all__ = [
    "MAILU_PASSWORD",
    "MAILU_USER",
    "PROVIDER_DOMAINS",
    "mailu",
    "mailu_tls",
    "postfix_node",
    "providers",
]

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


# --- a real Postfix node (tests/fakes/postfix.py) -------------------------------------------

PROVIDER_DOMAINS = ("gmail.test", "outlook.test", "yahoo.test")


@pytest.fixture
def providers() -> Iterator[dict[str, Provider]]:
    """One fake provider MX per domain in ``PROVIDER_DOMAINS``, answering 250 until told not to."""
    with contextlib.ExitStack() as stack:
        yield {d: stack.enter_context(Provider(d)) for d in PROVIDER_DOMAINS}


@pytest.fixture
def postfix_node(providers: dict[str, Provider]) -> Iterator[PostfixNode]:
    """A real Postfix instance set up like a MailU node, routing each provider domain to its fake.

    Skipped (with the reason) only where Postfix cannot run: binaries missing or not root.
    Route the VERP domain to the engine's inbound listener with ``postfix_node.route(...)``.
    """
    reason = postfix_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    routes = {domain: p.port for domain, p in providers.items()}
    with PostfixNode(routes=routes) as node:
        yield node
