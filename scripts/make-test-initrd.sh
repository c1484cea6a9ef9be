#!/bin/sh
# Appends a test script to the base guest initramfs:
#
#   scripts/make-test-initrd.sh BASE_INITRD SCRIPT OUT
#
# OUT is BASE_INITRD followed by a gzip'd cpio holding SCRIPT as /test.sh;
# the kernel unpacks concatenated archives in order. The guest's /init runs
# /test.sh and prints "E2E-EXIT: <status>" (see build-guest.sh).
set -eu
[ $# -eq 3 ] || { echo "usage: $0 BASE_INITRD SCRIPT OUT" >&2; exit 2; }
base=$1 script=$2 out=$3
[ -f "$base" ] || { echo "$0: no such file: $base" >&2; exit 1; }
[ -f "$script" ] || { echo "$0: no such file: $script" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vhost-blkd-initrd.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cp "$script" "$work/test.sh"
chmod 0755 "$work/test.sh"
(cd "$work" && echo test.sh | cpio -o -H newc --quiet -R 0:0) | gzip -n >"$work/extra.cpio.gz"
cat "$base" "$work/extra.cpio.gz" >"$out.tmp"
mv "$out.tmp" "$out"
