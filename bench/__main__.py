"""``python -m bench NAME [--json] [options]``: one benchmark, one JSON object (DESIGN §8).

Ratios are measured in the same run (these machines are noisy): every benchmark that reports a
ratio runs its baseline in the same process invocation, on the same inputs.
"""

from __future__ import annotations

import importlib
import sys

import orjson

BENCHES = {
    "e2e": "bench.e2e",
    "latency": "bench.e2e",
    "dkim": "bench.dkim",
    "bounces": "bench.bounces",
    "corpus": "bench.corpus",
    "enqueue": "bench.enqueue",
    "memory": "bench.memory",
    "fairness": "bench.fairness",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        sys.stderr.write(f"usage: python -m bench {{{','.join(BENCHES)}}} [--json] [options]\n")
        return 2
    name, rest = argv[0], argv[1:]
    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    module = importlib.import_module(BENCHES[name])
    runner = getattr(module, f"run_{name}", None) or module.run
    result = runner(rest)
    if as_json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key:>16}: {value}\n")
    # A benchmark that lost or duplicated mail measured a broken engine: its figures do not count.
    # Every run of the invocation counts (``lost``, ``personalized_lost``, ...).
    broken = {
        k: v
        for k, v in result.items()
        if (k.endswith("lost") or k.endswith("duplicates")) and isinstance(v, int) and v
    }
    if broken:
        sys.stderr.write(f"bench {name}: {broken}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
