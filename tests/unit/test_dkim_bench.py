"""`python -m bench dkim` keeps its contract keys and verifies what it signs (tiny run)."""

from __future__ import annotations

from bench import dkim as dkim_bench


def test_bench_contract_keys_and_no_failures() -> None:
    result = dkim_bench.run(["--messages", "12", "--single-thread-sample", "4", "--rounds", "2"])
    assert {"engine_sign_s", "dkimpy_sign_s", "ratio", "verified", "failed"} <= result.keys()
    assert result["verified"] == 12 and result["failed"] == 0
    assert result["engine_sign_s"] > 0 and result["dkimpy_sign_s"] > 0
    assert result["message_bytes"] == 3072


def test_bench_ed25519_runs_without_a_dkimpy_baseline() -> None:
    result = dkim_bench.run(["--messages", "6", "--type", "ed25519", "--single-thread-sample", "2"])
    assert result["algorithm"] == "ed25519-sha256" and result["failed"] == 0
    assert result["dkimpy_sign_s"] is None and result["ratio"] is None
