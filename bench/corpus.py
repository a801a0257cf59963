"""``python -m bench corpus``: how well the parser reads the labelled bounce corpus.

Every ``NAME.msg`` under ``tests/fixtures/bounces/`` with its ``NAME.json`` (the expected kind,
feedback type and recipients) is parsed once and scored the way an unseen labelled corpus would
be, with precision apart from recall (a wrong address or reason is worse than none):

- ``detection``: of the messages labelled as bounces (``dsn``/``nonstandard``), the share parsed
  as bounces; ``false_bounces``: messages labelled otherwise that were parsed as bounces;
- ``address_recall`` / ``address_precision``: failed addresses found among those labelled, and
  addresses reported (in any bounce) that are labelled;
- ``reason_accuracy`` and ``hard_accuracy`` over the recipients found with the right address;
- ``reasons``: per reason, ``precision`` (of the recipients given that reason, the share labelled
  so), ``recall`` (of those labelled with it, the share given it) and the counts;
- ``feedback_accuracy``: complaints whose feedback type is right.

:func:`score` is also what ``tests/unit/test_bounce_corpus.py`` reports from.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine.inbound import parse_bounce
from engine.inbound.report import BounceKind

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bounces"
_BOUNCE_KINDS = frozenset({BounceKind.DSN.value, BounceKind.NONSTANDARD.value})


class _Counts(msgspec.Struct):
    labelled: int = 0  # recipients labelled with the reason (found with the right address)
    given: int = 0  # recipients the parser gave the reason
    agreed: int = 0


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def score(corpus: Path = DEFAULT_CORPUS) -> dict[str, Any]:
    """Score the parser on every labelled ``*.msg`` of ``corpus`` (see the module doc)."""
    files = bounces = detected = false_bounces = 0
    labelled_addresses = reported = 0
    matched = reason_right = hard_right = 0  # matched: reported with a labelled address
    complaints = complaint_right = 0
    reasons: dict[str, _Counts] = {}
    wrong: list[str] = []
    for path in sorted(corpus.glob("*.msg")):
        label_path = path.with_suffix(".json")
        if not label_path.exists():
            continue
        files += 1
        expected: dict[str, Any] = msgspec.json.decode(label_path.read_bytes())
        report = parse_bounce(path.read_bytes())
        want_bounce = expected["kind"] in _BOUNCE_KINDS
        got_bounce = report.kind.value in _BOUNCE_KINDS
        if want_bounce:
            bounces += 1
            detected += got_bounce
        elif got_bounce and report.recipients:
            false_bounces += 1
        if expected["kind"] == BounceKind.ARF.value:
            complaints += 1
            complaint_right += report.feedback_type == expected.get("feedback_type")
        want = {r["address"].lower(): r for r in expected["recipients"]} if want_bounce else {}
        labelled_addresses += len(want)
        if not got_bounce:
            continue
        for recipient in report.recipients:
            reported += 1
            label = want.get(recipient.address.lower())
            if label is None:
                continue
            matched += 1
            have, should = recipient.reason.value, label["reason"]
            reasons.setdefault(should, _Counts()).labelled += 1
            reasons.setdefault(have, _Counts()).given += 1
            if have == should:
                reason_right += 1
                reasons[have].agreed += 1
            else:
                wrong.append(f"{path.stem}: {recipient.address} {have} != {should}")
            hard_right += recipient.hard == label["hard"]
    return {
        "files": files,
        "bounces": bounces,
        "detection": _ratio(detected, bounces),
        "false_bounces": false_bounces,
        "address_recall": _ratio(matched, labelled_addresses),
        "address_precision": _ratio(matched, reported),
        "recipients_scored": matched,
        "reason_accuracy": _ratio(reason_right, matched),
        "hard_accuracy": _ratio(hard_right, matched),
        "feedback_accuracy": _ratio(complaint_right, complaints),
        "reasons": {
            name: {
                "precision": _ratio(counts.agreed, counts.given),
                "recall": _ratio(counts.agreed, counts.labelled),
                "labelled": counts.labelled,
                "given": counts.given,
            }
            for name, counts in sorted(reasons.items())
        },
        "wrong_reasons": wrong,
    }


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Run the scoring; returns the :func:`score` figures."""
    parser = argparse.ArgumentParser(prog="python -m bench corpus")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="directory of *.msg")
    args = parser.parse_args(list(argv))
    return score(args.corpus)
