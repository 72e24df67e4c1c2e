#!/usr/bin/env bash
# Builds the daemon and the CLI for a Pi: cross/build.sh [aarch64|armv7] (default aarch64).
# OpenSSL is built from source for the target (openssl's `vendored` feature): see cross/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-aarch64}" in
    aarch64) target=aarch64-unknown-linux-gnu ;;
    armv7) target=armv7-unknown-linux-gnueabihf ;;
    *) echo "cross/build.sh: unknown target '$1'; use aarch64 or armv7" >&2; exit 2 ;;
esac
cargo build --release --locked --target "$target" -p concentrator-appliance --features rpi,vendored-openssl
ls -l "target/$target/release/concentratord" "target/$target/release/concentrator"
