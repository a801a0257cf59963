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

from bench.corpus import score
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
    """Precision apart from recall over the whole corpus (printed with -s; all must agree).

    The figures come from ``python -m bench corpus`` (bench/corpus.py): detection, address
    recall and precision, reason and hard/soft accuracy, and per reason precision and recall.
    """
    figures = score(FIXTURES)
    lines = [
        f"bounce corpus: {figures['files']} files, {figures['bounces']} bounces,"
        f" {figures['recipients_scored']} recipients scored",
        f"  detection {figures['detection']}, false bounces {figures['false_bounces']},"
        f" address recall {figures['address_recall']} precision {figures['address_precision']}",
        f"  reason accuracy {figures['reason_accuracy']}, hard/soft {figures['hard_accuracy']},"
        f" feedback type {figures['feedback_accuracy']}",
    ]
    for name, row in figures["reasons"].items():
        lines.append(
            f"  {name:>16}: precision {row['precision']} recall {row['recall']}"
            f" ({row['labelled']} labelled, {row['given']} given)"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert figures["wrong_reasons"] == []
    assert figures["detection"] == 1.0 and figures["false_bounces"] == 0
    assert figures["address_recall"] == 1.0 and figures["address_precision"] == 1.0
    assert figures["reason_accuracy"] == 1.0 and figures["hard_accuracy"] == 1.0
    assert figures["feedback_accuracy"] == 1.0
    for row in figures["reasons"].values():
        assert row["precision"] in (None, 1.0) and row["recall"] in (None, 1.0)


def test_every_recipient_names_its_rule() -> None:
    """A wrong reason must be traceable to one rule: no recipient of the corpus lacks one."""
    missing = [
        f"{path.stem}: {recipient.address}"
        for path in CASES
        for recipient in parse_bounce(path.read_bytes()).recipients
        if not recipient.rule
    ]
    assert missing == []
