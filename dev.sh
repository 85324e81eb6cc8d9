#!/usr/bin/env bash
# One entry point that sets everything up on a fresh clone of a fresh machine
# and then runs what was asked:
#   ./dev.sh demo   - a complete local transfer of a generated sample media directory
#   ./dev.sh test   - lint, type-check, the web app's JS unit tests and the whole test suite
# Set-up is idempotent: the virtual environment is rebuilt only when
# requirements.lock or pyproject.toml changes, and apt-get runs only for missing system packages.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
SYSTEM_PACKAGES=(coturn iproute2 iptables chromium nodejs)

log() { printf '[dev.sh] %s\n' "$*" >&2; }

install_system_packages() {
    local missing=()
    command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    # The browser tests drive Debian's chromium (never a downloaded one) and the
    # web app's JS unit tests run under node; without them `test` fails, not skips.
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing system packages (${missing[*]}); network-lab tests will skip, browser tests fail"
        return 0
    fi
    log "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # coturn's package may start a system service; we only ever run our own instances.
    (systemctl disable --now coturn >/dev/null 2>&1 || true)
}

setup_venv() {
    local stamp="$VENV/.lock-stamp" want
    # The environment is what requirements.lock and pyproject.toml say: rebuilt when either changes.
    want=$(cat requirements.lock pyproject.toml | sha256sum)
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
        || { log "Python 3.11 is required"; exit 2; }
    log "creating virtual environment in $VENV"
    # --clear: a changed lock gets exactly the new set, nothing left from the old one.
    "$PY" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install -q pip==26.3
    "$VENV/bin/python" -m pip install -q -r requirements.lock
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
}

cmd=${1:-}
shift || true
case "$cmd" in
    demo)
        setup_venv
        exec "$VENV/bin/pipeline-demo" "$@"
        ;;
    test)
        install_system_packages
        setup_venv
        "$VENV/bin/ruff" check pipeline workers bench tests
        "$VENV/bin/mypy"
        command -v node >/dev/null 2>&1 || { log "node is missing (apt-get install nodejs)"; exit 1; }
        # The web app's own unit tests (pipeline/web/tests/*.test.js), no npm needed.
        node --test pipeline/web/tests/
        set +e
        "$VENV/bin/python" -m pytest "$@"
        rc=$?
        set -e
        # pytest exits 5 when no test ran: that is a failure, never a pass.
        [ $rc -eq 5 ] && { log "no tests ran"; exit 1; }
        exit $rc
        ;;
    setup)
        install_system_packages
        setup_venv
        ;;
    *)
        echo "usage: ./dev.sh demo|test|setup [args...]" >&2
        exit 2
        ;;
esac
