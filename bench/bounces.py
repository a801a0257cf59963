"""``python -m bench bounces``: bounce/complaint parse rate over the fixture corpus.

Every message under ``tests/fixtures/bounces/`` (real bounces of many MTAs, complaints,
auto-replies and non-bounces) is parsed with :func:`engine.inbound.parse_bounce`, round after
round, for ``--seconds``. The files are read once up front: this measures parsing, not disk.
With ``--workers N`` (default 1) N processes parse in parallel, as an inbound service with
several worker processes would; ``parse_msg_s_1proc`` is always measured too, first.

Contract key: ``parse_msg_s`` (DESIGN §8; target ≥ 2,000 on a 2-core machine).

``hostile_max_ms`` is the worst CPU time (``time.process_time``) of one
:func:`engine.inbound.evidence.analyse` (what the parse worker runs per message under its CPU
budget: the parse plus the DKIM evidence) over the hostile corpus of ``tests/fuzz/hostile.py``
(SMTP-legal messages up to 10 MiB built to stall a parser; target ≤ 250 ms, the default budget),
``hostile_worst`` the message that took it, ``hostile_parse_max_ms`` the same for
``parse_bounce`` alone. Each message runs twice and the faster run counts (a garbage-collection
pause is not the parser's cost).

``loop_lag_max_ms`` is the daemon's worst event-loop lag while that corpus is fed to it over SMTP
as it sends (target ≤ 50; bench/inbound_feed.py, which needs the PostgreSQL and Redis server
binaries; ``--no-feed`` skips it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import uvloop

from engine.inbound import BounceKind, parse_bounce
from engine.inbound.evidence import analyse

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bounces"


def _load(corpus: Path) -> list[bytes]:
    messages = [path.read_bytes() for path in sorted(corpus.glob("*.msg"))]
    if not messages:
        raise SystemExit(f"bench bounces: no *.msg files in {corpus}")
    return messages


def _parse_for(corpus: str, seconds: float) -> tuple[int, float, float]:
    """Parse the corpus repeatedly for about ``seconds``: (messages, wall s, cpu s)."""
    messages = _load(Path(corpus))
    for raw in messages:  # warm-up: compile the patterns, fill caches
        parse_bounce(raw)
    count = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    while True:
        for raw in messages:
            parse_bounce(raw)
        count += len(messages)
        if time.perf_counter() >= deadline:
            break
    return count, time.perf_counter() - wall0, time.process_time() - cpu0


def _hostile() -> dict[str, Any]:
    """Worst per-message parse CPU over the hostile corpus (see the module doc)."""
    from tests.fuzz.hostile import ENVELOPE_TO, hostile_corpus

    analyse(b"From: a@b.example\r\n\r\nwarm-up\r\n")
    costs: dict[str, float] = {}
    parse_costs: dict[str, float] = {}
    for name, raw in hostile_corpus().items():
        costs[name] = _best_cpu(analyse, raw, ENVELOPE_TO)
        parse_costs[name] = _best_cpu(parse_bounce, raw, ENVELOPE_TO)
    worst = max(costs, key=costs.__getitem__)
    return {
        "hostile_max_ms": round(1000 * costs[worst], 1),
        "hostile_worst": worst,
        "hostile_parse_max_ms": round(1000 * max(parse_costs.values()), 1),
        "hostile_messages": len(costs),
    }


def _best_cpu(call: Callable[[bytes, str], object], raw: bytes, envelope_to: str) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.process_time()
        call(raw, envelope_to)
        best = min(best, time.process_time() - started)
    return best


def _feed_hostile() -> dict[str, Any]:
    """``loop_lag_max_ms`` and friends: the hostile corpus over SMTP to a real daemon."""
    from bench.inbound_feed import feed
    from tests.fuzz.hostile import hostile_corpus

    tmp = Path(tempfile.mkdtemp(prefix="bench-bounces-"))
    return uvloop.run(feed(hostile_corpus(), tmp))


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Run the benchmark; returns ``{"parse_msg_s": ..., ...}``."""
    parser = argparse.ArgumentParser(prog="python -m bench bounces")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--workers", type=int, default=1, help="parallel parsing processes")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="directory of *.msg")
    parser.add_argument(
        "--no-feed",
        action="store_true",
        help="skip feeding the hostile corpus over SMTP to a real daemon (loop_lag_max_ms)",
    )
    args = parser.parse_args(list(argv))

    messages = _load(args.corpus)
    kinds: dict[str, int] = {}
    recipients = 0
    for raw in messages:
        report = parse_bounce(raw)
        kinds[report.kind.value] = kinds.get(report.kind.value, 0) + 1
        recipients += len(report.recipients)

    count, wall, cpu = _parse_for(str(args.corpus), args.seconds)
    single = count / wall
    result: dict[str, Any] = {
        "parse_msg_s": round(single, 1),
        "parse_msg_s_1proc": round(single, 1),
        "parse_msg_s_cpu": round(count / cpu, 1) if cpu > 0 else None,
        "us_per_msg": round(1e6 * wall / count, 1),
        "files": len(messages),
        "mean_bytes": round(sum(map(len, messages)) / len(messages)),
        "recipients": recipients,
        "bounces": kinds.get(BounceKind.DSN.value, 0) + kinds.get(BounceKind.NONSTANDARD.value, 0),
        "kinds": kinds,
        "workers": 1,
    }
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [
                pool.submit(_parse_for, str(args.corpus), args.seconds) for _ in range(args.workers)
            ]
            outcomes = [f.result() for f in futures]
        total = sum(n for n, _, _ in outcomes)
        slowest = max(w for _, w, _ in outcomes)
        result["parse_msg_s"] = round(total / slowest, 1)
        result["workers"] = args.workers
    result.update(_hostile())
    if not args.no_feed:
        result.update(_feed_hostile())
    return result
