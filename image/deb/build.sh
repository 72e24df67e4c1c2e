#!/usr/bin/env bash
# Builds the appliance's Debian package for a Pi:
#   image/deb/build.sh [aarch64|armv7]      -> target/deb/concentrator_VERSION_{arm64,armhf}.deb
# It cross-builds concentratord and concentrator (cross/build.sh) and the first-party driver plugins,
# strips them, and packs them with image/files/ (systemd units, sysusers, tmpfiles, udev rules, the
# default configuration, the first-boot provisioning script) using plain dpkg-deb: no cargo-deb needed.
# Set CONCENTRATOR_PLUGIN_KEY=vendor.pem to sign the plugins (`concentrator plugins sign`); unsigned
# plugins are shipped but only load from a plugin_dir whose trusted_keys sign them.
# SKIP_BUILD=1 packs what target/ already holds; RELEASE_DIR=DIR packs the binaries in DIR instead
# (a build made elsewhere, e.g. with another CARGO_TARGET_DIR; implies SKIP_BUILD).
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${1:-aarch64}
case "$arch" in
    aarch64) target=aarch64-unknown-linux-gnu; debarch=arm64; triple=aarch64-linux-gnu ;;
    armv7) target=armv7-unknown-linux-gnueabihf; debarch=armhf; triple=arm-linux-gnueabihf ;;
    *) echo "image/deb/build.sh: unknown target '$arch'; use aarch64 or armv7" >&2; exit 2 ;;
esac
plugins=(concentrator-driver-dlt645-plugin concentrator-driver-modbus-plugin concentrator-driver-znp-plugin)
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${RELEASE_DIR:-}" ]; then
    echo "image/deb/build.sh: cross-building for $target"
    bash cross/build.sh "$arch"
    args=()
    for p in "${plugins[@]}"; do args+=(-p "$p"); done
    cargo build --release --locked --target "$target" "${args[@]}"
fi
rel=${RELEASE_DIR:-target/$target/release}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The package version carries the commit so that two builds of one release are told apart.
rev=$(git rev-parse --short HEAD 2>/dev/null || echo 0)
debversion="$version-1+git$rev"
out=target/deb
stage=$out/stage-$debarch
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/concentrator/plugins" "$stage/usr/libexec/concentrator" \
    "$stage/lib/systemd/system" "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$stage/lib/udev/rules.d" \
    "$stage/etc/concentrator" "$stage/usr/share/doc/concentrator" "$stage/etc/ppp/ip-up.d"

strip=$triple-strip
for bin in concentratord concentrator; do
    install -m 0755 "$rel/$bin" "$stage/usr/bin/$bin"
    "$strip" --strip-unneeded "$stage/usr/bin/$bin"
done
for p in "${plugins[@]}"; do
    lib=lib${p//-/_}.so
    install -m 0644 "$rel/$lib" "$stage/usr/lib/concentrator/plugins/$lib"
    "$strip" --strip-unneeded "$stage/usr/lib/concentrator/plugins/$lib"
    if [ -n "${CONCENTRATOR_PLUGIN_KEY:-}" ]; then
        target/release/concentrator plugins sign --key "$CONCENTRATOR_PLUGIN_KEY" "$stage/usr/lib/concentrator/plugins/$lib"
    fi
done
f=image/files
install -m 0644 "$f/concentrator.toml" "$stage/etc/concentrator/concentrator.toml"
install -m 0644 "$f/concentrator.service" "$f/concentrator-firstboot.service" "$f/concentrator-ppp.service" \
    "$f/concentrator-ppp.path" "$f/concentrator-update.path" "$f/concentrator-update.service" \
    "$f/concentrator-update-stick@.service" "$f/concentrator-trial-failed.service" \
    "$stage/lib/systemd/system/"
install -m 0644 "$f/concentrator.sysusers" "$stage/usr/lib/sysusers.d/concentrator.conf"
install -m 0644 "$f/concentrator.tmpfiles" "$stage/usr/lib/tmpfiles.d/concentrator.conf"
install -m 0644 "$f/70-concentrator.rules" "$stage/lib/udev/rules.d/70-concentrator.rules"
install -m 0755 "$f/firstboot" "$stage/usr/libexec/concentrator/firstboot"
install -m 0755 "$f/ppp-link" "$stage/usr/libexec/concentrator/ppp-link"
install -m 0755 "$f/update-verdict" "$stage/usr/libexec/concentrator/update-verdict"
install -m 0755 "$f/update-from-stick" "$stage/usr/libexec/concentrator/update-from-stick"
install -m 0644 "$f/ppp.chat" "$stage/usr/lib/concentrator/ppp.chat"
install -m 0755 "$f/ppp-ip-up" "$stage/etc/ppp/ip-up.d/concentrator"
install -m 0644 image/README.md "$stage/usr/share/doc/concentrator/README.md"
cat >"$stage/usr/share/doc/concentrator/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: concentrator
Files: *
Copyright: concentrator developers
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
 OpenSSL is linked statically (Apache-2.0).
COPYRIGHT

printf '%s\n' /etc/concentrator/concentrator.toml /etc/ppp/ip-up.d/concentrator >"$stage/DEBIAN/conffiles"
installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: concentrator
Version: $debversion
Architecture: $debarch
Maintainer: concentrator developers <concentrator@example.invalid>
Section: misc
Priority: optional
Installed-Size: $installed_kib
Depends: libc6 (>= 2.34), libgcc-s1, systemd (>= 247), udev, ppp
Recommends: systemd-timesyncd
Homepage: https://example.invalid/concentrator
Description: prepayment meter concentrator for the Raspberry Pi
 concentratord reads electricity, water and gas meters on RS485 buses (DL/T 645-2007, Modbus RTU)
 and through a Zigbee coordinator, keeps each dwelling's prepaid credit, switches relays, and talks
 to the utility's head-end over MQTT with TLS. The package ships the daemon, the concentrator tool,
 the first-party driver plugins, a hardened systemd unit, udev rules for stable device names,
 first-boot provisioning from the boot partition, and the 3G data link (pppd in a unit of its own that
 the unprivileged daemon asks for through a request file).
CONTROL
cat >"$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    systemd-sysusers concentrator.conf || systemd-sysusers
    systemd-tmpfiles --create concentrator.conf || true
    if [ -d /run/udev ]; then udevadm control --reload-rules || true; udevadm trigger --subsystem-match=tty --subsystem-match=gpio || true; fi
    # Enabled as installed; started only on a running system (not in a chroot building an image).
    deb-systemd-helper enable concentrator.service concentrator-firstboot.service concentrator-ppp.path concentrator-update.path >/dev/null 2>&1 || \
        systemctl enable concentrator.service concentrator-firstboot.service concentrator-ppp.path concentrator-update.path >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl try-restart concentrator.service || true
    fi
fi
POSTINST
cat >"$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop concentrator.service concentrator-ppp.path concentrator-ppp.service || true
fi
PRERM
cat >"$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    deb-systemd-helper disable concentrator.service concentrator-firstboot.service concentrator-ppp.path concentrator-update.path >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
    deb-systemd-helper purge concentrator.service concentrator-firstboot.service concentrator-ppp.path concentrator-update.path >/dev/null 2>&1 || true
    # The store (credit ledger, outbox, secrets) is the utility's data: purge leaves it in place.
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
deb=$out/concentrator_${debversion}_$debarch.deb
rm -f "$out"/concentrator_*_"$debarch".deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
ln -sf "$(basename "$deb")" "$out/concentrator_$debarch.deb"
echo "image/deb/build.sh: $deb ($(du -k "$deb" | cut -f1) KiB)"
for bin in concentratord concentrator; do
    echo "  $bin (stripped): $(stat -c %s "$stage/usr/bin/$bin") bytes"
done
