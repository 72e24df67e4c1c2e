#!/usr/bin/env bash
# Installs what cross builds need on a Debian 12 (bookworm) x86_64 machine: the Rust targets, Debian's
# cross linkers and C libraries, qemu-user (the test runner), and perl/make for OpenSSL's build.
# Idempotent; run as root (or with sudo).
set -euo pipefail
need=()
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user perl make; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "cross/setup.sh: installing ${need[*]}"
    apt-get update -q || true   # a mirror mid-sync may fail one index; the packages we need are in main
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
echo "cross/setup.sh: ready (aarch64, armv7)"
