#!/usr/bin/env bash
# Make a fresh machine ready: uv, the locked Python env, and the system binaries tests/demo use
# (PostgreSQL server binaries and redis-server, for throwaway instances). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
    export PATH="$HOME/.local/bin:$PATH"
fi

need_apt=()
if ! command -v redis-server >/dev/null 2>&1; then need_apt+=(redis-server); fi
# Node.js and npm: the Node client's tests (clients/node) run in `make test`.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then need_apt+=(nodejs npm); fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need_apt+=(postgresql)
fi
# Postfix (MailU's MTA) and cyrus saslpasswd2: tests/fakes/postfix.py starts its own instance as
# a MailU-like relay node. Only the binaries are wanted: the package's own mail system must never
# run (it would listen on port 25), so its start is refused while installing and it is stopped and
# disabled afterwards.
need_postfix=0
if ! command -v postfix >/dev/null 2>&1 && [ ! -x /usr/sbin/postfix ]; then need_postfix=1; fi
if ! command -v saslpasswd2 >/dev/null 2>&1 && [ ! -x /usr/sbin/saslpasswd2 ]; then need_postfix=1; fi
if [ ${#need_apt[@]} -gt 0 ] || [ $need_postfix = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        if [ ${#need_apt[@]} -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
        fi
        if [ $need_postfix = 1 ]; then
            echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
            policy=/usr/sbin/policy-rc.d
            had_policy=0
            [ -e "$policy" ] && had_policy=1
            if [ $had_policy = 0 ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"; fi
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                postfix sasl2-bin libsasl2-modules >/dev/null
            if [ $had_policy = 0 ]; then rm -f "$policy"; fi
            if command -v systemctl >/dev/null 2>&1; then
                systemctl disable postfix >/dev/null 2>&1 || true
                if [ -d /run/systemd/system ]; then systemctl stop postfix >/dev/null 2>&1 || true; fi
            fi
            if [ -f /etc/postfix/main.cf ] && /usr/sbin/postfix status >/dev/null 2>&1; then
                /usr/sbin/postfix stop >/dev/null 2>&1 || true
            fi
        fi
    else
        echo "bootstrap: please install: ${need_apt[*]} postfix sasl2-bin (Debian packages)" >&2
    fi
fi

# promtool (Debian package prometheus) checks docs/prometheus in the tests. The package also
# ships a Prometheus server: a policy-rc.d of ours (any existing one is put back after) forbids
# starting it during the install, and the service is disabled afterwards (and stopped where
# systemd runs), so nothing listens and nothing starts at boot.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        policy=/usr/sbin/policy-rc.d
        saved=
        if [ -e "$policy" ]; then saved=$(mktemp) && cp -p "$policy" "$saved"; fi
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends prometheus >/dev/null ||
            echo "bootstrap: apt-get install prometheus failed; promtool tests will skip" >&2
        if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
        if command -v systemctl >/dev/null 2>&1; then
            if [ -d /run/systemd/system ]; then
                systemctl disable --now prometheus >/dev/null 2>&1 || true
            else
                systemctl disable prometheus >/dev/null 2>&1 || true
            fi
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d prometheus disable >/dev/null 2>&1 || true
        fi
    else
        echo "bootstrap: please install: prometheus (Debian package, for promtool)" >&2
    fi
fi

uv sync --frozen --quiet

# The Node client's dependencies (its tests run in `make test`), from the committed lockfile.
# `npm ci` reinstalls from scratch, so it runs only when the lockfile changed since the last run.
if command -v npm >/dev/null 2>&1; then
    lock=clients/node/package-lock.json
    stamp=clients/node/node_modules/.lock-sha256
    want=$(sha256sum "$lock" | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        (cd clients/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        echo "$want" >"$stamp"
    fi
else
    echo "bootstrap: please install Node.js 20+ and npm (the Node client's tests skip without)" >&2
fi

# Bytecode now, once (compileall skips what is up to date): with PYTHONDONTWRITEBYTECODE set, as
# on CI machines, every process would compile its ~460 modules at each start: `import
# engine.daemon` 1.5 s instead of 0.6 s, a DKIM signer process 0.46 s instead of 0.23 s, and the
# test suite starts hundreds of processes.
purelib=$(uv run --frozen python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYTHONDONTWRITEBYTECODE= uv run --frozen python -m compileall -q -j 0 "$purelib" engine bench tests \
    >/dev/null 2>&1 || true
