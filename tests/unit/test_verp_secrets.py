"""VERP/unsubscribe secrets: guessable ones refused at load, secret files, rotation windows."""

from __future__ import annotations

import logging
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import config
from engine.compose import unsubscribe, verp, verp_keys
from engine.config import InboundConfig
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NEW = "3b1f0c8e6a2d4f97b5e1c3a0d8f6b2e4"
OLD = "9d4c2a7f1e6b0c3d8a5f2e9b7c4a1d06"
DOMAIN = "bounces.acme.example"
UNTIL = datetime(2027, 1, 15, tzinfo=UTC)


def _parse(inbound: dict[str, object], env: dict[str, str] | None = None) -> config.Config:
    return config.parse(config.apply_env({"inbound": inbound}, env or {}))


def _refused(inbound: dict[str, object], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        _parse(inbound, env)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)
    return err.value


def _file(tmp_path: Path, text: str, name: str = "verp.secret", mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_the_shipped_example_is_refused_and_says_what_to_do() -> None:
    shipped = tomllib.loads((ROOT / "config" / "engine.toml").read_text())
    example = shipped["inbound"]["verp_secret"]
    with pytest.raises(ConfigError) as err:
        config.load(ROOT / "config" / "engine.toml", env={})
    text = str(err.value)
    assert "[inbound] verp_secret" in text and "example" in text
    assert "openssl rand -hex 32" in text and example not in text
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    "value",
    [
        "change-me",  # the old default
        "change-me-to-a-long-random-string",  # the old example: 33 bytes, long enough
        "CHANGE-ME-TO-A-LONG-RANDOM-STRING",
        "demo-secret",
        "replace-me-with-the-output-of-openssl-rand-hex-32",
    ],
)
def test_example_values_are_refused_whatever_their_length(value: str) -> None:
    assert "[inbound] verp_secret is an example value" in str(_refused({"verp_secret": value}))


def test_short_or_placeholder_secrets_are_refused() -> None:
    err = _refused({"verp_secret": NEW[:31]})
    assert "[inbound] verp_secret is shorter than 32 bytes" in str(err)
    assert "openssl rand -hex 32" in str(err)
    assert _parse({"verp_secret": NEW[:32]}).inbound.verp_secret == NEW[:32]
    # bytes, not characters: 16 two-byte characters are 32 bytes
    assert _parse({"verp_secret": "éèêëàâäôöûüùîïçœ"}).inbound.verp_secret
    assert "placeholder" in str(_refused({"verp_secret": "x" * 64}))
    assert "placeholder" in str(_refused({"verp_secret": "0123" * 10}))


def test_the_environment_overrides_the_secret() -> None:
    cfg = _parse({"verp_secret": "change-me"}, {"ENGINE_INBOUND__VERP_SECRET": NEW})
    assert cfg.inbound.verp_secret == NEW
    _refused({}, {"ENGINE_INBOUND__VERP_SECRET": "short"})


def test_unset_loads_but_the_daemon_refuses_to_start() -> None:
    # migrate/status/dkim never sign an address; whatever signs or checks one needs it.
    cfg = _parse({})
    with pytest.raises(ConfigError, match=r"\[inbound\] verp_secret is not set") as err:
        verp_keys.announce(cfg.inbound)
    assert err.value.exit_code == 2 and "openssl rand -hex 32" in str(err.value)
    with pytest.raises(ConfigError):
        verp_keys.encode(1, cfg.inbound)
    with pytest.raises(ConfigError):
        unsubscribe.job_of("u-1-0000000000", cfg.inbound)


def test_secret_file_is_read_once_at_load(tmp_path: Path) -> None:
    cfg = _parse({"verp_secret_file": _file(tmp_path, NEW + "\n")})
    assert cfg.inbound.verp_secret == NEW  # trailing newline stripped
    address = verp_keys.encode(7, cfg.inbound)
    assert verp.decode(address, domain=cfg.inbound.verp_domain, secret=NEW) == 7
    # an empty file override (ENGINE_INBOUND__VERP_SECRET_FILE="") means "no file"
    assert _parse({"verp_secret": NEW, "verp_secret_file": ""}).inbound.verp_secret == NEW


def test_secret_file_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    assert "does not exist" in str(_refused({"verp_secret_file": missing}))
    short = _file(tmp_path, "0f5e2c9a7b1d\n", "short")
    assert "[inbound] verp_secret is shorter than 32 bytes" in str(
        _refused({"verp_secret_file": short})
    )
    empty = _file(tmp_path, "\n", "empty")
    assert "is empty" in str(_refused({"verp_secret_file": empty}))
    good = _file(tmp_path, NEW)
    both = _refused({"verp_secret": OLD, "verp_secret_file": good})
    assert "[inbound] verp_secret and [inbound] verp_secret_file are both set" in str(both)
    readable = _file(tmp_path, NEW, "shared", mode=0o644)
    assert "chmod 600" in str(_refused({"verp_secret_file": readable}))
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(128, 192)))
    binary.chmod(0o600)
    assert "not UTF-8" in str(_refused({"verp_secret_file": str(binary)}))
    assert "cannot be read" in str(_refused({"verp_secret_file": str(tmp_path)}))
    # the example value is refused from a file too
    example = _file(tmp_path, "change-me-to-a-long-random-string\n", "example")
    assert "example value" in str(_refused({"verp_secret_file": example}))


def _rotated(tmp_path: Path, until: object = "2027-01-15T00:00:00Z") -> InboundConfig:
    return _parse(
        {
            "verp_domain": DOMAIN,
            "verp_secret": NEW,
            "verp_previous": [{"secret_file": _file(tmp_path, OLD + "\n"), "until": until}],
        }
    ).inbound


def test_previous_entries_are_validated(tmp_path: Path) -> None:
    cfg = _rotated(tmp_path)
    assert cfg.verp_previous[0].secret == OLD and cfg.verp_previous[0].until == UNTIL
    # TOML datetimes work as well as RFC 3339 strings (the environment gives strings)
    toml = tomllib.loads(f'[[p]]\nsecret = "{OLD}"\nuntil = 2027-01-15T00:00:00Z\n')["p"]
    assert _parse({"verp_secret": NEW, "verp_previous": toml}).inbound.verp_previous[0].until == (
        UNTIL
    )
    key = "[[inbound.verp_previous]] #1 secret"
    base: dict[str, object] = {"verp_secret": NEW}
    assert key in str(_refused({**base, "verp_previous": [{"secret": "short", "until": UNTIL}]}))
    weak = [{"secret": "change-me-to-a-long-random-string", "until": UNTIL}]
    assert "example value" in str(_refused({**base, "verp_previous": weak}))
    assert f"{key} is not set" in str(_refused({**base, "verp_previous": [{"until": UNTIL}]}))
    both = [{"secret": OLD, "secret_file": _file(tmp_path, OLD, "b"), "until": UNTIL}]
    assert "both set" in str(_refused({**base, "verp_previous": both}))
    naive = [{"secret": OLD, "until": "2027-01-15T00:00:00"}]
    assert "verp_previous[0].until" in str(_refused({**base, "verp_previous": naive}))
    assert "until" in str(_refused({**base, "verp_previous": [{"secret": OLD}]}))


def test_rotation_window_is_evaluated_at_check_time(tmp_path: Path) -> None:
    cfg = _rotated(tmp_path)
    before, after = UNTIL - timedelta(seconds=1), UNTIL
    old_bounce = verp.encode(41, domain=DOMAIN, secret=OLD)
    old_unsub = verp.encode(42, domain=DOMAIN, secret=OLD, local_prefix="u")
    old_token = old_unsub.rpartition("@")[0]
    for now, want in ((before, True), (after, False)):
        assert (verp_keys.decode(old_bounce, cfg, now=now) == 41) is want
        assert (unsubscribe.job_of(old_unsub, cfg, now=now) == 42) is want
        assert (unsubscribe.job_of(old_token, cfg, now=now) == 42) is want
    # new addresses and tokens are always made with the current secret, accepted at any time
    new_bounce = verp_keys.encode(43, cfg)
    assert verp.decode(new_bounce, domain=DOMAIN, secret=NEW) == 43
    assert verp.decode(new_bounce, domain=DOMAIN, secret=OLD) is None
    assert (
        unsubscribe.token(44, cfg)
        == verp.encode(44, domain=DOMAIN, secret=NEW, local_prefix="u").rpartition("@")[0]
    )
    for now in (before, after + timedelta(days=365)):
        assert verp_keys.decode(new_bounce, cfg, now=now) == 43
        assert unsubscribe.job_of(unsubscribe.token(44, cfg), cfg, now=now) == 44
    # a prefix never stands for the other: a u- token is not a bounce address, even rotated
    assert verp_keys.decode(old_unsub, cfg, now=before) is None
    # a secret that was never configured is never accepted
    stranger = verp.encode(45, domain=DOMAIN, secret="f" * 8 + OLD[8:])
    assert verp_keys.decode(stranger, cfg, now=before) is None


def test_expired_entries_are_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _rotated(tmp_path)
    with caplog.at_level(logging.INFO, logger="engine.inbound"):
        verp_keys.announce(cfg, now=UNTIL - timedelta(days=1))
        verp_keys.announce(cfg, now=UNTIL + timedelta(days=1))
    active, expired = caplog.records
    assert active.levelno == logging.INFO and "accepted until" in active.getMessage()
    assert expired.levelno == logging.WARNING and "expired" in expired.getMessage()
    assert getattr(expired, "until") == UNTIL.isoformat()  # noqa: B009
    assert OLD not in caplog.text and NEW not in caplog.text


def test_reload_says_secret_changes_need_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import logs
    from engine.daemon import Daemon

    monkeypatch.setattr(logs, "setup", lambda *_: None)  # keep pytest's log capture
    conf = tmp_path / "engine.toml"
    conf.write_text(f'[inbound]\nverp_secret = "{NEW}"\n')
    daemon = Daemon(config.load(conf, env={}), str(conf))
    with caplog.at_level(logging.INFO):
        daemon._on_reload()  # unchanged: no warning
        assert "VERP secrets changed" not in caplog.text
        conf.write_text(f'[inbound]\nverp_secret = "{OLD}"\n')
        daemon._on_reload()
    assert "[inbound] VERP secrets changed: not applied until a restart" in caplog.text
    assert OLD not in caplog.text and NEW not in caplog.text
