"""Fuzzing parse_bounce: whatever arrives, no exception escapes and the time stays bounded.

Malformed MIME, random bytes, truncated reports, huge headers, wrong charsets and mangled
fixtures. Sized for the normal run (about 1,500 random cases plus every fixture cut at 8
points); raise ``max_examples`` for a longer hunt.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.inbound import BounceKind, BounceReport, Reason, parse_bounce
from engine.inbound.reasons import HARD_REASONS

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "bounces").glob("*.msg"))
SAMPLES = [path.read_bytes() for path in FIXTURES]
#: Generous: one message normally takes well under a millisecond.
MAX_SECONDS = 2.0

FUZZ = settings(
    max_examples=300,
    deadline=None,  # timing is asserted explicitly, with a bound that survives a loaded CI box
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(raw: bytes) -> BounceReport:
    started = time.perf_counter()
    report = parse_bounce(raw, envelope_to="b+1@bounces.example")
    assert time.perf_counter() - started < MAX_SECONDS
    assert isinstance(report.kind, BounceKind)
    assert report.hints.envelope_to == "b+1@bounces.example"
    if report.kind is BounceKind.UNKNOWN:
        assert report.recipients == ()
    for recipient in report.recipients:
        assert isinstance(recipient.reason, Reason)
        assert not recipient.hard or recipient.reason in HARD_REASONS
        assert recipient.address
    msgspec.json.encode(report.to_record("fuzz.msg"))  # always serialisable to the contract
    return report


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(st.sampled_from(SAMPLES), st.floats(min_value=0.0, max_value=1.0))
def test_truncated_fixtures(raw: bytes, fraction: float) -> None:
    check(raw[: int(len(raw) * fraction)])


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=40),
)
def test_byte_flips(raw: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(raw)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    check(bytes(data))


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.sampled_from(["x-unknown", "utf-7", "utf-16", "", '"', "iso-2022-jp", "klingon;;"]),
    st.integers(min_value=0, max_value=100_000),
)
def test_wrong_charsets_and_huge_headers(raw: bytes, charset: str, header_size: int) -> None:
    mangled = raw.replace(b"charset=", b"charset=" + charset.encode() + b";x=")
    huge = b"X-Huge: " + b"a" * header_size + b"\r\n" + b"X-Fold:\r\n" + b" b\r\n" * 200
    check(huge + mangled)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Final-Recipient",
                    "Original-Recipient",
                    "Action",
                    "Status",
                    "Diagnostic-Code",
                    "Remote-MTA",
                    "Reporting-MTA",
                    "Feedback-Type",
                    "Original-Rcpt-To",
                    "X-Junk",
                ]
            ),
            st.text(max_size=80),
        ),
        max_size=30,
    ),
    st.sampled_from(
        [
            "message/delivery-status",
            "message/global-delivery-status",
            "message/feedback-report",
            "text/plain",
        ]
    ),
    st.sampled_from(["delivery-status", "feedback-report", "", "other"]),
)
def test_random_report_fields(fields: list[tuple[str, str]], part_type: str, report: str) -> None:
    body = "\r\n".join(f"{name}: {value}" for name, value in fields)
    raw = (
        "From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report}; boundary="zz"\r\n\r\n'
        "--zz\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        f"--zz\r\nContent-Type: {part_type}\r\n\r\n{body}\r\n--zz--\r\n"
    ).encode("utf-8", "surrogatepass")
    check(raw)


def test_every_fixture_survives_every_cut_point_quickly() -> None:
    # Deterministic sweep: 8 cut points per fixture.
    for raw in SAMPLES:
        step = max(1, len(raw) // 8)
        for end in range(0, len(raw), step):
            check(raw[:end])
