"""Coverage-guided fuzzing of ``parse_bounce`` with atheris (libFuzzer).

Run it for as long as you like (new inputs that reach new code go into the corpus directory)::

    uv run python tests/fuzz/atheris_bounce.py -runs=200000 -max_len=65536 /tmp/bounce-corpus

Without a corpus directory it starts from a temporary copy of tests/fixtures/bounces (libFuzzer
writes into the first directory it is given, so the fixtures themselves are never touched).
A crash is any exception that reaches ``parse_bounce``'s last-resort guard (re-raised here from
the unguarded parser so libFuzzer prints its traceback) or a message that takes over
``MAX_SECONDS``; libFuzzer saves the input as ``crash-<sha1>`` and exits non-zero.
``tests/fuzz/test_atheris.py`` runs a short fixed session in CI.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["engine"]):
    from engine.inbound import parse as parse_module
    from engine.inbound.parse import parse_bounce
    from engine.inbound.patterns import load_patterns

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
MAX_SECONDS = 2.0
ENVELOPE_TO = "b-1-abcdefghij@bounces.example"


def test_one_input(data: bytes) -> None:
    started = time.perf_counter()
    report = parse_bounce(data, ENVELOPE_TO)
    elapsed = time.perf_counter() - started
    if any(d.startswith("parser error") for d in report.defects):
        parse_module._parse(data, ENVELOPE_TO)  # raise the real exception, with its traceback
        raise AssertionError(f"parse_bounce's guard fired: {report.defects}")
    if elapsed > MAX_SECONDS:
        raise AssertionError(f"{elapsed:.2f}s to parse {len(data)} bytes")
    if report.kind.value == "unknown" and report.recipients:
        raise AssertionError("an unknown message named recipients")


def seed_corpus(directory: Path) -> Path:
    """``directory`` filled with the bounce fixtures (libFuzzer adds what it finds)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in FIXTURES.glob("*.msg"):
        shutil.copy(path, directory / path.name)
    return directory


def main(argv: list[str]) -> None:
    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):
        # libFuzzer ends the process with exit(): no atexit cleanup, so say where it is.
        seeds = Path(tempfile.mkdtemp(prefix="bounce-corpus-"))
        print(f"corpus: {seeds} (seeded from {FIXTURES})", file=sys.stderr)
        args.append(str(seed_corpus(seeds)))
    # The pattern file is compiled once per process, on the first parse: a start-up cost the
    # per-message time limit must not count (it is seconds under instrumentation and load).
    load_patterns()
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
