"""VERP addresses, Message-IDs and list headers: what the inbound side and receivers rely on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.compose import feedback_id, list_unsubscribe_headers, message_id, verp
from engine.compose.unsubscribe import split_list_unsubscribe
from engine.errors import ComposeError

DOMAIN = "bounces.example.com"
SECRET = b"0123456789abcdef-secret"


def test_verp_round_trip_and_format() -> None:
    address = verp.encode(1234, domain=DOMAIN, secret=SECRET)
    local, domain = address.split("@")
    prefix, job36, tag = local.split("-")
    assert (prefix, job36, domain) == ("b", "ya", DOMAIN)
    assert len(tag) == 10 and tag.isalnum() and tag == tag.lower()
    assert verp.decode(address, domain=DOMAIN, secret=SECRET) == 1234


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_verp_round_trips_every_bigint(job_id: int) -> None:
    address = verp.encode(job_id, domain=DOMAIN, secret=SECRET)
    assert verp.decode(address, domain=DOMAIN, secret=SECRET) == job_id


def test_verp_survives_case_folding_brackets_and_idn() -> None:
    address = verp.encode(987654321, domain=DOMAIN, secret=SECRET)
    assert verp.decode(address.upper(), domain=DOMAIN, secret=SECRET) == 987654321
    assert verp.decode(f"<{address}>", domain=DOMAIN.upper(), secret=SECRET) == 987654321
    idn = verp.encode(5, domain="rebonds.bücher.example", secret="s")
    assert idn.endswith("@rebonds.xn--bcher-kva.example")
    assert verp.decode(idn, domain="rebonds.bücher.example", secret="s") == 5


def test_verp_refuses_forged_or_foreign_addresses() -> None:
    address = verp.encode(42, domain=DOMAIN, secret=SECRET)
    local, _ = address.split("@")
    prefix, job36, tag = local.split("-")
    forged_tag = ("0" if tag[0] != "0" else "1") + tag[1:]
    other_job = verp.encode(43, domain=DOMAIN, secret=SECRET).split("-")[2].split("@")[0]
    cases = [
        f"{prefix}-{job36}-{forged_tag}@{DOMAIN}",  # tag tampered
        f"{prefix}-{job36}-{other_job}@{DOMAIN}",  # a valid tag of another job
        f"{prefix}-15-{tag}@{DOMAIN}",  # job id tampered
        f"{prefix}-{job36}-{tag}@elsewhere.example",  # another domain
        f"x-{job36}-{tag}@{DOMAIN}",  # another prefix
        f"{prefix}-0{job36}-{tag}@{DOMAIN}",  # non-canonical id
        f"{prefix}-{job36}@{DOMAIN}",  # no tag
        f"{prefix}-{job36}-{tag}-x@{DOMAIN}",
        "postmaster@" + DOMAIN,
        "not an address",
        "",
    ]
    for case in cases:
        assert verp.decode(case, domain=DOMAIN, secret=SECRET) is None, case
    assert verp.decode(address, domain=DOMAIN, secret=b"another secret") is None


def test_verp_prefix_and_bad_arguments() -> None:
    address = verp.encode(7, domain=DOMAIN, secret=SECRET, local_prefix="bnc")
    assert address.startswith("bnc-7-")
    assert verp.decode(address, domain=DOMAIN, secret=SECRET, local_prefix="bnc") == 7
    assert verp.decode(address, domain=DOMAIN, secret=SECRET) is None
    for bad in ({"local_prefix": "B-x"}, {"secret": b""}, {"domain": "no_domain"}):
        kwargs: dict[str, object] = {"domain": DOMAIN, "secret": SECRET, **bad}
        with pytest.raises(ComposeError):
            verp.encode(7, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ComposeError):
        verp.encode(-1, domain=DOMAIN, secret=SECRET)


def test_message_id_is_fixed_per_job_and_unique_across_jobs_and_tenants() -> None:
    first = message_id.make(1000, "tenant-a", "News.Example.COM")
    assert first == message_id.make(1000, "tenant-a", "news.example.com")  # a retry
    assert first.startswith("<pm.") and first.endswith("@news.example.com>")
    assert first != message_id.make(1001, "tenant-a", "news.example.com")
    assert first != message_id.make(1000, "tenant-b", "news.example.com")
    ids = {message_id.make(i, f"t{i % 7}", "example.com") for i in range(5000)}
    assert len(ids) == 5000
    assert message_id.job_id_of(first) == 1000
    assert message_id.job_id_of(first, "tenant-a") == 1000
    assert message_id.job_id_of(first, "tenant-b") is None
    assert message_id.job_id_of("<random@example.com>") is None
    assert message_id.make(3, "t", "bücher.example").endswith("@xn--bcher-kva.example>")
    with pytest.raises(ComposeError):
        message_id.make(3, "t", "not a domain")


def test_list_unsubscribe_headers() -> None:
    assert list_unsubscribe_headers(None, None) == []
    assert list_unsubscribe_headers("https://u.example.com/u?t=1", "unsub@example.com") == [
        ("List-Unsubscribe", "<mailto:unsub@example.com>, <https://u.example.com/u?t=1>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    # RFC 8058 one-click needs an https URI: a mailto alone gets no List-Unsubscribe-Post.
    assert list_unsubscribe_headers(None, "mailto:u@example.com?subject=stop") == [
        ("List-Unsubscribe", "<mailto:u@example.com?subject=stop>")
    ]
    for url in ("http://u.example.com/x", "https://u.example.com/a b", "https://x/>\r\nBcc: y"):
        with pytest.raises(ComposeError):
            list_unsubscribe_headers(url, None)


def test_split_list_unsubscribe_field() -> None:
    assert split_list_unsubscribe("https://u.example.com/x") == ("https://u.example.com/x", None)
    assert split_list_unsubscribe("<mailto:u@example.com>, <https://u.example.com/x>") == (
        "https://u.example.com/x",
        "mailto:u@example.com",
    )
    for bad in ("", "ftp://x", "https://a.example, https://b.example"):
        with pytest.raises(ComposeError):
            split_list_unsubscribe(bad)


def test_feedback_id_sanitises_its_fields() -> None:
    assert feedback_id("spring-sale", "tenant1", "news@example.com") == (
        "spring-sale:tenant1:news@example.com:pm"
    )
    value = feedback_id("a:b", "t é\r\n", "")
    assert value == "a_b:t_:-:pm"
    assert value.count(":") == 3 and value.isascii()
    assert len(feedback_id("x" * 500, "t", "s").split(":")[0]) == 64
