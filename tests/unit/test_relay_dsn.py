"""RFC 3461 parameters the relay sends (engine/relay/dsn.py), and the job's sampling."""

from __future__ import annotations

import pytest

from engine import config as config_mod
from engine.compose.verp import envid, envid_job
from engine.errors import ConfigError
from engine.relay.dsn import MAX_ENVID, DsnRequest, sampled, xtext

SECRET = "unit-dsn-secret-0123456789abcdef0123"


def test_xtext_escapes_plus_equals_controls_and_non_ascii() -> None:
    assert xtext("user@example.com") == "user@example.com"
    assert xtext("a+b=c@x") == "a+2Bb+3Dc@x"
    assert xtext("sp ace\r\n") == "sp+20ace+0D+0A"
    assert xtext("é") == "+C3+A9"
    # Every output octet is printable ASCII and neither '=' nor a space: it cannot end the param.
    hostile = "".join(chr(i) for i in range(0, 300))
    out = xtext(hostile)
    assert out.isascii() and " " not in out and "=" not in out and "\r" not in out


def test_options_of_a_plain_and_a_sampled_request() -> None:
    plain = DsnRequest(envid="e-ya-k3v5q2m7xd")
    assert plain.mail_options() == ["RET=HDRS", "ENVID=e-ya-k3v5q2m7xd"]
    assert plain.rcpt_options("u+tag@gmail.test") == [
        "NOTIFY=FAILURE,DELAY",
        "ORCPT=rfc822;u+2Btag@gmail.test",
    ]
    success = DsnRequest(envid="e-1-x", success=True)
    assert success.rcpt_options("u@gmail.test")[0] == "NOTIFY=SUCCESS,FAILURE,DELAY"
    # rfc822 ORCPT is ASCII only: a UTF-8 address goes without one.
    assert success.rcpt_options("ü@gmail.test") == ["NOTIFY=SUCCESS,FAILURE,DELAY"]
    long = DsnRequest(envid="e" * 300).mail_options()[1]
    assert len(long) == len("ENVID=") + MAX_ENVID


def test_envid_is_signed_and_proves_its_job() -> None:
    value = envid(12345, domain="bounces.localhost", secret=SECRET)
    assert value.startswith("e-") and "@" not in value
    assert envid_job(value, domain="bounces.localhost", secret=SECRET) == 12345
    assert envid_job(value, domain="bounces.localhost", secret=SECRET + "x") is None
    assert envid_job(value.replace("e-", "b-"), domain="bounces.localhost", secret=SECRET) is None
    assert DsnRequest(envid=value).mail_options()[1] == f"ENVID={value}"  # xtext leaves it be


def test_sampling_is_deterministic_and_close_to_the_fraction() -> None:
    ids = range(1, 100_001)
    for fraction in (0.01, 0.1, 0.5):
        hits = sum(sampled(i, fraction) for i in ids)
        assert abs(hits / len(ids) - fraction) < 0.1 * fraction + 0.002
        assert [sampled(i, fraction) for i in range(1, 200)] == [
            sampled(i, fraction) for i in range(1, 200)
        ]
    # Consecutive ids (a campaign) are spread, not bunched at the start.
    first_hundred = sum(sampled(i, 0.1) for i in range(1, 101))
    assert 3 <= first_hundred <= 20
    assert not any(sampled(i, 0.0) for i in range(1000))
    assert all(sampled(i, 1.0) for i in range(1000))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_fraction_is_validated(bad: float) -> None:
    with pytest.raises(ConfigError, match="dsn_success_fraction"):
        config_mod.parse({"relay": {"dsn_success_fraction": bad}})


def test_defaults() -> None:
    cfg = config_mod.parse({})
    assert cfg.relay.dsn is True and cfg.relay.dsn_success_fraction == 0.01
