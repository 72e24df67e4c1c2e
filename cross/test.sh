#!/usr/bin/env bash
# Runs crates' tests for a Pi target under qemu-user (the runner in .cargo/config.toml):
#   cross/test.sh [aarch64|armv7] [CRATE...]     (default: aarch64, the HAL)
# Only crates whose tests need neither root nor network namespaces belong here.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-aarch64}" in
    aarch64) target=aarch64-unknown-linux-gnu ;;
    armv7) target=armv7-unknown-linux-gnueabihf ;;
    *) echo "cross/test.sh: unknown target '$1'; use aarch64 or armv7" >&2; exit 2 ;;
esac
shift || true
crates=("${@:-concentrator-hal}")
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
cargo test --locked --target "$target" "${args[@]}"
