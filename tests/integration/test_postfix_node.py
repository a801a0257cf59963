"""The real Postfix node fixture behaves like a MailU node (tests/fakes/postfix.py).

What the relay code is written against, checked on the real MTA: STARTTLS then AUTH, the
sender-login check, no CHUNKING but DSN, transport to the fake providers, and Postfix's own
notices (delay warning, success "relayed", failure) reaching the VERP domain's route.
"""

from __future__ import annotations

import email
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from tests.fakes.mailu import FakeMailU
from tests.fakes.postfix import PostfixNode, Provider

VERP = "b-1-abc@bounces.localhost"


@pytest.fixture
def dsn_sink(postfix_node: PostfixNode) -> Iterator[FakeMailU]:
    """Stands in for the engine's inbound listener: the VERP domain's MX."""
    with FakeMailU() as sink:
        postfix_node.route("bounces.localhost", sink.port)
        yield sink


def _submit(pf: PostfixNode, sender: str, rcpt: str, *, notify: str = "FAILURE,DELAY") -> None:
    with smtplib.SMTP(pf.host, pf.submission_port, timeout=10) as s:
        s.starttls(context=ssl.create_default_context(cafile=pf.ca_pem_path))
        s.login(pf.user, pf.password)
        s.sendmail(
            sender,
            [rcpt],
            b"From: a@example.test\r\nSubject: t\r\nMessage-ID: <t1@example.test>\r\n\r\nhi\r\n",
            mail_options=["RET=HDRS", "ENVID=e-1-abc"],
            rcpt_options=[f"NOTIFY={notify}", f"ORCPT=rfc822;{rcpt}"],
        )


def _wait(pred: Callable[[], bool], timeout: float, what: str, pf: PostfixNode) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; postfix log:\n{pf.log()[-4000:]}")


def _actions(sink: FakeMailU) -> list[str]:
    out = []
    for m in sink.received:
        for part in email.message_from_bytes(m.data).walk():
            if part.get_content_type() == "message/delivery-status":
                payload = part.get_payload()
                assert isinstance(payload, list)
                out.extend(str(block.get("Action", "")).lower() for block in payload[1:])
    return out


def test_submission_is_mailu_like(postfix_node: PostfixNode) -> None:
    pf = postfix_node
    with smtplib.SMTP(pf.host, pf.submission_port, timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")  # AUTH only after TLS
        code, _ = s.mail(VERP)
        assert code == 530  # TLS first
        s.rset()
        s.starttls(context=ssl.create_default_context(cafile=pf.ca_pem_path))
        s.ehlo()
        assert s.has_extn("dsn") and s.has_extn("pipelining") and not s.has_extn("chunking")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(pf.user, "wrong")
        s.login(pf.user, pf.password)
        code, _ = s.mail("x@not-owned.test")
        assert code == 250
        code, text = s.rcpt("a@gmail.test")
        assert code == 553 and b"not owned by user" in text  # reject_sender_login_mismatch


def test_relayed_notice_and_delay_warning(
    postfix_node: PostfixNode, providers: dict[str, Provider], dsn_sink: FakeMailU
) -> None:
    pf, gmail = postfix_node, providers["gmail.test"]
    gmail.set_reply("RCPT", 421, "4.7.0 Try again later")
    _submit(pf, VERP, "u@gmail.test", notify="SUCCESS,FAILURE,DELAY")
    _wait(lambda: "delayed" in _actions(dsn_sink), 20, "a delay warning", pf)
    gmail.reset_faults()
    pf.flush()
    _wait(lambda: "relayed" in _actions(dsn_sink), 20, "a relayed notice", pf)
    assert gmail.count() == 1 and pf.queue_size() == 0
    notice = dsn_sink.received[0]
    assert notice.mail_from in ("", "<>") and notice.rcpt_tos == (VERP,)
    assert b"Original-Envelope-Id: e-1-abc" in notice.data
    assert b"421 4.7.0 Try again later" in notice.data


def test_failure_notice(
    postfix_node: PostfixNode, providers: dict[str, Provider], dsn_sink: FakeMailU
) -> None:
    pf = postfix_node
    providers["outlook.test"].fail_rcpt("^gone@", 550, "5.1.1 mailbox unavailable")
    _submit(pf, VERP, "gone@outlook.test")
    _wait(lambda: "failed" in _actions(dsn_sink), 20, "a failure notice", pf)
    assert b"550 5.1.1 mailbox unavailable" in dsn_sink.received[0].data
    assert providers["outlook.test"].count() == 0
