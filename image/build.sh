#!/usr/bin/env bash
# Builds the appliance's bootable disk image for a Raspberry Pi (arm64, Debian 12 with Debian's own
# kernel and Raspberry Pi firmware packages), with the concentrator .deb installed:
#
#   sudo bash image/build.sh            -> target/image/concentrator-arm64.img (+ vmlinuz, initrd.img)
#
# No loop devices and no mounts of the image: mmdebstrap builds the root in a directory (arm64
# maintainer scripts run under qemu-user through binfmt_misc), each filesystem is made from a directory
# (mkfs.ext4 -d, mkfs.vfat + mcopy), and the partition table is written into a plain file with sfdisk.
# Layout (MBR, as the Pi's boot ROM wants; two root slots for A/B updates, docs/ARCHITECTURE.md):
#   p1  FAT32  RASPIFIRM  256 MiB  /boot/firmware: firmware, kernel, initrd, DTBs, config.txt,
#                                  cmdline.txt, and the installer's provisioning bundle
#   p2  ext4   root-a     ~800 MiB /, mounted read-only: the slot the image boots
#   p3  ext4   root-b     the same  the other slot, empty until an update writes it
#   p4  ext4   store      256 MiB  /var/lib/concentrator: ledger, outbox, secrets (read-write)
# Cache (image/cache/, git-ignored): the downloaded .debs and the base root filesystem, keyed by the
# package list and this script's base recipe; a second build on the same machine skips mmdebstrap.
# Boot files per slot (docs/ARCHITECTURE.md, *Signed A/B updates*): vmlinuz-a, initrd-a.img and
# cmdline-a.txt; config.txt (written by the image's own `concentrator update commit`) boots slot A, and
# version-a.txt names the version in it. Beside the image: root.ext4 (slot A's filesystem, what a
# release's update bundle carries), vmlinuz and initrd.img, and release.pub, the key updates must be
# signed with.
# Environment: SKIP_DEB=1 packs the .deb already in target/deb; STORE_MB, BOOT_MB; SUITE (bookworm);
# MIRROR; EXTRA_PACKAGES (space-separated, e.g. "openssh-server"); RELEASE_PUB, the utility's release
# public key (PEM; without it a development key pair is made in image/cache/ and its private half
# copied to target/image/release-dev.key for the HIL test: never ship such an image).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
start=$(date +%s)
step_no=0
steps=7
step() {
    step_no=$((step_no + 1))
    printf '\n[image %d/%d, %3ds] %s\n' "$step_no" "$steps" $(($(date +%s) - start)) "$*"
}
die() { echo "image/build.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap's root mode and file ownership in the filesystems)"

suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
boot_mb=${BOOT_MB:-256}
store_mb=${STORE_MB:-256}
cache=$repo/image/cache
out=$repo/target/image
work=$out/work
mkdir -p "$cache/apt" "$out"

step "tools (image/setup.sh)"
bash image/setup.sh

# The base: everything but our package. Minimal: systemd, udev, the kernel and initramfs-tools,
# the Pi's firmware, networkd+resolved (DHCP and DNS on a read-only root), timesyncd (the Pi has no
# RTC, and TLS needs the time), ppp (the 3G data link: concentrator-ppp@.service). No ca-certificates:
# the uplink trusts only the provisioned utility CA.
packages="systemd-sysv,udev,kmod,linux-image-arm64,raspi-firmware,initramfs-tools,systemd-resolved,systemd-timesyncd,zstd,ppp"
[ -z "${EXTRA_PACKAGES:-}" ] || packages="$packages,${EXTRA_PACKAGES// /,}"
recipe_version=3 # bump when the hooks below change what the base contains
key=$(printf '%s|%s|%s|%s|%s' "$suite" "$mirror" "$packages" "$recipe_version" "$(sha256sum image/rootfs/initramfs-modules | cut -c1-16)" | sha256sum | cut -c1-16)
base=$cache/base-$suite-arm64-$key.tar

step "base root filesystem (mmdebstrap, arm64 under qemu-user)"
if [ -f "$base" ]; then
    echo "cached: $base"
else
    echo "not cached: building $base (about 4 minutes; the .debs are cached in $cache/apt)"
    # The initramfs holds only the modules that a Pi (SD card) and QEMU's virt machine need to find the
    # root, so building it under emulation takes seconds instead of minutes (MODULES=most copies ~3000).
    mmdebstrap --mode=root --arch=arm64 --variant=minbase \
        --components=main,non-free-firmware \
        --include="$packages" \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt=force-confdef --dpkgopt=force-confold \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*' \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
        --setup-hook="sync-in '$cache/apt' /var/cache/apt/archives" \
        --setup-hook='mkdir -p "$1"/etc/initramfs-tools/conf.d "$1"/etc/default "$1"/boot/firmware' \
        --setup-hook="cp '$repo/image/rootfs/initramfs-modules' \"\$1\"/etc/initramfs-tools/modules" \
        --setup-hook='printf "MODULES=list\nCOMPRESS=zstd\n" > "$1"/etc/initramfs-tools/conf.d/concentrator' \
        --setup-hook='printf "ROOTPART=LABEL=root\nCONSOLES=\"tty0 ttyS1,115200\"\n" > "$1"/etc/default/raspi-firmware' \
        --customize-hook="sync-out /var/cache/apt/archives '$cache/apt'" \
        --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages* "$1"/var/lib/apt/lists/*_InRelease' \
        --skip=download/empty \
        --format=tar "$suite" "$cache/base-partial.tar" "$mirror"
    mv "$cache/base-partial.tar" "$base"
    # Keep one base per machine: older keys are dead weight.
    find "$cache" -maxdepth 1 -name 'base-*.tar*' ! -name "$(basename "$base")" -exec rm -rf {} +
fi

step "the arm64 .deb (image/deb/build.sh aarch64); unpack the base and install it"
if [ -z "${SKIP_DEB:-}" ] || [ ! -e target/deb/concentrator_arm64.deb ]; then
    bash cross/setup.sh
    bash image/deb/build.sh aarch64
fi
deb=$(readlink -f target/deb/concentrator_arm64.deb)
echo "package: $deb"
rm -rf "$work"
mkdir -p "$work/root"
root=$work/root
tar -C "$root" -xpf "$base" --numeric-owner
cp "$deb" "$root/tmp/concentrator.deb"
# /proc for the maintainer scripts (systemd-tmpfiles needs it); the only mount, of the directory tree.
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
chroot "$root" dpkg -i /tmp/concentrator.deb
# The configuration lives on the store partition, and every slot's /etc/concentrator links to it, so an
# update (a new root) keeps what first boot provisioned and what the installer commissioned.
install -d -m 0755 "$root/var/lib/concentrator/config"
mv "$root/etc/concentrator/concentrator.toml" "$root/var/lib/concentrator/config/concentrator.toml"
chroot "$root" chown -R concentrator:concentrator /var/lib/concentrator/config
ln -s /var/lib/concentrator/config/concentrator.toml "$root/etc/concentrator/concentrator.toml"
ln -s /var/lib/concentrator/config/ledger.toml "$root/etc/concentrator/ledger.toml"
chroot "$root" concentratord validate /etc/concentrator/concentrator.toml
# The release key that updates must be signed with.
if [ -n "${RELEASE_PUB:-}" ]; then
    release_pub=$RELEASE_PUB
    rm -f "$out/release-dev.key"
else
    release_pub=$cache/release-dev.pub
    if [ ! -f "$cache/release-dev.key" ] || [ ! -f "$release_pub" ]; then
        openssl genpkey -algorithm ed25519 -out "$cache/release-dev.key"
        openssl pkey -in "$cache/release-dev.key" -pubout -out "$release_pub"
    fi
    install -m 0600 "$cache/release-dev.key" "$out/release-dev.key"
    echo "WARNING: no RELEASE_PUB given: this image trusts a development release key ($cache/release-dev.key)"
fi
install -D -m 0644 "$release_pub" "$root/usr/share/concentrator/release.pub"
cp "$release_pub" "$out/release.pub"
version=$(dpkg-deb -f "$deb" Version)
umount "$root/proc"
trap - EXIT
rm -f "$root/tmp/concentrator.deb"
[ -d "$root/var/lib/concentrator/secrets" ] || die "the package's tmpfiles did not create the store"

step "configure the appliance (read-only root, store partition, network, first boot)"
cp -a image/rootfs/etc/. "$root/etc/"
# Slot A names itself: the kernel's root= (cmdline.txt, and raspi-firmware's setting for the next kernel
# it installs) and fstab say root-a; an update writing slot B writes root-b into that slot's copies.
sed -i 's/^ROOTPART=.*/ROOTPART=LABEL=root-a/' "$root/etc/default/raspi-firmware"
# `ro`: the root stays read-only (fstab has no line for it, being either slot's).
sed -i -e 's/root=LABEL=root\b/root=LABEL=root-a/' -e 's/ rw / ro /' "$root/boot/firmware/cmdline.txt"
grep -q 'root=LABEL=root-a' "$root/boot/firmware/cmdline.txt" || die "cmdline.txt does not name root-a: $(cat "$root/boot/firmware/cmdline.txt")"
grep -qE '(^| )ro( |$)' "$root/boot/firmware/cmdline.txt" || die "cmdline.txt does not say ro: $(cat "$root/boot/firmware/cmdline.txt")"
# Slot A's boot files under the names an update writes for a slot, and config.txt from the image's own
# tool (the same file `concentrator update commit` writes after an update).
cp -L "$root/vmlinuz" "$root/boot/firmware/vmlinuz-a"
cp -L "$root/initrd.img" "$root/boot/firmware/initrd-a.img"
mv "$root/boot/firmware/cmdline.txt" "$root/boot/firmware/cmdline-a.txt"
find "$root/boot/firmware" -maxdepth 1 \( -name 'vmlinuz-[0-9]*' -o -name 'initrd.img-[0-9]*' \) -delete
chroot "$root" concentrator update commit --boot /boot/firmware --running a
echo "$version" >"$root/boot/firmware/version-a.txt"
echo concentrator >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tconcentrator\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# An empty machine-id: systemd makes one per boot on the read-only root (and per device, not per image).
: >"$root/etc/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1 || true
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service >/dev/null 2>&1 || true
# The root account stays locked; the console shows the boot and the daemon's log lines.
chroot "$root" passwd -l root >/dev/null

step "filesystems from directories (boot FAT32, root ext4 read-only, store ext4)"
# Split the tree: /boot/firmware and /var/lib/concentrator become their own partitions.
mkdir -p "$work/boot" "$work/store"
cp -a "$root/boot/firmware/." "$work/boot/"
find "$root/boot/firmware" -mindepth 1 -delete
cp -a "$root/var/lib/concentrator/." "$work/store/"
chown --reference="$root/var/lib/concentrator" "$work/store"
chmod --reference="$root/var/lib/concentrator" "$work/store"
find "$root/var/lib/concentrator" -mindepth 1 -delete
[ -f "$work/boot/config.txt" ] || die "raspi-firmware did not populate /boot/firmware"
cp image/rootfs/provisioning-README.txt "$work/boot/concentrator-README.txt"
# The kernel and initrd for QEMU's direct kernel boot (the HIL test), next to the image.
cp -L "$root/vmlinuz" "$out/vmlinuz"
cp -L "$root/initrd.img" "$out/initrd.img"

root_kib=$(du -sk "$root" | cut -f1)
root_mb=$(( (root_kib * 125 / 100) / 1024 + 64 ))
rm -f "$work"/*.part
mkfs.vfat -C -F 32 -n RASPIFIRM "$work/boot.part" $((boot_mb * 1024)) >/dev/null
mcopy -s -i "$work/boot.part" "$work/boot/"* ::/
truncate -s "${root_mb}M" "$work/root.part"
mkfs.ext4 -q -F -L root-a -O ^has_journal -E root_owner=0:0 -d "$root" "$work/root.part"
# What a release's update bundle carries: slot A's filesystem as it is (an update writes it into the
# other slot, of the same size, and relabels it there; resize2fs -M finds nothing to take from a
# filesystem made with mkfs.ext4 -d at 125 % of its content).
cp --sparse=always "$work/root.part" "$out/root.ext4"
echo "$version" >"$out/version.txt"
# Slot B: an empty filesystem of the same size (sparse in the image), for the first update.
mkdir -p "$work/empty"
truncate -s "${root_mb}M" "$work/root-b.part"
mkfs.ext4 -q -F -L root-b -O ^has_journal -E root_owner=0:0 -d "$work/empty" "$work/root-b.part"
truncate -s "${store_mb}M" "$work/store.part"
mkfs.ext4 -q -F -L store -d "$work/store" "$work/store.part"
echo "boot ${boot_mb} MiB, root-a and root-b ${root_mb} MiB each (${root_kib} KiB used in A), store ${store_mb} MiB"

step "partition table into a plain file (sfdisk)"
img=$out/concentrator-arm64.img
rm -f "$img"
total_mb=$((1 + boot_mb + 2 * root_mb + store_mb))
truncate -s "${total_mb}M" "$img"
sfdisk --quiet "$img" <<SFDISK
label: dos
start=1MiB, size=${boot_mb}MiB, type=c, bootable
size=${root_mb}MiB, type=83
size=${root_mb}MiB, type=83
size=${store_mb}MiB, type=83
SFDISK
dd if="$work/boot.part" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.part" of="$img" bs=1M seek=$((1 + boot_mb)) conv=notrunc,sparse status=none
dd if="$work/root-b.part" of="$img" bs=1M seek=$((1 + boot_mb + root_mb)) conv=notrunc,sparse status=none
dd if="$work/store.part" of="$img" bs=1M seek=$((1 + boot_mb + 2 * root_mb)) conv=notrunc,sparse status=none
sfdisk --list "$img" | sed -n '/Device/,$p'

step "done"
rm -rf "$work"
printf 'image: %s (%s MiB, %s MiB allocated), version %s\nkernel for QEMU: %s/vmlinuz, %s/initrd.img\n' \
    "$img" "$total_mb" "$(($(du -k "$img" | cut -f1) / 1024))" "$version" "$out" "$out"
printf 'for update bundles: %s/root.ext4 (%s MiB), signed with the key whose public half is %s/release.pub\n' \
    "$out" "$(($(stat -c %s "$out/root.ext4") / 1048576))" "$out"
echo "write it to an SD card: docs/install.md, section 1 (took $(($(date +%s) - start)) s)"
