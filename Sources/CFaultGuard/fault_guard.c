#include "CFaultGuard.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* One slot per registered range. A slot is free when `start` is 0. The
   control thread claims a slot with a compare-exchange on `claimed`, writes
   `end`, then publishes `start` (release); the handler reads `start`
   (acquire) before `end`. */
struct guard_slot {
    atomic_uint claimed;
    atomic_uintptr_t start;
    atomic_uintptr_t end;
    atomic_uint faults;
};

#define SLOTS 4096
static struct guard_slot slots[SLOTS];
static atomic_int notify = -1;
static atomic_int installed;
static uintptr_t page_size = 4096;
/* What SIGBUS did before (the Swift runtime's backtracer, or the default). */
static struct sigaction previous;

/* Maps a private zero page (or huge page, for hugetlbfs memory) over the one
   that holds `addr`. Returns 0 on success. */
static int replace_page(uintptr_t addr, uintptr_t start, uintptr_t end) {
    static const uintptr_t sizes[] = { 0, (uintptr_t)2 << 20, (uintptr_t)1 << 30 };
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uintptr_t size = sizes[i] ? sizes[i] : page_size;
        uintptr_t page = addr & ~(size - 1);
        if (page < start || page + size > end) continue;
        void *p = mmap((void *)page, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p != MAP_FAILED) return 0;
    }
    return -1;
}

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    (void)context;
    int saved = errno;
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t start = atomic_load_explicit(&slots[i].start, memory_order_acquire);
        if (start == 0 || addr < start) continue;
        uintptr_t end = atomic_load_explicit(&slots[i].end, memory_order_relaxed);
        if (addr >= end) continue;
        if (replace_page(addr, start, end) != 0) break;
        atomic_fetch_add_explicit(&slots[i].faults, 1, memory_order_relaxed);
        int fd = atomic_load_explicit(&notify, memory_order_relaxed);
        if (fd >= 0) {
            uint64_t one = 1;
            ssize_t ignored = write(fd, &one, sizeof one);
            (void)ignored;
        }
        errno = saved;
        return;  /* the faulting access runs again, on the new page */
    }
    /* Not frontend memory: what SIGBUS did before, when the access runs again. */
    sigaction(sig, &previous, NULL);
    errno = saved;
}

int vb_fault_guard_install(int notify_fd) {
    atomic_store(&notify, notify_fd);
    if (atomic_load(&installed)) return 0;
    long size = sysconf(_SC_PAGESIZE);
    if (size > 0) page_size = (uintptr_t)size;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &previous) != 0) return -errno;
    atomic_store(&installed, 1);
    return 0;
}

int vb_fault_guard_register(void *start, size_t length) {
    uintptr_t s = (uintptr_t)start;
    if (!atomic_load(&installed) || s == 0 || length == 0 || s + length + page_size < s) return -1;
    uintptr_t end = (s + length + page_size - 1) & ~(page_size - 1);  /* the mapping's last page is whole */
    for (int i = 0; i < SLOTS; i++) {
        unsigned expected = 0;
        if (!atomic_compare_exchange_strong(&slots[i].claimed, &expected, 1)) continue;
        atomic_store_explicit(&slots[i].faults, 0, memory_order_relaxed);
        atomic_store_explicit(&slots[i].end, end, memory_order_relaxed);
        atomic_store_explicit(&slots[i].start, s, memory_order_release);
        return i;
    }
    return -1;
}

void vb_fault_guard_unregister(int slot) {
    if (slot < 0 || slot >= SLOTS) return;
    atomic_store_explicit(&slots[slot].start, 0, memory_order_release);
    atomic_store_explicit(&slots[slot].claimed, 0, memory_order_release);
}

uint32_t vb_fault_guard_faults(int slot) {
    if (slot < 0 || slot >= SLOTS) return 0;
    return atomic_load_explicit(&slots[slot].faults, memory_order_relaxed);
}
