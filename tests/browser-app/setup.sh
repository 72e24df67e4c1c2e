#!/usr/bin/env bash
# Installs what the web app's browser test (headend/tests/phone_web.rs, the_app_in_a_phone_sized_browser)
# needs: Debian's chromium (Playwright's own browser download is not used), zbarimg to decode the token's
# QR code, and Playwright for Python 1.64.1 in target/browser-venv. Idempotent; run as root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v zbarimg >/dev/null 2>&1 || need+=(zbar-tools)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
venv="$root/target/browser-venv"
if ! "$venv/bin/python" -c 'import playwright, sys; from importlib.metadata import version; sys.exit(version("playwright") != "1.64.1")' 2>/dev/null; then
    python3 -m venv "$venv"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/pip" install -q playwright==1.64.1
fi
echo "browser test: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), playwright 1.64.1 in $venv"
