#include "CBuildInfo.h"

#ifndef VHOST_BLKD_VERSION
#define VHOST_BLKD_VERSION "0.0.0-unknown"
#endif

const char *vb_build_version(void) { return VHOST_BLKD_VERSION; }
