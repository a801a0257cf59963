"""What a SIGHUP applies and what it leaves for a restart (engine/reload.py, sans-IO)."""

from __future__ import annotations

import msgspec

from engine import reload
from engine.config import Config, ShapingProvider


def test_unchanged_file_changes_nothing() -> None:
    change = reload.plan(Config(), Config())
    assert change.applied == [] and change.refused == []
    assert change.config == Config()


def test_shaping_limits_and_providers_apply_listen_and_dsn_do_not() -> None:
    running = Config()
    loaded = msgspec.convert(
        {
            "database": {"dsn": "postgresql://other@db/engine"},
            "inbound": {"listen": "0.0.0.0:25", "parse_workers": 4},
            "queue": {"batch_size": 64},
            "shaping": {
                "sender_rate_per_s": 3.0,
                "providers": [{"name": "gmail", "rate_per_s": 50.0}],
            },
            "log": {"level": "debug"},
            "retention": {"events_days": 30},
        },
        Config,
    )
    change = reload.plan(running, loaded)
    assert sorted(change.applied) == [
        "log.level",
        "retention.events_days",
        "shaping.providers",
        "shaping.sender_rate_per_s",
    ]
    assert sorted(change.refused) == [
        "database.dsn",
        "inbound.listen",
        "inbound.parse_workers",
        "queue.batch_size",
    ]
    cfg = change.config
    assert cfg.shaping.sender_rate_per_s == 3.0
    assert cfg.shaping.providers == [ShapingProvider(name="gmail", rate_per_s=50.0)]
    assert cfg.log.level == "debug" and cfg.retention.events_days == 30
    # The running values stay for what needs a restart.
    assert cfg.database == running.database and cfg.inbound == running.inbound
    assert cfg.queue == running.queue


def test_shaping_on_off_needs_a_restart() -> None:
    loaded = msgspec.convert({"shaping": {"enabled": False, "burst_s": 2.0}}, Config)
    change = reload.plan(Config(), loaded)
    assert change.refused == ["shaping.enabled"] and change.applied == ["shaping.burst_s"]
    assert change.config.shaping.enabled is True and change.config.shaping.burst_s == 2.0


def test_fbl_reporters_apply_the_rest_of_inbound_waits() -> None:
    loaded = msgspec.convert(
        {
            "inbound": {
                "fbl_reporters": [{"domain": "fbl.example.net", "require": "spf"}],
                "verp_domain": "bounces.example.net",
            }
        },
        Config,
    )
    change = reload.plan(Config(), loaded)
    assert change.applied == ["inbound.fbl_reporters"]
    assert change.refused == ["inbound.verp_domain"]
    assert [r.domain for r in change.config.inbound.fbl_reporters] == ["fbl.example.net"]
    assert change.config.inbound.verp_domain == Config().inbound.verp_domain
