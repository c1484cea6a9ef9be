#include "CShims.h"
#include <string.h>
#include <sys/syscall.h>

int vb_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int vb_set_current_thread_cpus(const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return EINVAL;
        CPU_SET(cpus[i], &set);
    }
    if (CPU_COUNT(&set) == 0) return EINVAL;
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int vb_allowed_cpus(uint64_t *mask, int words) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return errno;
    for (int w = 0; w < words; w++) mask[w] = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && cpu < 64 * words; cpu++)
        if (CPU_ISSET(cpu, &set)) mask[cpu / 64] |= (uint64_t)1 << (cpu % 64);
    return 0;
}

void vb_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof(buf) - 1);
    buf[15] = 0;
    pthread_setname_np(pthread_self(), buf);
}

int vb_gettid(void) { return (int)syscall(SYS_gettid); }

ssize_t vb_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 8)];
    if (nfds > 8) return -EINVAL;
    if (nfds > 0) {
        memset(control, 0, sizeof(control));
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t vb_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 16)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    *nfds = 0;
    *truncated = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, data + i, sizeof(int));
            if (*nfds < maxfds) fds[(*nfds)++] = fd;
            else { close(fd); *truncated = 1; }
        }
    }
    return n;
}

int vb_peer_pid(int sock) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return cred.pid;
}

int vb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev) == 0 ? 0 : -errno;
}

int vb_epoll_wait(int epfd, uint32_t *events, uint64_t *datas, int max, int timeout_ms) {
    struct epoll_event evs[64];
    if (max > 64) max = 64;
    int n;
    do { n = epoll_wait(epfd, evs, max, timeout_ms); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) { events[i] = evs[i].events; datas[i] = evs[i].data.u64; }
    return n;
}

int vb_blkgetsize64(int fd, uint64_t *size) { return ioctl(fd, BLKGETSIZE64, size) == 0 ? 0 : -errno; }
int vb_blksszget(int fd, int *size) { return ioctl(fd, BLKSSZGET, size) == 0 ? 0 : -errno; }
int vb_blkflsbuf(int fd) { return ioctl(fd, BLKFLSBUF, 0) == 0 ? 0 : -errno; }

static int vb_fill_sun(struct sockaddr_un *a, const char *path) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(a->sun_path)) return -ENAMETOOLONG;
    memcpy(a->sun_path, path, n);
    return 0;
}
int vb_unix_bind(int fd, const char *path) {
    struct sockaddr_un a;
    int rc = vb_fill_sun(&a, path);
    if (rc) return rc;
    return bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : -errno;
}
int vb_unix_connect(int fd, const char *path) {
    struct sockaddr_un a;
    int rc = vb_fill_sun(&a, path);
    if (rc) return rc;
    do { rc = connect(fd, (struct sockaddr *)&a, sizeof(a)); } while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : -errno;
}
long vb_unix_sendto(int fd, const char *address, const void *buf, size_t len) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    size_t n = strlen(address);
    if (n < 2 && address[0] == '@') return -EINVAL;
    if (n == 0 || n > sizeof(a.sun_path)) return -ENAMETOOLONG;
    memcpy(a.sun_path, address, n);
    socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (address[0] == '@') {
        a.sun_path[0] = 0;  /* abstract namespace: the name is the bytes after the NUL, no terminator */
    } else if (n < sizeof(a.sun_path)) {
        length += 1;  /* the path's NUL */
    }
    long rc;
    do { rc = sendto(fd, buf, len, MSG_NOSIGNAL, (struct sockaddr *)&a, length); } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : rc;
}
int vb_accept(int fd) {
    int c;
    do { c = accept4(fd, NULL, NULL, SOCK_CLOEXEC); } while (c < 0 && (errno == EINTR || errno == ECONNABORTED));
    return c < 0 ? -errno : c;
}

#include <linux/io_uring.h>
int vb_io_uring_enable_rings(int ring_fd) {
    long rc = syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return rc < 0 ? -errno : 0;
}

int vb_io_uring_register_iowq_cpus(int ring_fd, const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return -EINVAL;
        CPU_SET(cpus[i], &set);
    }
    if (CPU_COUNT(&set) == 0) return -EINVAL;
    long rc = syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_IOWQ_AFF, &set, sizeof(set));
    return rc < 0 ? -errno : 0;
}

#include <linux/openat2.h>
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
int vb_openat2_beneath(int dirfd, const char *path, int flags) {
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(unsigned)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    long rc;
    do { rc = syscall(SYS_openat2, dirfd, path, &how, sizeof(how)); } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : (int)rc;
}
