"""`engine mailu overrides`: the Postfix files a MailU node takes (render: sans-IO)."""

from __future__ import annotations

import pytest

from engine.config import ShapingProvider
from engine.errors import ConfigError
from engine.nodes.overrides import render_overrides, transport_name


def test_one_transport_per_provider_with_its_limits() -> None:
    out = render_overrides(
        [
            ShapingProvider(name="gmail", rate_per_s=20, max_connections=12, domains=["gmail.com"]),
            ShapingProvider(
                name="slow-mail", rate_per_s=0.3, max_connections=2, max_messages_per_connection=7
            ),
            ShapingProvider(name="nodomains", max_connections=4),
        ],
        {"slow-mail": ["Slow.Example.", "gmail.com"]},
        delay_warning_time="1h",
    )
    assert [t.provider for t in out.providers] == ["gmail", "slow-mail"]  # no domain: no transport
    gmail, slow = out.providers
    assert transport_name("slow-mail") == slow.transport == "pm_slow_mail"
    assert slow.domains == ["slow.example"]  # gmail.com is gmail's already
    assert slow.rate_delay == "4s" and gmail.rate_delay == "0s"
    main_cf = out.files["postfix.cf"].splitlines()
    assert main_cf[0] == "delay_warning_time = 1h"
    assert "pm_gmail_destination_concurrency_limit = 12" in main_cf
    assert "pm_gmail_initial_destination_concurrency = 5" in main_cf
    assert "pm_slow_mail_destination_rate_delay = 4s" in main_cf
    assert not any(line.startswith("#") for line in main_cf)  # MailU runs each line
    assert out.files["postfix.master"].splitlines() == [
        "pm_gmail/unix=pm_gmail unix - - n - 12 smtp -o smtp_connection_reuse_count_limit=100",
        "pm_slow_mail/unix=pm_slow_mail unix - - n - 2 smtp -o smtp_connection_reuse_count_limit=7",
    ]
    assert "gmail.com pm_gmail:" in out.files["transport.map"]
    assert "slow.example pm_slow_mail:" in out.files["transport.map"]


@pytest.mark.parametrize(
    "domain", ["evil.com\nrelayhost = attacker", "a b.com", "-x.com", "com", "x" * 300 + ".com"]
)
def test_a_domain_that_could_inject_a_line_is_refused(domain: str) -> None:
    with pytest.raises(ConfigError, match="not a domain name"):
        render_overrides([ShapingProvider(name="p", domains=[domain])])


def test_delay_warning_time_must_be_a_postfix_time() -> None:
    with pytest.raises(ConfigError, match="not a Postfix time"):
        render_overrides([], delay_warning_time="4h\nrelayhost = x")
