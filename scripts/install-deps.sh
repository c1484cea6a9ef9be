#!/usr/bin/env bash
# Installs what vhost-blkd needs to build, test and demo on Debian 12 (run as root).
set -euo pipefail
# binutils (strip, objdump): scripts/build-deb.sh (dpkg-deb is in dpkg).
# mount (losetup, mount, umount), util-linux (fsfreeze) and e2fsprogs (mkfs.ext4): the loop-device,
# ramfs and frozen-filesystem tests, which fail under CI=true when a tool is missing.
# libvirt-daemon-system (libvirtd, virtlogd, the libvirt-qemu user, qemu.conf), libvirt-daemon-driver-qemu
# and libvirt-clients (virsh): LibvirtGuestTests, which starts libvirtd itself, so no init system is needed
# (the package's systemd units are installed and left unused where systemd is not running).
# prometheus: ExamplesTests evaluates the Grafana dashboard's queries on a real Prometheus scraping the daemon
# (the test starts its own server on a free port; the packaged service is not used).
# librbd-dev (the daemon links librbd and librados), ceph-mon, ceph-osd and ceph-common: RBDTests'
# throw-away cluster (scripts/ceph-test-cluster.sh).
packages=(liburing-dev libjansson-dev librbd-dev ceph-mon ceph-osd ceph-common pkg-config binutils qemu-system-x86 qemu-utils fio busybox-static cpio xz-utils kmod python3-venv util-linux mount e2fsprogs
          libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients prometheus)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then export PATH=/opt/swift/usr/bin:$PATH; else
        echo "swift 6 is required (https://www.swift.org/install/linux/)"; exit 1; fi
fi
