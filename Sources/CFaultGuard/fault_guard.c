#include "CFaultGuard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

/* The range table. Slots live in chunks that are allocated on demand and
   never freed or moved: chunk k holds FIRST_CHUNK << k slots, so the table
   grows by doubling without copying, and the handler never reads memory that
   could go away under it (no retirement, no epochs). CHUNKS chunks make
   FIRST_CHUNK * (2^CHUNKS - 1) slots, just under INT_MAX: far past what the
   kernel lets one process map (vm.max_map_count, 65530 by default), so in
   practice a range is refused only when the kernel refuses the memory for a
   new chunk (mmap(2) fails), and then the caller refuses the mapping.

   Writers (register, unregister) hold `lock`; the handler takes no lock
   (signal-safety(7)): it reads `used` (acquire), the chunk pointers (acquire)
   and each slot's `start` (acquire) before its `end`. A slot is free when
   `start` is 0: register writes `end`, then publishes `start` (release);
   unregister clears `start` first. */
struct guard_slot {
    atomic_uintptr_t start;
    atomic_uintptr_t end;
    atomic_uint faults;
    int next_free;  /* free list link, only under `lock` */
};

#define FIRST_CHUNK 4096u
#define CHUNKS 19
#define MAX_SLOTS ((size_t)FIRST_CHUNK * ((1u << CHUNKS) - 1))

static _Atomic(struct guard_slot *) chunks[CHUNKS];
static atomic_size_t used;  /* slots ever handed out: the handler scans [0, used) */
static int free_head = -1;  /* under `lock` */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static atomic_int notify = -1;
static atomic_int installed;
static uintptr_t page_size = 4096;
/* What SIGBUS did before (the Swift runtime's backtracer, or the default). */
static struct sigaction previous;
/* SIGBUS signals sent by a process rather than raised by a fault. */
static atomic_uint ignored;
static atomic_int ignored_pid;
static atomic_uint ignored_uid;

/* Chunk of slot `index`: chunk k starts at FIRST_CHUNK * (2^k - 1). */
static struct guard_slot *slot_at(size_t index) {
    size_t q = index / FIRST_CHUNK + 1;
    unsigned k = 0;
    while (q >>= 1) k++;
    if (k >= CHUNKS) return NULL;
    struct guard_slot *chunk = atomic_load_explicit(&chunks[k], memory_order_acquire);
    if (chunk == NULL) return NULL;
    return &chunk[index - (size_t)FIRST_CHUNK * (((size_t)1 << k) - 1)];
}

/* Maps a private zero page (or huge page, for hugetlbfs memory) over the one
   that holds `addr`. Returns 0 on success. mmap(2) is not on the list of
   signal-safety(7), but it is a plain system call in glibc: no lock, no
   allocation. */
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

static void wake_control_loop(void) {
    int fd = atomic_load_explicit(&notify, memory_order_relaxed);
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored_result = write(fd, &one, sizeof one);  /* write(2) is async-signal-safe */
        (void)ignored_result;
    }
}

/* 0 when `addr` lies in a registered range and a page now stands in for
   the lost one. */
static int repair(uintptr_t addr) {
    size_t n = atomic_load_explicit(&used, memory_order_acquire);
    size_t index = 0;
    for (unsigned k = 0; k < CHUNKS && index < n; k++) {
        struct guard_slot *chunk = atomic_load_explicit(&chunks[k], memory_order_acquire);
        if (chunk == NULL) break;
        for (size_t j = 0; j < ((size_t)FIRST_CHUNK << k) && index < n; j++, index++) {
            struct guard_slot *slot = &chunk[j];
            uintptr_t start = atomic_load_explicit(&slot->start, memory_order_acquire);
            if (start == 0 || addr < start) continue;
            uintptr_t end = atomic_load_explicit(&slot->end, memory_order_relaxed);
            if (addr >= end) continue;
            if (replace_page(addr, start, end) != 0) return -1;
            atomic_fetch_add_explicit(&slot->faults, 1, memory_order_relaxed);
            wake_control_loop();
            return 0;
        }
    }
    return -1;
}

/* A fault that is not ours: what SIGBUS did before the guard, for this one
   delivery. The guard stays installed unless that action replaces it. */
static void pass_on(int sig, siginfo_t *info, void *context) {
    if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
        /* The default action (SIG_IGN too: for a fault the kernel forces the
           default, sigaction(2) NOTES). The access runs again on return,
           faults again and the default ends the process with a core dump,
           as without the guard (signal(7)). Nothing to restore: the
           process is gone. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);  /* async-signal-safe, signal-safety(7) */
        return;
    }
    if (previous.sa_flags & SA_RESETHAND) {
        /* As the kernel would have done on entry to that handler (sigaction(2)). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
    }
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, context);
    } else {
        previous.sa_handler(sig);
    }
}

/* The policy (sigaction(2), "The siginfo_t argument"):
   - si_code <= 0 (SI_USER from kill(2), SI_QUEUE from sigqueue(3), SI_TKILL
     from tgkill(2), ...): a process sent SIGBUS; no access faulted and no
     access will run again. Ignored and counted (the control loop logs the
     sender), so `kill -BUS` neither kills the daemon nor turns the guard off.
   - BUS_ADRERR at an address inside a registered range: a frontend shrank a
     file it shares (a page past the file's end, mmap(2) "SIGBUS"). Repaired:
     a private zero page goes in and the access runs again on it.
   - Anything else raised by the kernel (a fault outside the ranges,
     BUS_ADRALN, BUS_OBJERR, BUS_MCEERR_*, or a range whose page cannot be
     replaced): a genuine fault, handed to the previous action for this
     delivery (pass_on), so it crashes the daemon as it would have. */
static void on_sigbus(int sig, siginfo_t *info, void *context) {
    int saved = errno;
    if (info->si_code <= 0) {
        if (info->si_code == SI_USER || info->si_code == SI_QUEUE || info->si_code == SI_TKILL) {
            atomic_store_explicit(&ignored_pid, info->si_pid, memory_order_relaxed);
            atomic_store_explicit(&ignored_uid, info->si_uid, memory_order_relaxed);
        } else {
            atomic_store_explicit(&ignored_pid, 0, memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&ignored, 1, memory_order_release);
        wake_control_loop();
    } else if (info->si_code != BUS_ADRERR || repair((uintptr_t)info->si_addr) != 0) {
        pass_on(sig, info, context);
    }
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
    /* SA_RESTART: a stray signal (ignored) does not make a blocking call
       in the thread it lands on fail with EINTR, where one can restart
       (signal(7), "Interruption of system calls"). */
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &previous) != 0) return -errno;
    atomic_store(&installed, 1);
    return 0;
}

int vb_fault_guard_register(void *start, size_t length, int *slot_out) {
    *slot_out = -1;
    if (!atomic_load(&installed)) return 0;
    uintptr_t s = (uintptr_t)start;
    if (s == 0 || length == 0 || s + length + page_size < s) return -EINVAL;
    uintptr_t end = (s + length + page_size - 1) & ~(page_size - 1);  /* the mapping's last page is whole */

    pthread_mutex_lock(&lock);
    int index;
    struct guard_slot *slot;
    size_t n = atomic_load_explicit(&used, memory_order_relaxed);
    if (free_head >= 0) {
        index = free_head;
        slot = slot_at((size_t)index);
        if (slot == NULL) {  /* cannot happen: free slots were handed out */
            pthread_mutex_unlock(&lock);
            return -EFAULT;
        }
        free_head = slot->next_free;
    } else {
        if (n >= MAX_SLOTS) {
            pthread_mutex_unlock(&lock);
            return -ENOSPC;
        }
        slot = slot_at(n);
        if (slot == NULL) {  /* the first slot of a new chunk */
            size_t q = n / FIRST_CHUNK + 1;
            unsigned k = 0;
            while (q >>= 1) k++;
            size_t bytes = ((size_t)FIRST_CHUNK << k) * sizeof(struct guard_slot);
            void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                int e = errno;
                pthread_mutex_unlock(&lock);
                return -e;
            }
            /* Zeroed (mmap(2)): every slot starts free. */
            atomic_store_explicit(&chunks[k], (struct guard_slot *)p, memory_order_release);
            slot = slot_at(n);
            if (slot == NULL) {
                pthread_mutex_unlock(&lock);
                return -EFAULT;
            }
        }
        index = (int)n;
    }
    slot->next_free = -1;
    atomic_store_explicit(&slot->faults, 0, memory_order_relaxed);
    atomic_store_explicit(&slot->end, end, memory_order_relaxed);
    atomic_store_explicit(&slot->start, s, memory_order_release);
    if ((size_t)index == n) atomic_store_explicit(&used, n + 1, memory_order_release);
    pthread_mutex_unlock(&lock);
    *slot_out = index;
    return 0;
}

void vb_fault_guard_unregister(int index) {
    if (index < 0) return;
    pthread_mutex_lock(&lock);
    struct guard_slot *slot = (size_t)index < atomic_load(&used) ? slot_at((size_t)index) : NULL;
    if (slot != NULL && atomic_load_explicit(&slot->start, memory_order_relaxed) != 0) {
        atomic_store_explicit(&slot->start, 0, memory_order_release);
        slot->next_free = free_head;
        free_head = index;
    }
    pthread_mutex_unlock(&lock);
}

uint32_t vb_fault_guard_faults(int index) {
    if (index < 0 || (size_t)index >= atomic_load(&used)) return 0;
    struct guard_slot *slot = slot_at((size_t)index);
    return slot == NULL ? 0 : atomic_load_explicit(&slot->faults, memory_order_relaxed);
}

size_t vb_fault_guard_ranges(void) {
    pthread_mutex_lock(&lock);
    size_t n = atomic_load(&used);
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        struct guard_slot *slot = slot_at(i);
        if (slot != NULL && atomic_load_explicit(&slot->start, memory_order_relaxed) != 0) live++;
    }
    pthread_mutex_unlock(&lock);
    return live;
}

uint32_t vb_fault_guard_ignored(int32_t *last_pid, uint32_t *last_uid) {
    uint32_t count = atomic_load_explicit(&ignored, memory_order_acquire);
    *last_pid = atomic_load_explicit(&ignored_pid, memory_order_relaxed);
    *last_uid = atomic_load_explicit(&ignored_uid, memory_order_relaxed);
    return count;
}
