#ifndef VHOST_BLKD_CBUILDINFO_H
#define VHOST_BLKD_CBUILDINFO_H
/* The build's version string, fixed at compile time: Package.swift passes
   $VHOST_BLKD_VERSION (scripts/build-deb.sh sets it from `git describe`) as a
   C define to this target only, so a new version recompiles one C file. */

/** The version this build was made from, e.g. "1.2.0", "1.2.0-4-g1a2b3c4-dirty",
    or "0.0.0-unknown" when the build did not set VHOST_BLKD_VERSION. */
const char *vb_build_version(void);

#endif
