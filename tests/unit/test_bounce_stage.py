"""Where in the SMTP dialogue a refusal came (engine/inbound/smtpstage.py) and what it changes."""

from __future__ import annotations

import pytest

from engine.inbound import Reason, classify
from engine.inbound.patterns import normalise
from engine.inbound.smtpstage import SmtpCommand, find_stage


@pytest.mark.parametrize(
    ("text", "command", "form"),
    [
        (
            "host mx.example[192.0.2.1] said: 550 5.1.1 no (in reply to RCPT TO command)",
            "RCPT",
            "reply",
        ),
        ("said: 554 5.7.1 spam (in reply to end of DATA command)", "DATA", "reply"),
        ("said: 553 sender rejected (in reply to MAIL FROM command)", "MAIL", "reply"),
        ("SMTP error from remote mail server after RCPT TO:<a@b.example>: 550 x", "RCPT", "exim"),
        ("SMTP error from remote mail server after end of data: 550 x", "DATA", "exim"),
        ("SMTP error from remote mail server after initial connection: 554 x", "CONN", "exim"),
        (
            "SMTP error from remote mail server after pipelined MAIL FROM:<> SIZE=1: 550",
            "MAIL",
            "exim",
        ),
        ("554 delivery error: dd Sorry your message cannot be delivered [RCPT_TO]", "RCPT", "tag"),
        ("Connected to 192.0.2.1 but sender was rejected. Remote host said: 553", "MAIL", "qmail"),
        ("Connected to 192.0.2.1 but my name was rejected.", "EHLO", "qmail"),
        (
            ">>> MAIL From:<s@a.example> <<< 250 ok >>> RCPT To:<r@b.example> <<< 550 no",
            "RCPT",
            "transcript",
        ),
        (
            ">>> RCPT To:<r@b.example> <<< 250 ok >>> DATA <<< 354 go >>> . <<< 554 spam",
            "DATA",
            "transcript",
        ),
        (
            "... while talking to mx.b.example.: <<< 554 go away, you are listed",
            "CONN",
            "transcript",
        ),
        # Sendmail pipelining: the RCPT's refusal is quoted after DATA, then DATA's own 503.
        (
            "while talking to mx.b.example.: >>> DATA <<< 550 no such user <<< 503 need RCPT",
            "RCPT",
            "transcript",
        ),
        # the last host that refused is the one that counts
        (
            "while talking to a.example.: <<< 450 busy"
            " while talking to b.example.: >>> RCPT To:<x@y> <<< 550 unknown",
            "RCPT",
            "transcript",
        ),
    ],
)
def test_find_stage(text: str, command: str, form: str) -> None:
    stage = find_stage(normalise(text))
    assert stage is not None
    assert (stage.command, stage.form) == (SmtpCommand(command), form)


@pytest.mark.parametrize(
    "text",
    [
        "550 5.1.1 user unknown",
        "in reply to your message of yesterday",
        "this is in reply to mail from your colleague",
        "we will reply after data is processed",
        ">>> only a quote",
    ],
)
def test_no_stage(text: str) -> None:
    assert find_stage(normalise(text)) is None


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason", "hard", "rule"),
    [
        # a user-unknown text after the end of DATA: a content filter answered
        (
            "5.1.1",
            "550 5.1.1 user unknown (in reply to end of DATA command)",
            Reason.FILTERED,
            False,
            "stage:data+status:5.1.1",
        ),
        (
            "5.1.1",
            "550 5.1.1 user unknown (in reply to RCPT TO command)",
            Reason.USERUNKNOWN,
            True,
            "status:5.1.1",
        ),
        # at MAIL FROM the refusal is about the sender, never the recipient
        (
            "5.1.1",
            "550 5.1.1 user unknown (in reply to MAIL FROM command)",
            Reason.REJECTED,
            False,
            "stage:mail+status:5.1.1",
        ),
        (
            "5.7.1",
            "554 5.7.1 access denied (in reply to MAIL FROM command)",
            Reason.REJECTED,
            False,
            None,
        ),
        # at the greeting: the client host
        (
            "5.0.0",
            "SMTP error from remote mail server after initial connection: 554 no entry for you",
            Reason.BLOCKED,
            False,
            None,
        ),
        # spam words before DATA with a DNSBL: the client's IP, not the content
        (
            "5.7.1",
            "550 5.7.1 spam: blocked using zen.spamhaus.org (in reply to RCPT TO command)",
            Reason.BLOCKED,
            False,
            None,
        ),
        (
            "5.7.1",
            "550 5.7.1 rejected as spam (in reply to end of DATA command)",
            Reason.SPAMDETECTED,
            False,
            None,
        ),
    ],
)
def test_stage_changes_the_reason(
    status: str, diagnostic: str, reason: Reason, hard: bool, rule: str | None
) -> None:
    result = classify(status, None, diagnostic)
    assert (result.reason, result.hard) == (reason, hard)
    if rule is not None:
        assert result.rule == rule


def test_a_transient_code_in_a_final_failure_is_expired() -> None:
    result = classify("4.0.0", None, "451 go figure", action="failed")
    assert result.reason is Reason.EXPIRED
    assert result.rule.startswith("action:failed+")


def test_every_classification_names_its_rule() -> None:
    assert classify("5.2.2", None, None).rule == "status:5.2.2"
    assert classify(None, None, "550 mailbox is full").rule == "phrase:mailboxfull/en/0"
    assert classify("5.0.0", None, "550 blah denied").rule.startswith("generic:blocked/en/")
    assert classify("5.4.9", None, None).rule == "class:5.4"
    assert classify(None, None, "501 what").rule == "reply:501"
    assert classify(None, None, "go figure").rule == "none:text"
    assert classify(None, None, None).rule == "none"


def test_counted_repeats_are_not_literal_text() -> None:
    # "{0,10}" is a quantifier: a prefilter that required "0,10" would hide the phrase.
    from engine.inbound.phrases import PhraseSet, required_literal

    assert required_literal("(?:アカウント|ユーザ).{0,10}(?:停止|凍結)") is None
    assert required_literal("dmarc[^.]{0,40}(?:fail|reject)") == "dmarc"
    assert required_literal("try (?:again )?[^.]{0,300}(?:volume|rate)") == "try "
    assert PhraseSet(["(?:アカウント|ユーザ).{0,10}(?:停止|凍結)"]).search("このアカウントは停止")


def test_hard_follows_a_final_failure_not_only_the_code_class() -> None:
    text = "450 4.1.1 <a@b.example>: Recipient address rejected: User unknown"
    # the MTA kept getting "user unknown" until it gave up: the address does not exist
    assert classify("4.1.1", None, text, action="failed").hard
    # still being retried, or nothing says it was final: never suppress
    assert not classify("4.1.1", None, text, action="delayed").hard
    assert not classify("4.1.1", None, text).hard
    # a null MX needs a permanent answer (DESIGN §7: notaccept with a 5xx code)
    assert not classify("4.3.2", None, "451 does not accept mail", action="failed").hard
    assert classify("5.1.10", None, "556 5.1.10 recipient has null MX").hard


def test_null_mx_of_our_sender_is_not_the_recipients_fault() -> None:
    result = classify("5.7.27", None, "550 5.7.27 Sender address has null MX")
    assert (result.reason, result.hard) == (Reason.REJECTED, False)
    at_mail = classify(
        "5.0.0", None, "550 domain does not accept mail (in reply to MAIL FROM command)"
    )
    assert (at_mail.reason, at_mail.hard) == (Reason.REJECTED, False)
    # RFC 7504: "no SMTP service" at the greeting is the recipient domain's
    greeting = classify(
        "5.3.2",
        None,
        "SMTP error from remote mail server after initial connection:"
        " 554 5.3.2 no SMTP service here",
    )
    assert (greeting.reason, greeting.hard) == (Reason.NOTACCEPT, True)


def test_the_stage_wins_over_the_expiry_fallback() -> None:
    # a transient refusal at MAIL FROM the MTA gave up on: about our sender, not a queue expiry
    text = "451 try later (in reply to MAIL FROM command)"
    result = classify("4.0.0", None, text, action="failed")
    assert (result.reason, result.rule) == (Reason.REJECTED, "stage:mail+none:text")
    # without a stage, the same answer in a final failure is an expiry
    assert classify("4.0.0", None, "451 try later", action="failed").reason is Reason.EXPIRED
