"""Which address a bounce names as failed: never ours, never an internal form when the sender's
own address is known; list refusals, X-Failed-Recipients, JMRP and pasted ARF fields."""

from __future__ import annotations

import pytest

from engine.inbound import BounceKind, Reason, parse_bounce
from engine.inbound.dsn import is_internal_address, parse_delivery_status
from engine.inbound.nonstandard import is_robot_address

VERP = "b+9f2c1e7a.1042@bounces.penguinmails.example"


def _dsn(blocks: str, original_to: str = "amy@example.com", extra_top: str = "") -> bytes:
    return (
        "Return-Path: <>\n"
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n"
        f"To: {VERP}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"{extra_top}"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.net\n\n{blocks}\n"
        "--B\nContent-Type: message/rfc822\n\n"
        f"From: News <news@shop.example.com>\nTo: {original_to}\nSubject: Sale\n\nHi\n"
        "--B--\n"
    ).encode()


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("amy@example.com", False),
        ("amy@mail.example.co.uk", False),
        ("amy@mailstore1", True),
        ("amy@ims_daemon", True),
        ("@store1.example.com:amy@ims_daemon", True),
        ("amy@mailcluster.local", True),
        ("amy@host.localdomain", True),
        ("amy@srv.corp.internal", True),
        ("amy@[192.0.2.1]", False),
        ("luser@otherhost.invalid", False),  # RFC 2606 names stand for public ones in samples
    ],
)
def test_internal_addresses(address: str, internal: bool) -> None:
    assert is_internal_address(address) is internal


def test_internal_final_recipient_yields_the_original_recipient() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns; mta1.example.com.ar\n\n"
        "Original-recipient: rfc822;ana@example.com.ar\n"
        "Final-recipient: rfc822;@sto1.example.com.ar:ana@ims_daemon\n"
        "Action: failed\nStatus: 5.2.0\n"
    )
    assert [r.address for r in status.recipients] == ["ana@example.com.ar"]


def test_public_final_recipient_wins_over_original_and_actual() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns; m.example.org\n\n"
        "Original-Recipient: rfc822;sales@example.org\n"
        "Final-Recipient: rfc822;bob@example.org\n"
        "X-Actual-Recipient: rfc822;bob@mailhost\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    assert [r.address for r in status.recipients] == ["bob@example.org"]


def test_lone_internal_final_recipient_without_original_takes_the_original_to() -> None:
    raw = _dsn(
        "Final-Recipient: rfc822; jo@mbox03\nAction: failed\nStatus: 5.1.1\n",
        original_to="Jo <jo@corp.example.com>",
    )
    report = parse_bounce(raw)
    assert [r.address for r in report.recipients] == ["jo@corp.example.com"]
    assert report.recipients[0].reason is Reason.USERUNKNOWN


def test_local_final_recipient_takes_the_original_to_with_its_diagnostic() -> None:
    raw = _dsn(
        "Final-Recipient: LOCAL;jdoe\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n",
        original_to="John Doe <jdoe@example.net>",
    )
    report = parse_bounce(raw)
    assert report.kind is BounceKind.DSN
    assert [(r.address, r.status, r.reason) for r in report.recipients] == [
        ("jdoe@example.net", "5.1.1", Reason.USERUNKNOWN)
    ]


def test_our_own_addresses_are_never_the_failed_recipient() -> None:
    blocks = (
        "Final-Recipient: rfc822; amy@example.com\nAction: failed\nStatus: 5.1.1\n\n"
        f"Final-Recipient: rfc822; {VERP}\nAction: failed\nStatus: 5.1.1\n\n"
        "Final-Recipient: rfc822; news@shop.example.com\nAction: failed\nStatus: 5.1.1\n\n"
        "Final-Recipient: rfc822; announce-bounces@lists.example.org\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    report = parse_bounce(_dsn(blocks))
    assert [r.address for r in report.recipients] == ["amy@example.com"]


@pytest.mark.parametrize(
    ("address", "robot"),
    [
        ("announce-bounces@lists.example.org", True),
        ("announce-request@lists.example.org", True),
        ("announce-owner@lists.example.org", True),
        ("users-bounces+amy=example.com@lists.example.org", True),
        ("MAILER-DAEMON@mx.example.net", True),
        ("postmaster@example.net", True),
        ("announce@lists.example.org", False),
        ("amy.bounces@example.com", False),
    ],
)
def test_robot_addresses(address: str, robot: bool) -> None:
    assert is_robot_address(address) is robot


def test_x_failed_recipients_names_the_recipient_when_the_text_does_not() -> None:
    raw = (
        "Return-Path: <>\nFrom: Mail Delivery System <Mailer-Daemon@gw.example.net>\n"
        f"To: {VERP}\nSubject: Mail delivery failed\n"
        "X-Failed-Recipients: zed@example.org\n\n"
        "A message that you sent could not be delivered to all of its recipients.\n"
        "    550 No such user here\n"
    ).encode()
    report = parse_bounce(raw)
    assert report.kind is BounceKind.NONSTANDARD
    assert [(r.address, r.reason, r.hard) for r in report.recipients] == [
        ("zed@example.org", Reason.USERUNKNOWN, True)
    ]


def test_list_refusal_names_the_list_address_soft() -> None:
    raw = (
        "Return-Path: <announce-bounces@lists.example.org>\n"
        "From: announce-owner@lists.example.org\n"
        f"To: {VERP}\nSubject: Your message to Announce was rejected\n"
        "X-BeenThere: announce@lists.example.org\n\n"
        "You are not allowed to post to this mailing list, and your message has\n"
        "been automatically rejected. Contact announce-owner@lists.example.org.\n"
    ).encode()
    report = parse_bounce(raw)
    assert [(r.address, r.reason, r.hard) for r in report.recipients] == [
        ("announce@lists.example.org", Reason.REJECTED, False)
    ]


def test_newsletter_about_bounces_is_not_a_bounce() -> None:
    raw = (
        "From: Deliverability Weekly <editor@news.example>\n"
        f"To: {VERP}\nSubject: Undeliverable mail: why messages were not delivered\n"
        "List-Unsubscribe: <mailto:unsubscribe@news.example>\n\n"
        "When a message could not be delivered you get:\n"
        "  <someone@example.com>: host mx.example.com said: 550 5.1.1 User unknown\n"
    ).encode()
    report = parse_bounce(raw)
    assert report.kind is BounceKind.UNKNOWN
    assert report.recipients == ()


def test_message_without_from_is_not_a_daemon_notice() -> None:
    raw = b"To: someone@example.org\nSubject: hello\n\n<amy@example.com>:\nsee you soon\n"
    assert parse_bounce(raw).recipients == ()


def test_jmrp_complaint_names_the_reporting_user() -> None:
    raw = (
        b"From: staff@hotmail.com\nTo: fbl@penguinmails.example\n"
        b"Subject: complaint about message from 192.0.2.10\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="J"\n\n'
        b"--J\nContent-Type: message/rfc822\nContent-Disposition: inline\n\n"
        b"X-HmXmrOriginalRecipient: reporter@hotmail.example\n"
        b"From: news@shop.example.com\nTo: other@hotmail.example\nSubject: Sale\n\nHi\n"
        b"--J--\n"
    )
    report = parse_bounce(raw)
    assert report.kind is BounceKind.ARF
    assert report.feedback_type == "abuse"
    assert [r.address for r in report.recipients] == ["reporter@hotmail.example"]


def test_pasted_opt_out_fields_are_a_complaint_not_an_autoreply() -> None:
    raw = (
        b"From: abuse@isp.example\nTo: fbl@penguinmails.example\nSubject: Auto: opt-out\n"
        b"Auto-Submitted: auto-generated\n\n"
        b"Feedback-Type: opt-out\nUser-Agent: FBL/1\nVersion: 1\n"
        b"Original-Rcpt-To: <stop@isp.example>\n"
    )
    report = parse_bounce(raw)
    assert report.kind is BounceKind.ARF
    assert report.feedback_type == "opt-out"
    assert [r.address for r in report.recipients] == ["stop@isp.example"]


def test_auth_failure_report_names_no_complainer() -> None:
    raw = (
        b"From: dmarc@isp.example\nTo: dmarc@penguinmails.example\nSubject: DMARC failure\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; "
        b'boundary="F"\n\n'
        b"--F\nContent-Type: message/feedback-report\n\n"
        b"Feedback-Type: auth-failure\nAuth-Failure: dmarc\nVersion: 1\n"
        b"Original-Rcpt-To: <someone@isp.example>\n"
        b"--F--\n"
    )
    report = parse_bounce(raw)
    assert report.kind is BounceKind.ARF
    assert report.feedback_type == "auth-failure"
    assert report.recipients == ()


def test_iso_2022_jp_notice_is_decoded() -> None:
    text = (
        "以下のアドレスへのメールは送信できませんでした。\n\n"
        "<ichiro@docomo.example>\n宛先のメールアドレスが見つかりません。\n"
    )
    raw = (
        b"From: MAILER-DAEMON@docomo.example\nTo: " + VERP.encode() + b"\nSubject: error\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-2022-JP\n\n"
        + text.encode("iso2022_jp")
    )
    report = parse_bounce(raw)
    assert [(r.address, r.reason) for r in report.recipients] == [
        ("ichiro@docomo.example", Reason.USERUNKNOWN)
    ]


def test_address_named_only_in_the_subject() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: " + VERP.encode() + b"\n"
        b"Subject: Undeliverable mail: lee.park@example.org\n\n"
        b"The message could not be delivered. Reason: 550 5.1.1 user unknown\n"
    )
    report = parse_bounce(raw)
    assert [(r.address, r.reason) for r in report.recipients] == [
        ("lee.park@example.org", Reason.USERUNKNOWN)
    ]


def test_pasted_dsn_fields_skip_our_own_address() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: " + VERP.encode() + b"\n"
        b"Subject: Delivery failure\n\n"
        b"Delivery to the following recipients failed.\n\n"
        b"Final-Recipient: rfc822; " + VERP.encode() + b"\nAction: failed\nStatus: 5.1.1\n\n"
        b"Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n"
    )
    report = parse_bounce(raw)
    assert [r.address for r in report.recipients] == ["ann@example.org"]
