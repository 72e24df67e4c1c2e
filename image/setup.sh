#!/usr/bin/env bash
# Installs what image/build.sh and tests/hil/run.sh need on a Debian 12 x86_64 machine (as root):
# mmdebstrap with arch-test, qemu-user-static and binfmt-support (to run arm64 maintainer scripts),
# dosfstools and mtools (the FAT boot partition from a directory), fdisk (sfdisk on a plain file),
# qemu-system-arm with its firmware (the boot test), socat and mosquitto (the HIL test's peers), ppp and
# iproute2 (the HIL test's host end of the 3G link, in a network namespace), device-tree-compiler (the
# HIL test's stand-in for the Pi firmware sets the tryboot flag in the device tree).
# Then mounts binfmt_misc if it is not (it is not on our build machines) and enables qemu-aarch64.
set -euo pipefail
need=()
for pkg in mmdebstrap arch-test qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs \
    qemu-system-arm socat mosquitto mosquitto-clients openssl xz-utils ppp iproute2 device-tree-compiler; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "image/setup.sh: installing ${need[*]}"
    apt-get update -q || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
echo "image/setup.sh: ready (mmdebstrap, qemu-aarch64 binfmt handler enabled)"
