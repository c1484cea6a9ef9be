#!/usr/bin/env bash
# Prints this checkout's version, the text `--version` and spdk_get_version
# report: `git describe --tags --dirty` of the newest vMAJOR.MINOR.PATCH tag
# without its "v" (1.2.0, or 1.2.0-4-g1a2b3c4-dirty: 4 commits past v1.2.0,
# with local changes); before the first tag, 0.0.0-COMMITS-gHASH[-dirty] in
# the same form. $VHOST_BLKD_VERSION, when set, wins; outside a git checkout
# (a source tarball) it is 0.0.0-unknown.
#
#   scripts/version.sh          the version
#   scripts/version.sh --deb    the same as a Debian version (deb-version(7)):
#                               1.2.0+4.g1a2b3c4.dirty, 0.0.0+57.g0de46e9
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VHOST_BLKD_VERSION:-}
if [ -z "$version" ]; then
    if described=$(git describe --tags --dirty --match 'v[0-9]*' 2>/dev/null); then
        version=${described#v}
    elif hash=$(git rev-parse --short HEAD 2>/dev/null); then
        dirty=""
        git update-index -q --refresh >/dev/null 2>&1 || true
        git diff-index --quiet HEAD -- 2>/dev/null || dirty="-dirty"
        version="0.0.0-$(git rev-list --count HEAD)-g$hash$dirty"
    else
        version="0.0.0-unknown"
    fi
fi
if [ "${1:-}" = --deb ]; then
    # deb-version(7): an upstream version has no "-" (no Debian revision here).
    # "-N-gHASH[-dirty]" (commits past the tag) sorts after the tag: "+N.gHASH[.dirty]";
    # any other "-" (a pre-release tag, v1.3.0-rc1) sorts before it: "~".
    base=$version extra=""
    if [[ $version =~ ^(.*)-([0-9]+)-(g[0-9a-f]+)(-dirty)?$ ]]; then
        base=${BASH_REMATCH[1]}
        extra="+${BASH_REMATCH[2]}.${BASH_REMATCH[3]}${BASH_REMATCH[4]:+.dirty}"
    elif [[ $version == *-dirty ]]; then
        base=${version%-dirty} extra="+dirty"
    fi
    base=${base//-/\~}
    [[ $base =~ ^[0-9] ]] || base="0.0.0~$base"
    version="$base$extra"
    version=${version//[^A-Za-z0-9.+~]/}
fi
echo "$version"
