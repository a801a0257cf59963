"""Classification of one bounced recipient: status table, text patterns, hard/soft."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.inbound import Reason, classify
from engine.inbound.classify import (
    SmtpCommand,
    clean_status,
    find_command,
    find_reply_code,
    find_status,
)
from engine.inbound.patterns import load_patterns, normalise
from engine.inbound.phrases import PhraseSet, needs_non_ascii, required_literal
from engine.inbound.reasons import HARD_REASONS, STATUS_REASONS


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason", "hard"),
    [
        # the status code alone
        ("5.1.1", None, Reason.USERUNKNOWN, True),
        ("5.1.2", None, Reason.HOSTUNKNOWN, True),
        ("5.2.2", None, Reason.MAILBOXFULL, False),
        ("4.2.2", None, Reason.MAILBOXFULL, False),
        ("5.3.4", None, Reason.MESGTOOBIG, False),
        ("5.1.6", None, Reason.HASMOVED, True),
        ("5.7.26", None, Reason.AUTHFAILURE, False),
        ("5.7.25", None, Reason.REQUIREPTR, False),
        ("4.7.28", None, Reason.SPEEDING, False),
        ("5.7.13", None, Reason.SUSPEND, False),
        ("4.4.7", None, Reason.EXPIRED, False),
        ("5.1.10", None, Reason.NOTACCEPT, True),
        # text refines a generic code
        ("5.0.0", "550 Mailbox full", Reason.MAILBOXFULL, False),
        ("5.0.0", "550 Requested action not taken: user unknown", Reason.USERUNKNOWN, True),
        (
            "5.7.1",
            "554 Client host [192.0.2.1] blocked using zen.spamhaus.org",
            Reason.BLOCKED,
            False,
        ),
        (
            "5.7.1",
            "550 5.7.1 Message rejected as spam by Content Filtering",
            Reason.SPAMDETECTED,
            False,
        ),
        (
            "4.7.0",
            "421 4.7.0 Try again later, closing connection. (rate limited)",
            Reason.SPEEDING,
            False,
        ),
        ("4.0.0", "451 Too many connections from your IP", Reason.TOOMANYCONN, False),
        ("5.0.0", "554 Message size exceeds fixed maximum message size", Reason.MESGTOOBIG, False),
        ("5.0.0", "550 Host or domain name not found", Reason.HOSTUNKNOWN, True),
        ("5.0.0", "550 Relay access denied", Reason.NORELAYING, False),
        ("5.0.0", "550 user is over quota", Reason.MAILBOXFULL, False),
        ("5.0.0", "550 This account has been disabled", Reason.SUSPEND, False),
        (
            "5.0.0",
            "554 Your message has been rejected: virus detected",
            Reason.VIRUSDETECTED,
            False,
        ),
        ("5.7.1", "550 5.7.1 SPF check failed", Reason.AUTHFAILURE, False),
        ("5.5.0", "550 Address on suppression list", Reason.SUPPRESSED, False),
        ("5.7.0", "554 5.7.0 Must issue a STARTTLS command first", Reason.FAILEDSTARTTLS, False),
        ("5.0.0", "550 Message not RFC 5322 compliant", Reason.NOTCOMPLIANTRFC, False),
        ("5.7.1", "550 5.7.1 Poor reputation of your IP", Reason.BADREPUTATION, False),
        (
            "5.7.1",
            "550 5.7.1 Client host rejected: cannot find your hostname",
            Reason.REQUIREPTR,
            False,
        ),
        # a user-unknown code yields to text that shows the real cause ...
        ("5.1.1", "550 5.1.1 mailbox is full", Reason.MAILBOXFULL, False),
        ("5.1.1", "550 5.1.1 blocked using bl.spamcop.net", Reason.BLOCKED, False),
        # ... but not to spam words, and precise codes are not overridden
        ("5.1.1", "550 5.1.1 user unknown (spam filter)", Reason.USERUNKNOWN, True),
        ("5.2.2", "552 5.2.2 user unknown", Reason.MAILBOXFULL, False),
        # multilingual text
        ("5.0.0", "550 Benutzer unbekannt", Reason.USERUNKNOWN, True),
        ("5.0.0", "550 Postfach voll", Reason.MAILBOXFULL, False),
        ("5.0.0", "550 Utilisateur inconnu", Reason.USERUNKNOWN, True),
        ("5.0.0", "550 Casella piena", Reason.MAILBOXFULL, False),
        # nothing to go on
        (None, None, Reason.UNDEFINED, False),
        ("5.0.0", "550 go figure", Reason.ONHOLD, False),
        ("5.7.99", None, Reason.SECURITYERROR, False),
        ("5.6.99", None, Reason.CONTENTERROR, False),
        ("2.0.0", "250 OK", Reason.DELIVERED, False),
    ],
)
def test_classify(status: str | None, diagnostic: str | None, reason: Reason, hard: bool) -> None:
    result = classify(status, None, diagnostic)
    assert (result.reason, result.hard) == (reason, hard)


def test_soft_when_the_failure_is_transient() -> None:
    # A 4xx "user unknown" (greylisting lookalike) must not suppress the address.
    result = classify(
        "4.1.1", None, "450 4.1.1 <a@b.example>: Recipient address rejected: User unknown"
    )
    assert result.reason is Reason.USERUNKNOWN
    assert not result.hard


def test_hard_needs_a_permanent_failure_when_no_code_is_given() -> None:
    assert classify(None, None, "no such user", permanent=True).hard
    assert not classify(None, None, "no such user", permanent=False).hard
    assert classify(None, None, "550 no such user").hard


def test_delayed_action_without_text_is_expired() -> None:
    assert classify("4.0.0", None, None, action="delayed").reason is Reason.EXPIRED


def test_user_unknown_after_data_is_a_filter() -> None:
    # The address was accepted at RCPT: a "no such user" after DATA is a content filter.
    text = "host mx[192.0.2.1] said: 550 No such user here (in reply to end of DATA command)"
    assert classify("5.0.0", None, text).reason is Reason.FILTERED


def test_spam_words_at_rcpt_with_a_dnsbl_are_blocked() -> None:
    text = (
        "554 5.7.1 Service unavailable; Client host blocked using b.barracudacentral.org; spam "
        "(in reply to RCPT TO command)"
    )
    assert classify("5.7.1", None, text).reason is Reason.BLOCKED


def test_status_refined_from_the_diagnostic() -> None:
    result = classify("5.0.0", None, "smtp; 550 5.1.1 <a@b.example>... User unknown")
    assert (result.status, result.reply_code) == ("5.1.1", "550")


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
        ("550-5.7.26 Unauthenticated email", "5.7.26"),
        ("host 192.0.2.55 said: 550 user unknown", None),  # an IP is not a status
        ("smtp; 552 5.2.2 Mailbox full", "5.2.2"),
    ],
)
def test_find_status(text: str, status: str | None) -> None:
    assert find_status(text) == status


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("host mx.example.com[209.85.1.2] said: 550 5.1.1 nope", "550"),
        ("smtp;554 rejected", "554"),
        ("#550 5.2.3 RESOLVER.RST.RecipSizeLimit", "550"),
        ("Mon, 11 Mar 2024 10:15:04 +0000", None),
    ],
)
def test_find_reply_code(text: str, code: str | None) -> None:
    assert find_reply_code(text) == code


def test_clean_status() -> None:
    assert clean_status("5.1.1 (user unknown)") == "5.1.1"
    assert clean_status("5.01.001") == "5.1.1"
    assert clean_status("failed") is None
    assert clean_status(None) is None


def test_find_command() -> None:
    assert find_command(normalise("(in reply to RCPT TO command)")) is SmtpCommand.RCPT
    assert find_command(normalise("after end of data:")) is SmtpCommand.DATA
    assert find_command(normalise("Mailbox over quota [RCPT_TO]")) is SmtpCommand.RCPT
    assert find_command("nothing here") is None


def test_every_reason_in_the_table_and_patterns_is_in_the_vocabulary() -> None:
    vocabulary = set(Reason)
    assert set(STATUS_REASONS.values()) <= vocabulary
    assert set(load_patterns().reasons) <= vocabulary
    assert {
        Reason.USERUNKNOWN,
        Reason.HOSTUNKNOWN,
        Reason.HASMOVED,
        Reason.NOTACCEPT,
    } == HARD_REASONS


def test_pattern_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "patterns.toml"
    bad.write_text('[[reason]]\nname = "mailboxfull"\npatterns = ["(unclosed"]\n')
    with pytest.raises(ConfigError, match="unclosed"):
        load_patterns(bad)
    bad.write_text('[[reason]]\nname = "not-a-reason"\npatterns = ["x"]\n')
    with pytest.raises(ConfigError, match="invalid"):
        load_patterns(bad)
    with pytest.raises(ConfigError, match="missing"):
        load_patterns(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("mailbox (?:is )?full", "mailbox "),
        ("e-?mail (?:address|account) does not exist", " does not exist"),
        (r"#5\.1\.1 bad address", "#5.1.1 bad address"),
        ("(?:poor|low) reputation", " reputation"),
        ("a|b", None),
        (r"x-unix; \d+", "x-unix; "),
        ("[abc]def", "def"),
        ("quotas?", "quota"),
    ],
)
def test_required_literal(pattern: str, literal: str | None) -> None:
    assert required_literal(pattern) == literal


def test_phrase_set_agrees_with_plain_regex() -> None:
    phrases = PhraseSet(["mailbox (?:is )?full", "over (?:the )?quota", "^procmail: "])
    assert phrases.search("550 mailbox is full")
    assert phrases.search("user over the quota")
    assert phrases.search("procmail: couldn't")
    assert not phrases.search("all fine here")


@pytest.mark.parametrize(
    ("pattern", "needed"),
    [
        ("邮箱(?:空间)?(?:已满|不足)", True),
        ("(?:帐户|账户)(?:已)?(?:冻结|停用)", True),
        ("ip(?:地址)?.{0,20}(?:被|已)拒绝", True),
        ("(?:пользователь|адресат) не найден", True),
        ("(?:konto|postfach) (?:ist )?gesperrt", False),
        ("bo[iî]te inconnue", False),
        ("a(?:б|в)?c", False),
        ("б?x", False),
        ("(?:б|x)y", False),
        ("б|x", False),
    ],
)
def test_needs_non_ascii(pattern: str, needed: bool) -> None:
    assert needs_non_ascii(pattern) is needed


def test_phrase_set_order_with_gram_keys_and_scripts() -> None:
    # More phrases than characters: the gram index is used. Every phrase whose literal occurs
    # is tried in the given order, whatever gram it is keyed on and whatever script it is in.
    patterns = [f"filler phrase number {n}" for n in range(60)] + [
        "mailbox unavailable",
        "邮箱(?:空间)?已满",
        "mailbox (?:is )?full",
        "(?:konto|postfach) gesperrt",
    ]
    phrases = PhraseSet(patterns)
    assert phrases.first_index("550 mailbox is full") == 62
    assert phrases.first_index("mailbox unavailable: mailbox full") == 60
    assert phrases.first_index("邮箱已满 mailbox full") == 61
    assert phrases.first_index("konto gesperrt") == 63
    assert phrases.first_index("nothing here") is None
    for text in ("550 mailbox is full", "邮箱已满", "konto gesperrt", "filler phrase number 7"):
        expected = next((i for i, p in enumerate(patterns) if re.search(p, text)), None)
        assert phrases.first_index(text) == expected


def test_local_delivery_agent_failure_is_a_mailer_error() -> None:
    result = classify(
        "5.0.0", None, "/usr/local/bin/deliver said nothing", diagnostic_type="X-UNIX"
    )
    assert result.reason is Reason.MAILERERROR


def test_user_unknown_text_needs_rcpt_evidence_in_a_dsn() -> None:
    # "mailbox unavailable" under 5.0.0 is what content filters answer too: soft unless the
    # refusal is known to have come at RCPT.
    text = "550 Requested action not taken: mailbox unavailable"
    assert classify("5.0.0", None, text, rcpt_evidence=True).reason is Reason.FILTERED
    at_rcpt = f"{text} (in reply to RCPT TO command)"
    assert classify("5.0.0", None, at_rcpt, rcpt_evidence=True).reason is Reason.USERUNKNOWN
    assert classify("5.1.1", None, text, rcpt_evidence=True).reason is Reason.USERUNKNOWN
