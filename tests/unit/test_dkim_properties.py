"""Property tests: whatever the headers and body, the signature verifies with dkimpy.

Messages are wild on purpose: 8-bit bytes, long lines, trailing and repeated whitespace, tabs,
folded headers, empty bodies, trailing empty lines, CRLF or LF or mixed line endings.
"""

from __future__ import annotations

import re

import dkim
from dkim.canonicalization import Relaxed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.dkim import canon
from engine.dkim.sign import sign_message
from engine.dkim.verify import verify_message
from engine.errors import DkimMessageError
from tests.unit.dkim_support import dkimpy_verify_all, key

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Raw bytes (any of 0..255) with the line breaks a header or body line cannot hold replaced.
_HEADER_SAFE = bytes.maketrans(b"\r\n\x00", b"xyz")
_BODY_SAFE = bytes.maketrans(b"\n", b"y")
_blanks = st.sampled_from([b" ", b"\t", b"  ", b" \t ", b"\t\t"])
_value = st.lists(
    st.one_of(st.binary(max_size=24).map(lambda b: b.translate(_HEADER_SAFE)), _blanks),
    max_size=8,
).map(b"".join)
_names = st.sampled_from(
    [b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
     b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID", b"X-Mailer",
     b"Received", b"Reply-To", b"cc", b"SUBJECT", b"x-long"]
)  # fmt: skip


@st.composite
def _header(draw: st.DrawFn, name: st.SearchStrategy[bytes] = _names) -> bytes:
    value = draw(_value)
    # Fold at a few points: EOL followed by a space or tab, as RFC 5322 allows.
    cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=2)))
    pieces = [value[a:b] for a, b in zip([0, *cuts], [*cuts, len(value)], strict=True)]
    folded = b"".join(
        piece + (b"\n" + draw(st.sampled_from([b" ", b"\t", b"  "])) if i < len(cuts) else b"")
        for i, piece in enumerate(pieces)
    )
    return draw(name) + b":" + draw(st.sampled_from([b" ", b"", b"\t", b"  "])) + folded


_body_line = st.one_of(
    st.lists(
        st.one_of(st.binary(max_size=16).map(lambda b: b.translate(_BODY_SAFE)), _blanks),
        max_size=10,
    ).map(b"".join),
    st.binary(min_size=990, max_size=1500).map(lambda b: b.translate(_BODY_SAFE)),  # long
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(_header(), max_size=8))
    headers.insert(draw(st.integers(0, len(headers))), draw(_header(st.just(b"From"))))
    body_lines = draw(st.lists(_body_line, max_size=12))
    body_lines += [b""] * draw(st.integers(0, 3))  # trailing empty lines
    text = b"\n".join(headers) + b"\n\n" + b"\n".join(body_lines)
    if draw(st.booleans()):
        text += b"\n"
    style = draw(st.sampled_from(["lf", "crlf", "mixed"]))
    if style == "crlf":
        text = text.replace(b"\n", b"\r\n")
    elif style == "mixed":
        text = re.sub(b"\n", lambda m: draw(st.sampled_from([b"\n", b"\r\n"])), text)
    return text


_body_piece = st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"\xff"])


def _no_bare_cr_in_headers(message: bytes) -> bool:
    block, _ = canon.split_message(message)
    return b"\r" not in block.replace(b"\r\n", b"")


@_SETTINGS
@given(message=messages(), algorithm=st.sampled_from(["rsa", "ed25519"]))
def test_every_signature_verifies_with_dkimpy(message: bytes, algorithm: str) -> None:
    if not _no_bare_cr_in_headers(message):  # refused on purpose, tested elsewhere
        return
    k = key(algorithm, 1024 if algorithm == "rsa" else 256, "example.com", "prop")
    signed = sign_message(message, [k])
    assert dkimpy_verify_all(signed, k) == [True]
    assert [r.ok for r in verify_message(signed, lambda n: k.public_txt.encode())] == [True]


@_SETTINGS
@given(message=messages())
def test_dual_signature_verifies_and_body_hash_reuse_is_exact(message: bytes) -> None:
    if not _no_bare_cr_in_headers(message):
        return
    rsa_key = key("rsa", 1024, "example.com", "r")
    ed_key = key("ed25519", 256, "example.com", "e")
    bh = canon.message_body_hash(message)
    signed = sign_message(message, [rsa_key, ed_key], body_hash=bh, timestamp=1_700_000_000)
    # RSA PKCS#1 v1.5 and Ed25519 are deterministic: reusing the hash changes nothing.
    assert signed == sign_message(message, [rsa_key, ed_key], timestamp=1_700_000_000)
    assert dkimpy_verify_all(signed, rsa_key, ed_key) == [True, True]


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400) | st.lists(_body_piece, max_size=60).map(b"".join))
def test_canonical_body_is_dkimpys(body: bytes) -> None:
    crlf = b"\r\n".join(re.split(b"\r?\n", body))  # what dkimpy's parser does to a body
    assert canon.canonical_body(body) == Relaxed.canonicalize_body(crlf)


_field_name = st.one_of(
    _names, st.binary(min_size=1, max_size=8).map(lambda b: b.translate(_HEADER_SAFE))
)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(_header(_field_name), max_size=10),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    names=st.lists(st.sampled_from([b"from", b"to", b"subject", b"x-long", b"cc"]), max_size=8),
)
def test_header_parse_select_and_canonicalise_are_dkimpys(
    fields: list[bytes], eol: bytes, names: list[bytes]
) -> None:
    """Our fast header path gives dkimpy's parse, selection and relaxed form, or refuses."""
    block = b"\n".join(fields).replace(b"\n", eol)  # folds inside fields follow the EOL too
    try:
        theirs, _ = dkim.rfc822_parse(block)
    except (dkim.MessageFormatError, IndexError):
        theirs = None
    try:
        ours = canon.parse_headers(block)
    except DkimMessageError:
        ours = None
    if ours is None:
        # We refuse only what dkimpy refuses, or the ambiguous: a leading continuation, or a
        # field with an empty name (dkimpy takes the colon itself for the name: "::" -> ":").
        empty_name = any(line.startswith(b":") for line in block.splitlines())
        assert theirs is None or block[:1] in (b" ", b"\t") or empty_name
        return
    assert theirs is not None and ours == [(bytes(n), bytes(v)) for n, v in theirs]
    expected = b"".join(
        n + b":" + v
        for n, v in Relaxed.canonicalize_headers(dkim.select_headers(list(ours), list(names)))
    )
    assert canon.canonical_signed_headers(ours, names) == expected
