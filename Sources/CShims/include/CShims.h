#ifndef VHOST_BLKD_CSHIMS_H
#define VHOST_BLKD_CSHIMS_H
/* Macros and packed or variadic C interfaces that Swift cannot call directly.
   Only thin wrappers live here; all logic is in Swift. */
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/random.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <errno.h>
#include <linux/fs.h>
#include <linux/falloc.h>

/* ---- CPU affinity (CPU_SET is a macro) ---- */
/** Pins the calling thread to `cpu`; returns 0 or an errno value. */
int vb_pin_current_thread(int cpu);
/// Lets the calling thread run on `cpus` only; 0 or an errno (EINVAL for an empty or out-of-range set).
int vb_set_current_thread_cpus(const int *cpus, int count);
/** Fills `mask` (bit i = cpu i, for cpus < 64*words) with this process's allowed CPUs. Returns 0 or errno. */
int vb_allowed_cpus(uint64_t *mask, int words);
/** Names the calling thread (at most 15 bytes are kept). */
void vb_set_thread_name(const char *name);
/** The kernel thread id of the caller. */
int vb_gettid(void);

/* ---- SCM_RIGHTS (CMSG_* are macros) ---- */
/** Sends `len` bytes with up to `nfds` descriptors attached. Returns bytes sent or -errno. */
ssize_t vb_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/** Receives up to `len` bytes and up to `maxfds` descriptors (close-on-exec). Sets *nfds to how many arrived
    and *truncated to 1 if the control data was cut short (extra descriptors are closed). Returns bytes or -errno. */
ssize_t vb_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);
/** bind/connect on AF_UNIX with a path (sockaddr arguments are transparent unions under _GNU_SOURCE). 0 or -errno. */
int vb_unix_bind(int fd, const char *path);
int vb_unix_connect(int fd, const char *path);
/// One datagram to the AF_UNIX socket `address` (a path, or an abstract name when
/// it starts with '@': sd_notify(3)); 0 or -errno.
long vb_unix_sendto(int fd, const char *address, const void *buf, size_t len);
/** accept4 with SOCK_CLOEXEC; fd or -errno. */
int vb_accept(int fd);
/** SO_PEERCRED: the peer's pid, or -1. */
int vb_peer_pid(int sock);

/* ---- epoll (struct epoll_event is packed on x86-64) ---- */
int vb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/** Waits; writes up to `max` pairs into events[]/datas[]. Returns count or -errno. */
int vb_epoll_wait(int epfd, uint32_t *events, uint64_t *datas, int max, int timeout_ms);

/* ---- Block devices (ioctl numbers are macros) ---- */
int vb_blkgetsize64(int fd, uint64_t *size);
int vb_blksszget(int fd, int *size);
int vb_blkflsbuf(int fd);

/* ---- openat2(2) (glibc 2.36 has no wrapper; struct open_how is in linux/openat2.h) ---- */
/** openat2(2) of `path` relative to `dirfd` with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS: every
    component, symlinks and ".." included, must resolve inside `dirfd`, else EXDEV (or ELOOP for a
    /proc magic link). `flags` as for openat(2); no mode. Returns the fd or -errno (ENOSYS before 5.6). */
int vb_openat2_beneath(int dirfd, const char *path, int flags);

/* ---- Constants that are macros Swift does not import ---- */
static inline int vb_falloc_punch_hole(void) { return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; }
static inline int vb_falloc_zero_range(void) { return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE; }
static inline int vb_o_direct(void) { return O_DIRECT; }
static inline int vb_o_path(void) { return O_PATH; }
static inline unsigned vb_mfd_cloexec(void) { return MFD_CLOEXEC; }

/* ---- Memory barriers for rings shared with another process ---- */
static inline void vb_smp_rmb(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void vb_smp_wmb(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void vb_smp_mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* Dirty-page logging for live migration: QEMU clears the log's words with
 * atomic exchanges while back-ends set bits, so every set is an atomic OR. */
static inline void vb_atomic_or_u8(uint8_t *p, uint8_t bits) { __atomic_fetch_or(p, bits, __ATOMIC_RELAXED); }

/* ---- io_uring (liburing 2.3 declares io_uring_enable_rings but its .so does not export it) ---- */
/** IORING_REGISTER_ENABLE_RINGS on a ring created with IORING_SETUP_R_DISABLED. 0 or -errno. */
int vb_io_uring_enable_rings(int ring_fd);
/** IORING_REGISTER_IOWQ_AFF: the calling thread's io-wq workers run on `cpus`. 0 or -errno. */
int vb_io_uring_register_iowq_cpus(int ring_fd, const int *cpus, int count);

#endif
