"""parse_bounce: the contract JSON, the job-mapping hints, and the caps on hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import orjson

from engine.inbound import BounceKind, Reason, parse_bounce
from engine.inbound.message import MAX_PARSE_BYTES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
VERP = "b+9f2c1e7a.1042@bounces.penguinmails.example"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.msg").read_bytes()


def test_bounce_json_contract_has_exactly_the_contract_fields() -> None:
    report = parse_bounce(fixture("own-postfix-userunknown"))
    line = msgspec.json.encode(report.to_record("x.msg"))
    doc = orjson.loads(line)
    assert list(doc) == ["file", "kind", "feedback_type", "recipients"]
    assert list(doc["recipients"][0]) == [
        "address",
        "status",
        "reply_code",
        "reason",
        "hard",
        "diagnostic",
        "remote_mta",
        "rule",  # additive (DESIGN §8): which rule decided the reason
    ]
    assert doc["file"] == "x.msg"
    assert doc["kind"] == "dsn"
    assert doc["feedback_type"] is None
    recipient = doc["recipients"][0]
    assert recipient["address"] == "alice@example.org"
    assert recipient["status"] == "5.1.1"
    assert recipient["reply_code"] == "550"  # a string, as the contract says
    assert recipient["reason"] == "userunknown"
    assert recipient["hard"] is True
    assert "User unknown" in recipient["diagnostic"]
    assert recipient["remote_mta"] == "mx1.example.org"
    assert recipient["rule"] == "status:5.1.1"


def test_non_bounce_is_unknown_with_no_recipients() -> None:
    doc = orjson.loads(msgspec.json.encode(parse_bounce(fixture("neg-plain-mail")).to_record("f")))
    assert doc == {"file": "f", "kind": "unknown", "feedback_type": None, "recipients": []}


def test_job_mapping_hints_survive_in_every_form() -> None:
    # VERP envelope recipient handed in by the listener, X-PM-Job-Id and Message-ID of the original.
    report = parse_bounce(fixture("own-postfix-userunknown"), envelope_to=VERP)
    assert report.hints.envelope_to == VERP
    assert report.hints.job_id == "job-1042"
    assert report.hints.message_id == "<20240311.1042.abc@mail.penguin-shop.example>"
    assert report.hints.original_to == "alice@example.org"
    # quoted original in a plain-text bounce (qmail)
    assert parse_bounce(fixture("own-qmail-userunknown")).hints.job_id == "job-2001"
    # auto-replies map through In-Reply-To
    vacation = parse_bounce(fixture("own-autoreply-rfc3834"))
    assert vacation.hints.message_id == "<20240311.1042.abc@mail.penguin-shop.example>"


def test_verp_address_is_never_taken_for_the_failed_recipient() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: " + VERP.encode() + b"\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n\r\n"
        b"<" + VERP.encode() + b">: this is us\r\n"
        b"<real@example.org>: host mx[192.0.2.1] said: 550 5.1.1 User unknown\r\n"
    )
    report = parse_bounce(raw, envelope_to=VERP)
    assert [r.address for r in report.recipients] == ["real@example.org"]
    assert report.recipients[0].reason is Reason.USERUNKNOWN


def test_arf_complaint_fields() -> None:
    report = parse_bounce(fixture("own-arf-rfc5965-abuse"))
    assert report.kind is BounceKind.ARF
    assert report.feedback is not None
    assert report.feedback.feedback_type == "abuse"
    assert report.feedback.source_ip == "192.0.2.10"
    assert report.feedback.original_rcpt_to == ("user@example.com",)
    assert report.feedback.original_mail_from == VERP
    assert report.feedback.reported_domain == "mail.penguin-shop.example"
    assert [(r.reason, r.hard) for r in report.recipients] == [(Reason.FEEDBACK, False)]


def test_auto_replies_are_never_bounces() -> None:
    for name in (
        "own-autoreply-outlook",
        "bp-aol-vacation",
        "bp-boxbe-cr",
        "own-challenge-spamarrest",
    ):
        report = parse_bounce(fixture(name))
        assert report.kind is BounceKind.AUTOREPLY, name
        assert all(r.reason is Reason.VACATION and not r.hard for r in report.recipients)


def test_delivered_dsn_is_reported_as_delivered() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Successful Mail Delivery Report\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
        b'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nDelivered.\r\n'
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; ok@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
        b"\r\n--b--\r\n"
    )
    report = parse_bounce(raw)
    assert report.kind is BounceKind.DSN
    assert [(r.address, r.reason, r.hard) for r in report.recipients] == [
        ("ok@example.org", Reason.DELIVERED, False)
    ]


def test_huge_message_is_cut_cheaply() -> None:
    head = fixture("own-postfix-userunknown")
    raw = head + b"x" * (MAX_PARSE_BYTES * 4)
    started = time.perf_counter()
    report = parse_bounce(raw)
    assert time.perf_counter() - started < 2.0
    assert report.kind is BounceKind.DSN
    assert any("truncated" in d for d in report.defects)


def test_thousands_of_parts_are_refused_cheaply() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(20000))
    raw = b'From: a@b\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    started = time.perf_counter()
    report = parse_bounce(raw)
    assert time.perf_counter() - started < 2.0
    assert report.kind is BounceKind.UNKNOWN


def test_garbage_never_raises() -> None:
    for raw in (
        b"",
        b"\x00\xff" * 1000,
        b"Content-Type: multipart/report\r\n\r\n--",
        b"\r\n\r\n\r\n",
    ):
        report = parse_bounce(raw)
        assert report.kind is BounceKind.UNKNOWN


def test_ses_json_notification() -> None:
    report = parse_bounce(fixture("own-ses-json-bounce"))
    assert report.kind is BounceKind.NONSTANDARD
    assert report.hints.job_id == "job-4001"
    assert [(r.address, r.reason, r.hard) for r in report.recipients] == [
        ("amy@example.com", Reason.USERUNKNOWN, True)
    ]
