"""Job validation at enqueue: each refusal names the field so the platform can fix the job."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.compose import Address, parse_address, validate_job
from engine.errors import JobValidationError
from engine.model import Attachment, Job

LIMIT = 1_000_000
RAW = b"From: News <news@example.com>\r\nSubject: hi\r\n\r\nbody\r\n"


def job(**overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "tenant_id": "t1",
        "idempotency_key": "k1",
        "to": "bob@example.org",
        "from_": "News <news@example.com>",
        "subject": "Hello",
        "text": "hi",
    }
    fields.update(overrides)
    return Job(**fields)


def refused(j: Job, *fragments: str, limit: int = LIMIT) -> str:
    with pytest.raises(JobValidationError) as info:
        validate_job(j, max_message_bytes=limit)
    message = info.value.message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_valid_jobs_pass() -> None:
    validate_job(job(), max_message_bytes=LIMIT)
    validate_job(
        job(
            to="Zoë Müller <zoë@bücher.example>",
            html="<p>hi</p>",
            headers={"X-Campaign": "spring", "Reply-To": "Support <help@example.com>"},
            attachments=[
                Attachment(filename="a.pdf", content=b"x", content_type="application/pdf")
            ],
            priority="high",
            campaign_id="spring-2026",
            send_at="2026-03-03T10:00:00Z",
            list_unsubscribe="https://u.example.com/u?t=1",
        ),
        max_message_bytes=LIMIT,
    )
    validate_job(
        job(from_=None, subject=None, text=None, raw=RAW, list_unsubscribe="mailto:u@example.com"),
        max_message_bytes=LIMIT,
    )


def test_job_from_json_contract_validates() -> None:
    payload = {
        "tenant_id": "t1",
        "idempotency_key": "k1",
        "from": "a@example.com",
        "to": "b@example.org",
        "raw": base64.b64encode(b"From: a@example.com\r\n\r\nx").decode(),
    }
    validate_job(
        msgspec.json.decode(msgspec.json.encode(payload), type=Job), max_message_bytes=LIMIT
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"tenant_id": ""}, "tenant_id: missing"),
        ({"tenant_id": "   "}, "tenant_id: missing"),
        ({"tenant_id": "t\n1"}, "tenant_id: contains a control character"),
        ({"idempotency_key": ""}, "idempotency_key: missing"),
        ({"idempotency_key": "k" * 256}, "idempotency_key: longer than 255"),
        ({"idempotency_key": "k\x001"}, "idempotency_key: contains a control character"),
    ],
)
def test_identity_fields(overrides: dict[str, Any], fragment: str) -> None:
    refused(job(**overrides), fragment)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("", "empty"),
        ("bob.example.org", "no '@'"),
        ("bob@", "invalid domain"),
        ("@example.org", "empty local part"),
        ("bob@example.org\r\nBcc: x@evil.example", "control character"),
        ("bob@exa\x00mple.org", "control character"),
        ("a@example.org, b@example.org", "invalid local part"),
        ("a@example.org b@example.org", "invalid local part"),
        ('"ceo@bank.example" <x@evil.example>', "display name may not contain '@'"),
        ("Bob <a@example.org>, Eve <e@example.org>", "one mailbox"),
        ("Bob <bob@example.org", "angle brackets"),
        ("bob..smith@example.org", "invalid local part"),
        (".bob@example.org", "invalid local part"),
        ("bob@[192.0.2.1]", "address literals"),
        ("bob@localhost", "at least one dot"),
        ("bob@192.0.2.1", "numeric"),
        ("bob@-bad-.example", "label"),
        ("bob@under_score.example", "label"),
        ("bob@" + "a" * 64 + ".example", "label"),
        ("x" * 65 + "@example.org", "longer than 64"),
        ("(comment) bob@example.org", "invalid local part"),
    ],
)
def test_bad_recipient_addresses(address: str, fragment: str) -> None:
    message = refused(job(to=address), "to: ", fragment)
    assert message.startswith("to: ")


def test_bad_sender_address_and_missing_sender() -> None:
    refused(job(from_="Eve <eve@evil.example>\r\nBcc: x@y.example"), "from: ")
    refused(job(from_=None), "from: missing")


def test_parse_address_normalises_for_shaping() -> None:
    assert parse_address("Bob <Bob.Smith@Example.ORG>") == Address(
        local="Bob.Smith", domain="example.org", display_name="Bob"
    )
    idn = parse_address("josé@Bücher.Example.")
    assert (idn.domain, idn.smtputf8, idn.addr_spec) == (
        "xn--bcher-kva.example",
        True,
        "josé@xn--bcher-kva.example",
    )
    assert parse_address('"john doe"@example.org').local == '"john doe"'
    assert parse_address('"Doe, John" <j@example.org>').display_name == "Doe, John"
    assert parse_address("straße@straße.de").domain == "xn--strae-oqa.de"  # IDNA 2008


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"subject": "Hi\r\nBcc: x@evil.example"}, ("subject contains CR/LF",)),
        ({"subject": "Hi\x07"}, ("subject contains a control character",)),
        ({"headers": {"X-Foo": "a\r\nBcc: x@y.example"}}, ("header 'X-Foo' contains CR/LF",)),
        ({"headers": {"X-Foo": "a\nb"}}, ("header injection",)),
        ({"headers": {"X-Foo": "a\x00b"}}, ("header 'X-Foo'",)),
        ({"headers": {"X Foo": "a"}}, ("not an RFC 5322 field name",)),
        ({"headers": {"X-Foo:": "a"}}, ("not an RFC 5322 field name",)),
        ({"headers": {"X-Föö": "a"}}, ("not an RFC 5322 field name",)),
        ({"headers": {"X-Foo\r\nBcc": "a"}}, ("CR/LF",)),
        ({"headers": {"": "a"}}, ("header name is empty",)),
        ({"headers": {"Bcc": "x@example.org"}}, ("'Bcc' is refused",)),
        ({"headers": {"Return-Path": "<x@example.org>"}}, ("'Return-Path' is set by the engine",)),
        ({"headers": {"DKIM-Signature": "v=1"}}, ("'DKIM-Signature' is set by the engine",)),
        ({"headers": {"message-id": "<x@y>"}}, ("send a raw message",)),
        ({"headers": {"Date": "today"}}, ("'Date' is set by the engine",)),
        ({"headers": {"Content-Type": "text/plain"}}, ("MIME structure",)),
        ({"headers": {"List-Unsubscribe": "<https://x.example>"}}, ("list_unsubscribe",)),
        ({"headers": {"Received": "from x"}}, ("trace fields",)),
        ({"headers": {"X-A": "1", "x-a": "2"}}, ("given twice",)),
        ({"headers": {"Reply-To": "not an address"}}, ("'Reply-To'", "address list")),
        ({"text": None, "html": None}, ("neither text, html nor raw",)),
        ({"text": "\ud800"}, ("text: not valid UTF-8",)),
        ({"html": "<p>\x00</p>"}, ("html: contains a NUL",)),
    ],
)
def test_structured_content(overrides: dict[str, Any], fragments: tuple[str, ...]) -> None:
    refused(job(**overrides), *fragments)


@pytest.mark.parametrize(
    ("attachment", "fragment"),
    [
        (Attachment(filename="", content=b"x"), "attachments[0].filename"),
        (Attachment(filename="a\r\n.pdf", content=b"x"), "attachments[0].filename"),
        (Attachment(filename="a", content=b"x", content_type="pdf"), "content_type"),
        (Attachment(filename="a", content=b"x", content_type="text/plain\r\nX: y"), "CR/LF"),
        (Attachment(filename="a", content=b"x", content_type="multipart/mixed"), "octet-stream"),
        (Attachment(filename="a", content=b"x", disposition="form-data"), "disposition"),
        (Attachment(filename="a", content=b"x", content_id="a b@c"), "content_id"),
    ],
)
def test_attachments(attachment: Attachment, fragment: str) -> None:
    refused(job(attachments=[attachment]), fragment)


def test_oversize_counts_base64_expansion() -> None:
    big = Attachment(filename="big.bin", content=b"\0" * 800_000)
    message = refused(job(attachments=[big]), "size: ", "exceeds max_message_bytes 1000000")
    assert "after base64" in message
    validate_job(job(attachments=[big]), max_message_bytes=1_200_000)
    refused(job(text="x" * 2000), "size: ", limit=1000)
    refused(job(from_=None, subject=None, text=None, raw=RAW + b"x" * 2000), "raw: ", limit=1000)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"subject": "s"}, "remove subject, text"),
        ({"subject": None, "headers": {"X-A": "1"}}, "remove text, headers"),
        ({"subject": None, "text": None, "html": "<p>"}, "remove html"),
    ],
)
def test_raw_and_parts_are_exclusive(overrides: dict[str, Any], fragment: str) -> None:
    refused(job(from_=None, raw=RAW, **overrides), "raw: ", fragment)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"just some text with no headers", "malformed header line"),
        (b"Subject: no sender\r\n\r\nbody", "no From header"),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx", "exactly one From"),
        (b"From: not an address\r\n\r\nx", "not a single valid address"),
        (b"From: a@example.com, b@example.com\r\n\r\nx", "not a single valid address"),
        (b"From: a@example.com\r\n\r\n" + b"x" * 999, "over 998"),
        (b"From: a@example.com\r\n\r\nnul\x00byte", "NUL"),
    ],
)
def test_raw_that_is_not_a_message(raw: bytes, fragment: str) -> None:
    refused(job(from_=None, subject=None, text=None, raw=raw), "raw: ", fragment)


def test_raw_from_must_match_the_job_sender() -> None:
    base = {"subject": None, "text": None, "raw": RAW}
    validate_job(job(from_="news@EXAMPLE.com", **base), max_message_bytes=LIMIT)
    refused(job(from_="other@example.com", **base), "from: ", "differs from the raw")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"priority": "urgent"}, "priority: "),
        ({"send_at": "tomorrow"}, "send_at: 'tomorrow' is not an ISO 8601"),
        ({"send_at": "2026-03-03T10:00:00"}, "send_at: '2026-03-03T10:00:00' has no time zone"),
        ({"campaign_id": "c\n1"}, "campaign_id: "),
        ({"list_unsubscribe": "http://u.example.com/x"}, "list_unsubscribe: "),
        ({"list_unsubscribe": "https://u.example.com/a b"}, "list_unsubscribe: "),
        ({"list_unsubscribe": "unsubscribe me"}, "list_unsubscribe: "),
    ],
)
def test_options(overrides: dict[str, Any], fragment: str) -> None:
    refused(job(**overrides), fragment)


@given(st.text(max_size=80))
def test_parse_address_never_crashes_and_accepted_addresses_are_header_safe(value: str) -> None:
    try:
        address = parse_address(value)
    except JobValidationError:
        return
    assert "\r" not in address.addr_spec and "\n" not in address.addr_spec
    assert address.domain.isascii() and address.domain == address.domain.lower()
    assert "@" not in address.display_name
    assert parse_address(address.addr_spec).addr_spec == address.addr_spec


@given(
    st.from_regex(r"[a-z0-9._%+-]{1,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9]{1,10}\.[a-z]{2,6}", fullmatch=True),
)
def test_ordinary_addresses_are_accepted(local: str, domain: str) -> None:
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return
    assert parse_address(f"{local}@{domain}").addr_spec == f"{local}@{domain}"
