// librados and librbd, Ceph 16 (Debian's librbd-dev): their C headers
// (https://docs.ceph.com/en/pacific/rados/api/librados/ and librbd.h).
// Debian ships no pkg-config file for them: the module map links rbd and rados.
#include <sys/uio.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
