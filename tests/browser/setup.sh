#!/usr/bin/env bash
# Installs what the browser tests of the installer web UI need (appliance/tests/web_ui.rs runs
# tests/browser/*.py): Playwright for Python, pinned, in a virtual environment of its own
# (target/browser-venv), driving Debian's chromium (no browser download). Safe to run again.
#
#   bash tests/browser/setup.sh      # then: cargo test -p concentrator-appliance --test web_ui
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${CONCENTRATOR_BROWSER_VENV:-$root/target/browser-venv}"
version="1.64.1"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    else
        echo "tests/browser/setup.sh: /usr/bin/chromium is missing: run 'apt-get install -y chromium' as root" >&2
        exit 1
    fi
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))' 2>/dev/null)" != "$version" ]; then
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the pip package ships the driver only; the tests launch
    # /usr/bin/chromium through executable_path.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "playwright==$version"
fi
"$venv/bin/python" -c 'from importlib.metadata import version; print("playwright", version("playwright"))'
/usr/bin/chromium --version
