#!/usr/bin/env bash
# Generates the man pages from the command definitions (swift-argument-parser's
# generate-manual plugin, which reads each tool's --experimental-dump-help):
#
#   scripts/make-manpage.sh [OUTDIR]      # default OUTDIR: docs/
#
# Writes OUTDIR/vhost-blkctl.1 (every subcommand with its arguments and help) and
# OUTDIR/vhost-blkd.8 (the daemon's options). Works offline once the package's
# dependencies are resolved. SCRATCH (default .build) picks the build directory.
# Read them with `man -l docs/vhost-blkctl.1`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
out="$(mkdir -p "${1:-docs}" && cd "${1:-docs}" && pwd)"
scratch=${SCRATCH:-.build}
date=${MANPAGE_DATE:-$(date -u +%F)}

work=$(mktemp -d /tmp/vhost-blkd-man.XXXXXX)
trap 'rm -rf "$work"' EXIT
swift package --scratch-path "$scratch" --allow-writing-to-directory "$work" \
    generate-manual --configuration debug --date "$date" --output-directory "$work" >&2

for page in vhost-blkctl.1 vhost-blkd.1; do
    [ -s "$work/$page" ] || { echo "$0: generate-manual wrote no $page" >&2; exit 1; }
done
cp "$work/vhost-blkctl.1" "$out/vhost-blkctl.1"
# The daemon is a system administration command: section 8. It has no subcommands:
# drop the "subcommand" operand and the "help" subcommand generate-manual adds to
# every command's page.
sed -e 's/^\.Dt VHOST-BLKD 1$/.Dt VHOST-BLKD 8/' -e '/^\.Ar subcommand$/d' -e '/^\.It Em help$/,/^\.El$/d' \
    "$work/vhost-blkd.1" >"$out/vhost-blkd.8"
echo "wrote $out/vhost-blkctl.1 and $out/vhost-blkd.8"
