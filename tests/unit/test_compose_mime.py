"""MIME composition: what a recipient's mail client reads back is what the platform sent."""

from __future__ import annotations

import base64
import email
import email.policy
from email.header import decode_header, make_header
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.compose import (
    ComposedBody,
    build_body,
    effective_message_id,
    message_id,
    render,
    render_head,
)
from engine.errors import ComposeError
from engine.model import Attachment, Content

MID = "<pm.1.abc@example.com>"
DATE = "Tue, 03 Mar 2026 10:00:00 +0000"


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def wire_ok(data: bytes) -> None:
    """SMTP wire form: every line ends in CRLF, no bare CR/LF, no line over 998, 7-bit body."""
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def send(content: Content, to: str = "bob@example.com", **kw: object) -> bytes:
    body = build_body(content)
    data = render(body, to=to, message_id=MID, date=DATE, **kw)  # type: ignore[arg-type]
    wire_ok(data)
    return data


def text_of(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_text_and_html_round_trip_as_multipart_alternative() -> None:
    data = send(
        Content(
            from_="News <news@example.com>",
            subject="Hello",
            text="Hi Bob,\nplain text.\n",
            html="<p>Hi Bob</p>\n",
        )
    )
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    assert text_of(msg, "plain") == "Hi Bob,\nplain text.\n"
    assert text_of(msg, "html") == "<p>Hi Bob</p>\n"
    assert msg["To"] == "bob@example.com"
    assert msg["Message-ID"] == MID
    assert msg["Date"] == DATE
    assert msg["From"].addresses[0].addr_spec == "news@example.com"
    assert data.count(b"MIME-Version:") == 1


def test_text_only_and_html_only_are_single_parts() -> None:
    msg = parse(send(Content(from_="a@example.com", text="only text\n")))
    assert msg.get_content_type() == "text/plain"
    assert text_of(msg, "plain") == "only text\n"
    msg = parse(send(Content(from_="a@example.com", html="<b>only html</b>\n")))
    assert msg.get_content_type() == "text/html"


def test_inline_images_go_in_multipart_related_and_files_in_mixed() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    content = Content(
        from_="a@example.com",
        text="see the logo\n",
        html='<p><img src="cid:logo@example.com"></p>\n',
        attachments=[
            Attachment(
                filename="logo.png",
                content=png,
                content_type="image/png",
                content_id="logo@example.com",
                disposition="inline",
            ),
            Attachment(filename="rapport été.pdf", content=pdf, content_type="application/pdf"),
        ],
    )
    msg = parse(send(content))
    assert msg.get_content_type() == "multipart/mixed"
    types = [p.get_content_type() for p in msg.walk()]
    assert types == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    parts = {p.get_content_type(): p for p in msg.walk()}
    assert parts["image/png"]["Content-ID"] == "<logo@example.com>"
    assert parts["image/png"].get_content() == png
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["rapport été.pdf"]
    assert attachments[0].get_content() == pdf
    assert text_of(msg, "plain") == "see the logo\n"


def test_inline_parts_without_html_become_attachments() -> None:
    msg = parse(
        send(
            Content(
                from_="a@example.com",
                text="t\n",
                attachments=[Attachment(filename="x.bin", content=b"\x00\x01", content_id="x@y")],
            )
        )
    )
    assert msg.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "application/octet-stream",
    ]


def test_non_ascii_subject_and_display_name_are_rfc2047_encoded() -> None:
    subject = "Soldes d'été 🐧 -50% sur tout " * 4
    data = send(Content(from_="Zoë Ünïcode 🐧 <news@example.com>", subject=subject, text="x\n"))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"=?utf-8?" in head
    msg = parse(data)
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].display_name == "Zoë Ünïcode 🐧"


def test_body_encoding_choice_qp_for_mostly_ascii_base64_for_mostly_not() -> None:
    latin = build_body(Content(from_="a@example.com", text="Café crème, s'il vous plaît.\n" * 5))
    assert b"Content-Transfer-Encoding: quoted-printable" in latin.head
    greek = build_body(Content(from_="a@example.com", text="Καλημέρα κόσμε, τι κάνεις;\n" * 5))
    assert b"Content-Transfer-Encoding: base64" in greek.head
    plain = build_body(Content(from_="a@example.com", text="plain ascii\n"))
    assert b"Content-Transfer-Encoding: 7bit" in plain.head
    for body in (latin, greek, plain):
        assert (body.head + body.body).isascii()  # 8bit is never emitted for structured content


def test_long_lines_are_encoded_to_at_most_998() -> None:
    text = "x" * 5000 + "\n" + "y " * 3000 + "\n"
    html = "<p>" + "z" * 20000 + "</p>"
    data = send(Content(from_="a@example.com", text=text, html=html))
    msg = parse(data)
    assert text_of(msg, "plain") == text
    assert text_of(msg, "html").rstrip("\n") == html


def test_custom_headers_ascii_verbatim_non_ascii_encoded() -> None:
    token = "tok_" + "A1b2" * 60  # a 244-character machine-read token: must not be encoded
    data = send(
        Content(
            from_="a@example.com",
            text="x\n",
            headers={"X-Tracking": token, "X-Note": "réunion demain", "Reply-To": "r@example.com"},
        )
    )
    assert f"X-Tracking: {token}\r\n".encode() in data
    msg = parse(data)
    assert msg["X-Note"] == "réunion demain"
    assert msg["Reply-To"] == "r@example.com"


def test_long_ascii_header_is_folded_at_spaces_and_unfolds_to_the_same_value() -> None:
    value = " ".join(f"word{i}" for i in range(100))
    data = send(Content(from_="a@example.com", text="x\n", headers={"X-Words": value}))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert parse(data)["X-Words"] == value


def test_list_unsubscribe_field_adds_rfc8058_headers() -> None:
    data = send(
        Content(
            from_="a@example.com",
            text="x\n",
            list_unsubscribe="https://u.example.com/u/abc, mailto:unsub@example.com",
        )
    )
    msg = parse(data)
    assert msg["List-Unsubscribe"] == "<mailto:unsub@example.com>, <https://u.example.com/u/abc>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_render_adds_extras_but_never_duplicates_a_content_header() -> None:
    body = build_body(
        Content(from_="a@example.com", text="x\n", headers={"Feedback-ID": "mine:t:s:pm"})
    )
    data = render(
        body,
        to="bob@example.com",
        message_id=MID,
        date=DATE,
        extra_headers=[("Feedback-ID", "c:t:s:pm"), ("X-Extra", "1")],
    )
    msg = parse(data)
    assert msg.get_all("Feedback-ID") == ["mine:t:s:pm"]  # the job's own header wins
    assert msg["X-Extra"] == "1"


def test_render_head_plus_body_is_render() -> None:
    body = build_body(Content(from_="a@example.com", subject="s", text="hello\n"))
    kw = {"to": "bob@example.com", "message_id": MID, "date": DATE}
    head = render_head(body, **kw)
    assert head.endswith(b"\r\n") and not head.endswith(b"\r\n\r\n")
    assert render(body, **kw) == head + b"\r\n" + body.body
    assert body.size == len(body.head) + 2 + len(body.body)


def test_render_default_date_is_rfc5322_now() -> None:
    body = build_body(Content(from_="a@example.com", text="x\n"))
    msg = parse(render(body, to="b@example.com", message_id=MID, date=None))
    assert msg["Date"].datetime.utcoffset().total_seconds() == 0
    assert str(msg["Date"]).endswith("+0000")


def test_to_with_display_name_idn_and_utf8_local_part() -> None:
    body = build_body(Content(from_="a@example.com", text="x\n"))
    msg = parse(render(body, to="Zoë <zoe@bücher.example>", message_id=MID, date=DATE))
    addr = msg["To"].addresses[0]
    assert (addr.display_name, addr.addr_spec) == ("Zoë", "zoe@xn--bcher-kva.example")
    data = render(body, to="josé@example.com", message_id=MID, date=DATE)
    assert "To: josé@example.com\r\n".encode() in data  # RFC 6532 raw UTF-8, needs SMTPUTF8


def test_quoted_local_parts_are_quoted_once() -> None:
    body = build_body(Content(from_='"news desk"@example.com', text="x\n"))
    data = render(body, to='Ann <"a b"@example.org>', message_id=MID, date=DATE)
    assert b'From: "news desk"@example.com\r\n' in data
    assert b'To: Ann <"a b"@example.org>\r\n' in data
    assert parse(data)["To"].addresses[0].username == "a b"


def test_utf8_local_part_in_from_marks_smtputf8() -> None:
    body = build_body(Content(from_="Zoë <zoë@example.com>", subject="héllo", text="x\n"))
    assert body.smtputf8
    data = render(body, to="b@example.com", message_id=MID, date=DATE)
    # RFC 6532: raw UTF-8 in the header (the stdlib parser cannot read it back, so check bytes).
    assert "From: Zoë <zoë@example.com>\r\n".encode() in data
    assert not build_body(Content(from_="a@example.com", text="x\n")).smtputf8


@pytest.mark.parametrize(
    "kw",
    [
        {"to": "bob@example.com\r\nBcc: x@evil.example"},
        {"message_id": "<a@b>\nBcc: x@evil.example"},
        {"date": "now\r\nX: y"},
        {"extra_headers": [("X-A", "1\r\nBcc: x@evil.example")]},
        {"extra_headers": [("X A", "1")]},
        {"extra_headers": [("X-A", "non-ascii é")]},
    ],
)
def test_render_refuses_header_injection(kw: dict[str, object]) -> None:
    body = build_body(Content(from_="a@example.com", text="x\n"))
    args: dict[str, object] = {"to": "bob@example.com", "message_id": MID, "date": DATE}
    args.update(kw)
    with pytest.raises(ComposeError):
        render(body, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content",
    [
        Content(text="no from\n"),
        Content(from_="a@example.com"),
        Content(from_="a@example.com", text="a\x00b"),
        Content(from_="not an address", text="x"),
        Content(from_="a@example.com", text="x", headers={"Bcc": "x@example.com"}),
        Content(from_="a@example.com", text="x", headers={"Message-ID": "<x@y>"}),
        Content(from_="a@example.com", text="x", headers={"X-A": "1\r\nBcc: e@x.example"}),
        Content(from_="a@example.com", text="x", headers={"X-Ü": "1"}),
        Content(from_="a@example.com", text="x", headers={"X-Long": "y" * 1200}),
        Content(
            from_="a@example.com",
            text="x",
            attachments=[Attachment(filename="a", content=b"x", content_type="multipart/mixed")],
        ),
    ],
)
def test_build_body_refuses_unusable_content(content: Content) -> None:
    with pytest.raises(ComposeError):
        build_body(content)


RAW = (
    b"Return-Path: <platform@example.com>\n"
    b"From: Platform <news@example.com>\n"
    b"To: list@example.com\n"
    b"Bcc: secret@example.com,\n"
    b"  other-secret@example.com\n"
    b"Subject: raw\n"
    b"Message-ID: <platform-123@example.com>\n"
    b"Date: Mon, 02 Mar 2026 09:00:00 +0000\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Bonjour \xc3\xa0 tous\n"
)


def test_raw_passthrough_drops_bcc_and_return_path_and_keeps_its_own_ids() -> None:
    body = build_body(Content(raw=RAW))
    assert body.message_id == "<platform-123@example.com>"
    assert body.eight_bit
    generated = message_id.make(7, "t", "example.com")
    data = render(
        body,
        to="bob@example.com",
        message_id=generated,
        date=None,
        extra_headers=[("Feedback-ID", "c:t:s:pm")],
    )
    wire_ok(data)
    assert b"secret@example.com" not in data and b"Return-Path" not in data
    msg = parse(data)
    assert msg.get_all("Message-ID") == ["<platform-123@example.com>"]
    assert msg.get_all("Date") == ["Mon, 02 Mar 2026 09:00:00 +0000"]
    assert msg.get_all("To") == ["list@example.com"]  # the raw message's To wins
    assert msg["Feedback-ID"] == "c:t:s:pm"
    assert msg.get_content() == "Bonjour à tous\r\n"  # 8bit text is kept byte for byte
    assert effective_message_id(body, generated) == "<platform-123@example.com>"
    # Everything but the dropped fields is byte-identical (modulo CRLF).
    kept = RAW.replace(b"\n", b"\r\n").split(b"\r\n\r\n", 1)[1]
    assert data.endswith(b"\r\n\r\n" + kept)


def test_raw_without_ids_gets_the_engines() -> None:
    raw = b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    body = build_body(Content(raw=raw, list_unsubscribe="https://u.example.com/x"))
    assert effective_message_id(body, MID) == MID
    msg = parse(render(body, to="bob@example.com", message_id=MID, date=DATE))
    assert (msg["Message-ID"], msg["Date"], msg["To"]) == (MID, DATE, "bob@example.com")
    assert msg["List-Unsubscribe"] == "<https://u.example.com/x>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    "raw",
    [
        b"no header here at all\r\n\r\nbody",
        b"Subject: no from\r\n\r\nbody",
        b"From: a@example.com\r\n\r\n" + b"x" * 1200 + b"\r\n",
        b"From: a@example.com\r\nX-Nul: a\x00b\r\n\r\nbody",
        b" continuation first\r\nFrom: a@example.com\r\n\r\nbody",
    ],
)
def test_raw_that_cannot_be_sent_is_refused(raw: bytes) -> None:
    with pytest.raises(ComposeError):
        build_body(Content(raw=raw))


def test_bare_cr_and_lf_in_raw_become_crlf() -> None:
    body = build_body(Content(raw=b"From: a@example.com\rSubject: s\n\nline1\rline2\n"))
    data = render(body, to="b@example.com", message_id=MID, date=DATE)
    wire_ok(data)
    assert data.endswith(b"\r\n\r\nline1\r\nline2\r\n")


def test_composed_body_is_reusable_across_recipients() -> None:
    body = build_body(Content(from_="a@example.com", subject="s", text="hello\n"))
    a = render(body, to="a@example.org", message_id="<1@x.example>", date=DATE)
    b = render(body, to="b@example.org", message_id="<2@x.example>", date=DATE)
    assert a.split(b"\r\n\r\n", 1)[1] == b.split(b"\r\n\r\n", 1)[1] == body.body
    assert isinstance(body, ComposedBody)


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=400,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=200
    ),
    text=_text,
    html=_text,
    name=st.text(alphabet=st.characters(whitelist_categories=("L", "N")), max_size=30),
)
def test_round_trip_random_unicode(subject: str, text: str, html: str, name: str) -> None:
    content = Content(from_=f"{name} <news@example.com>", subject=subject, text=text, html=html)
    data = send(content)
    msg = parse(data)
    # Unfolding collapses runs of white space: compare like for like.
    assert " ".join(rfc2047(data, "Subject").split()) == " ".join(subject.split())
    expected_from = f"{name} <news@example.com>" if name else "news@example.com"
    assert rfc2047(data, "From") == expected_from
    assert text_of(msg, "plain") == _normalised(text)
    assert text_of(msg, "html") == _normalised(html)


def rfc2047(data: bytes, name: str) -> str:
    """Decode a header strictly by RFC 2047 (white space between adjacent encoded-words is
    dropped, §6.2; the policy=default parser of Python 3.11 keeps it inside phrases)."""
    raw = email.message_from_bytes(data)[name]  # compat32: the raw folded value
    return str(make_header(decode_header(raw))) if raw is not None else ""


def _normalised(value: str) -> str:
    """What a body survives as: every line ending in LF
    (an empty body is one empty line)."""
    lines = value.encode().splitlines()  # bytes.splitlines: only CR, LF and CRLF break lines
    return "".join(line.decode() + "\n" for line in lines) or "\n"


def test_rendered_messages_sign_and_verify_with_dkimpy() -> None:
    """The wire bytes survive DKIM: dkimpy's own signer and verifier agree on them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.example.com."
        return record

    structured = build_body(
        Content(
            from_="Zoë <news@example.com>",
            subject="Hello 🐧",
            text="héllo\n" * 50,
            html="<p>" + "x" * 3000 + "</p>",
            attachments=[Attachment(filename="a.bin", content=bytes(range(256)) * 10)],
            list_unsubscribe="https://u.example.com/x",
        )
    )
    for body in (structured, build_body(Content(raw=RAW))):
        data = render(
            body,
            to="bob@example.org",
            message_id=MID,
            date=None,
            extra_headers=[("Feedback-ID", "c:t:s:pm")],
        )
        signature = dkim.sign(
            data,
            b"s1",
            b"example.com",
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        assert dkim.verify(signature + data, dnsfunc=dns)
