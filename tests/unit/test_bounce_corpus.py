"""Every fixture in tests/fixtures/bounces/ parses to the result written next to it.

Each ``NAME.msg`` has a ``NAME.json``: ``{"kind", "feedback_type", "recipients": [{"address",
"status", "reason", "hard"[, "reply_code"]}][, "job_id"][, "message_id"]}``. Addresses compare
case-insensitively; ``reply_code``/``job_id``/``message_id`` are checked when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.inbound import BounceReport, parse_bounce

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
CASES = sorted(FIXTURES.glob("*.msg"))


def _expected(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode(path.with_suffix(".json").read_bytes())
    return data


def _mismatches(report: BounceReport, expected: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if report.kind.value != expected["kind"]:
        problems.append(f"kind {report.kind.value} != {expected['kind']}")
    if report.feedback_type != expected.get("feedback_type"):
        problems.append(f"feedback_type {report.feedback_type} != {expected.get('feedback_type')}")
    got = report.recipients
    want = expected["recipients"]
    if len(got) != len(want):
        problems.append(f"{len(got)} recipients != {len(want)}: {[r.address for r in got]}")
    for have, should in zip(got, want, strict=False):
        if have.address.lower() != should["address"].lower():
            problems.append(f"address {have.address} != {should['address']}")
        for key in ("status", "reason", "hard", "reply_code"):
            if key not in should:
                continue
            value = getattr(have, key)
            value = value.value if hasattr(value, "value") else value
            if value != should[key]:
                problems.append(f"{should['address']} {key} {value!r} != {should[key]!r}")
    for key in ("job_id", "message_id"):
        if key in expected and getattr(report.hints, key) != expected[key]:
            problems.append(f"{key} {getattr(report.hints, key)!r} != {expected[key]!r}")
    return problems


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 100
    assert all(path.with_suffix(".json").exists() for path in CASES)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture(path: Path) -> None:
    report = parse_bounce(path.read_bytes())
    assert _mismatches(report, _expected(path)) == []


def test_corpus_accuracy_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Per-recipient reason accuracy over the corpus (printed with -s; all must agree)."""
    total = agree = 0
    for path in CASES:
        report = parse_bounce(path.read_bytes())
        expected = _expected(path)
        total += 1
        agree += not _mismatches(report, expected)
    with capsys.disabled():
        print(f"\nbounce corpus: {agree}/{total} files agree ({100 * agree / total:.1f}%)")
    assert agree == total
