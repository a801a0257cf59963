"""The installed engine works: build the wheel, install it into a fresh venv (dependencies pinned
from uv.lock, from uv's cache when it has them), and start it from there, away from the source
tree: ``engine --version``, ``engine config check`` (which reads the packaged provider table and
bounce patterns), ``engine migrate``, then ``engine run`` against PostgreSQL and Redis with
shaping on until READY=1 and ``/healthz``, and SIGTERM for a clean exit. The unit's
``Documentation=`` files are installed under the venv's prefix."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine import sdnotify
from tests.conftest import REDIS_URL, TEST_VERP_SECRET
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "penguinmails-engine.service"
#: The prefix the unit and docs/install.md assume for the venv.
OPT_PREFIX = "/opt/penguinmails-engine"


def _uv() -> str:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.fail("uv is not installed (scripts/bootstrap.sh installs it)")
    return uv


def _run(
    *cmd: str | Path,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    assert done.returncode == 0, f"{cmd}: {done.stderr or done.stdout}"
    return done


def _install(uv: str, venv: Path, reqs: Path, wheel: Path) -> None:
    """Offline from uv's cache first; the registry only for what the cache lacks."""
    base = [uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin/python")]
    args = ["-r", str(reqs), str(wheel)]
    offline = subprocess.run([*base, "--offline", *args], capture_output=True, text=True)
    if offline.returncode != 0:
        _run(*base, *args, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = _uv()
    work = tmp_path_factory.mktemp("wheel")
    build = [uv, "build", "-q", "--wheel", "-o", str(work / "dist")]
    offline = subprocess.run([*build, "--offline"], cwd=ROOT, capture_output=True, timeout=180)
    if offline.returncode != 0:  # hatchling not in uv's cache yet: fetch it
        _run(*build, cwd=ROOT, timeout=300)
    (wheel,) = (work / "dist").glob("penguinmails_engine-*.whl")
    reqs = work / "requirements.txt"
    _run(uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-q",
         "-o", reqs, cwd=ROOT)  # fmt: skip
    venv = work / "venv"
    _run(uv, "venv", "-q", "--offline", "--python", sys.executable, venv)
    _install(uv, venv, reqs, wheel)
    return venv


def _env(tmp: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ} | {"PYTHONUNBUFFERED": "1"}


def _config(tmp: Path, dsn: str, prefix: str, node: FakeMailU, admin_port: int) -> Path:
    secret = tmp / "verp.secret"
    secret.write_text(TEST_VERP_SECRET + "\n")
    secret.chmod(0o600)
    path = tmp / "engine.toml"
    path.write_text(
        f"""
[database]
dsn = "{dsn}"
pool_min = 1
pool_max = 3
[redis]
url = "{REDIS_URL}"
prefix = "{prefix}"
[[relay.nodes]]
name = "n0"
host = "127.0.0.1"
port = {node.port}
tls = "none"
[shaping]
enabled = true
[dkim]
enabled = false
[inbound]
listen = "127.0.0.1:0"
verp_domain = "bounces.example.test"
verp_secret_file = "{secret}"
[admin]
listen = "127.0.0.1:{admin_port}"
"""
    )
    return path


def test_the_wheel_carries_its_data_and_docs(installed: Path) -> None:
    py = installed / "bin" / "python"
    code = (
        "import engine, engine.config as c;"
        "print(engine.__file__);"
        "print(c.packaged_data_file('providers.toml'));"
        "print(c.packaged_data_file('bounce_patterns.toml'))"
    )
    where, providers, patterns = _run(py, "-c", code, cwd=installed).stdout.split()
    assert where.startswith(str(installed)), where  # the installed copy, not the checkout
    assert Path(providers).is_file() and Path(patterns).is_file()
    assert Path(providers).is_relative_to(installed)
    docs = [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("Documentation=")
    ]
    assert docs
    for url in docs:
        path = url.removeprefix("file://")
        assert path.startswith(OPT_PREFIX + "/"), url
        assert (installed / path.removeprefix(OPT_PREFIX + "/")).is_file(), url
    share = installed / "share" / "penguinmails-engine"
    assert (share / "systemd" / "penguinmails-engine.service").read_text() == UNIT.read_text()
    assert (share / "engine.toml.example").is_file()


def test_the_installed_engine_starts_and_stops(
    installed: Path, clean_db: str, redis_prefix: str, mailu: FakeMailU, tmp_path: Path
) -> None:
    engine = installed / "bin" / "engine"
    env = _env(tmp_path)
    version = _run(engine, "--version", cwd=tmp_path, env=env).stdout
    assert version.startswith("engine 0.1") and "penguinmails-engine" in version
    port = _free_port()
    conf = _config(tmp_path, clean_db, redis_prefix, mailu, port)
    check = _run(engine, "config", "check", "--config", conf, cwd=tmp_path, env=env).stdout
    assert check.splitlines()[0] == f"config ok: {conf}"
    assert TEST_VERP_SECRET not in check
    _run(engine, "migrate", "--config", conf, cwd=tmp_path, env=env)

    systemd = sdnotify.Listener()
    log = (tmp_path / "engine.log").open("wb")
    proc = subprocess.Popen(
        [str(engine), "run", "--config", str(conf)],
        cwd=tmp_path,
        env={**env, "NOTIFY_SOCKET": systemd.path},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while proc.pid not in systemd.ready and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-3000:]
            systemd.wait(0.1)
            systemd.poll()
        assert proc.pid in systemd.ready, (tmp_path / "engine.log").read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        systemd.close()
    text = (tmp_path / "engine.log").read_text()
    assert "Traceback" not in text
