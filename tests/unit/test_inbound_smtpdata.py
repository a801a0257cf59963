"""DataReader (chunked DATA) gives what aiosmtpd's line-by-line DATA loop gives, for any input
split into any chunks."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.inbound.smtpdata import TOO_LONG, TOO_MUCH, DataReader, DataResult

END = b"\r\n.\r\n"


def reference(stream: bytes, size_limit: int | None) -> tuple[bytes | None, bool, bytes]:
    """aiosmtpd 1.4's smtp_DATA, line by line (CRLF-terminated lines, limit 1001 with CRLF)."""
    pos, total, refused, lines = 0, 0, False, []
    while True:
        i = stream.find(b"\r\n", pos)
        line = stream[pos : i + 2]
        pos = i + 2
        if line == b".\r\n":
            break
        total += len(line)
        if (size_limit is not None and total > size_limit) or len(line) > 1001:
            refused = True
        lines.append(line)
    if refused:
        return None, True, stream[pos:]
    return b"".join(x[1:] if x.startswith(b".") else x for x in lines), False, stream[pos:]


def feed(
    stream: bytes, cuts: list[int], size_limit: int | None
) -> tuple[bytes | None, bool, bytes]:
    reader = DataReader(size_limit)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(points):
        result = reader.feed(stream[a:b])
        if result is not None:
            rest = stream[b:]
            return result.body, result.error is not None, result.leftover + rest
    raise AssertionError("end marker not found")


line = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b".", b"..", b". ", b".x", b"\r", b"\n", b"\r.", b"x\r", b"", b"."]),
    st.integers(990, 1010).map(lambda n: b"y" * n),
).map(lambda b: b.replace(b"\r\n", b"\n"))


@settings(max_examples=400, deadline=None)
@given(
    st.lists(line, max_size=30),
    st.lists(st.integers(0, 100_000), max_size=8),
    st.sampled_from([None, 50, 500, 5000]),
    st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b>\r\n"]),
)
def test_same_as_aiosmtpd(
    lines: list[bytes], cuts: list[int], size_limit: int | None, after: bytes
) -> None:
    # Lines joined by CRLF never form a bare "\r\n.\r\n" inside a line: a line is CRLF-free.
    body = b"".join(x + b"\r\n" for x in lines)
    stream = body + b".\r\n" + after
    assert feed(stream, cuts, size_limit) == reference(stream, size_limit)


def test_a_partial_end_marker_does_not_count_as_data() -> None:
    # 49 bytes of lines, then the end marker split after its "." and "\r": at the limit (50),
    # not over it (hypothesis found this split).
    body = b"\r\n" + b"\x00" * 9 + b"\r\n" + (b"\x00" * 10 + b"\r\n") * 3
    assert len(body) == 49
    reader = DataReader(50)
    assert reader.feed(body + b".\r") is None
    assert reader.feed(b"\n") == DataResult(body, None, b"")
    reader = DataReader(48)
    assert reader.feed(body + b".\r") is None
    result = reader.feed(b"\n")
    assert result is not None and result.error == TOO_MUCH


def test_errors_and_empty_message() -> None:
    assert DataReader(None).feed(b".\r\nQUIT\r\n") == DataResult(b"", None, b"QUIT\r\n")
    r = DataReader(100).feed(b"x" * 99 + b"\r\n" + END[2:])
    assert r is not None and r.error == TOO_MUCH
    reader = DataReader(None)
    assert reader.feed(b"a" * 5000) is None  # refused, not kept
    assert len(reader._buf) <= 4
    r = reader.feed(b"\r\n.\r\n")
    assert r is not None and r.error == TOO_LONG and r.leftover == b""
    # the end marker split across chunks, byte by byte
    reader = DataReader(None)
    out = [reader.feed(bytes([c])) for c in b"..a\r\nb\r\n.\r\n"]
    assert out[-1] is not None and out[-1].body == b".a\r\nb\r\n"
