#!/usr/bin/env bash
# Installs what `cargo test --workspace` needs on a Debian or Ubuntu machine, then clears the list of
# skipped tests for the run that follows. Idempotent and quiet when everything is there already:
#
#   bash tests/setup.sh && cargo test --workspace && bash tests/skipped-summary.sh
#
# - Debian packages: a C toolchain, pkg-config and libssl-dev (the build: openssl-sys), Mosquitto (the
#   uplink, AKA, head-end and end-to-end tests start their own broker from /usr/sbin/mosquitto),
#   python3 with venv (the third-party peers), iproute2 (`ip`: the link-cut test's network namespaces),
#   util-linux (`flock`), postgresql (the head-end's PostgreSQL tests run their own server from its
#   binaries; the cluster Debian creates is not used). Installed with apt-get, through sudo when not root.
# - The peers' pinned Python packages in target/peer-venv (tests/peers/setup.sh; needs PyPI once).
# - target/skipped-tests.txt emptied: a test whose prerequisite is missing fails with the install
#   command, or, with CONCENTRATOR_ALLOW_SKIP=1, skips and appends a line there, which
#   tests/skipped-summary.sh counts after the run.
# The link-cut test also needs root (network namespaces); run the tests as root or in a privileged
# container, or set CONCENTRATOR_ALLOW_SKIP=1 and see it counted as skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "tests/setup.sh: $*"; }

# Debian package -> a file that shows it is installed (checked first: no dpkg query when present).
declare -A packages=(
    [gcc]=/usr/bin/cc
    [pkg-config]=/usr/bin/pkg-config
    [libssl-dev]=/usr/include/openssl/ssl.h
    [mosquitto]=/usr/sbin/mosquitto
    [python3]=/usr/bin/python3
    [iproute2]=/usr/sbin/ip
    [util-linux]=/usr/bin/flock
)
need=()
for pkg in "${!packages[@]}"; do
    [ -e "${packages[$pkg]}" ] || [ -e "/bin/${packages[$pkg]##*/}" ] || need+=("$pkg")
done
# PostgreSQL (the head-end's production store): its tests start their own server from
# /usr/lib/postgresql/N/bin (initdb into a temporary directory, a Unix socket there), whatever N is.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    need+=(postgresql)
fi
# Debian's python3 has the venv module but not ensurepip, without which `python3 -m venv` fails.
if ! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }; then
    need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${need[*]} (Debian package names), and this is not a Debian or Ubuntu machine: install them by hand" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            say "missing ${need[*]}; run as root: apt-get install ${need[*]}" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    say "installing ${need[*]}"
    # A mirror mid-sync may fail one index; the packages we need are in main.
    "${sudo[@]}" apt-get update -q >/dev/null || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

# The peers' venv: quiet when it is complete.
if ! out=$(bash "$root/tests/peers/setup.sh" 2>&1); then
    echo "$out" >&2
    say "the Python peers could not be installed (above); the peer tests will fail" >&2
    exit 1
fi
case "$out" in
    *"already installed"*) ;;
    *) echo "$out" ;;
esac

# The browser tests' Playwright (pinned, in target/browser-venv), Debian's chromium, and zbarimg (the
# phone app's test decodes the token's QR code with it).
if ! out=$( (bash "$root/tests/browser/setup.sh" && bash "$root/tests/browser-app/setup.sh") 2>&1); then
    echo "$out" >&2
    say "Playwright or chromium could not be installed (above); the browser tests will fail" >&2
    exit 1
fi

target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
: >"$target/skipped-tests.txt"
