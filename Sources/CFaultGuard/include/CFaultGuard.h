#ifndef VHOST_BLKD_CFAULTGUARD_H
#define VHOST_BLKD_CFAULTGUARD_H
/* A SIGBUS guard for memory a frontend shares with the daemon (guest RAM,
   the dirty log, the inflight region). A frontend that shrinks such a file
   (ftruncate) makes every access past the new end raise SIGBUS (BUS_ADRERR,
   mmap(2)), which would kill the whole daemon. With the guard installed, such
   a fault inside a registered range gets a private zero page mapped over the
   missing one: the access completes (reads see zeros, writes go nowhere), the
   range's fault count grows, and an eventfd tells the control loop, which then
   disconnects that frontend.

   Every range is guarded: the range table grows on demand (chunks that are
   never freed), and when it cannot grow, registration fails and the caller
   must not use the mapping. A SIGBUS that a process sends (kill(2),
   sigqueue(3), tgkill(2): si_code <= 0) is ignored and counted, so it can
   neither kill the daemon nor switch the guard off. Any other SIGBUS is a
   genuine fault and gets the action SIGBUS had before, for that delivery
   (the Swift runtime's backtrace, or the default: the process dies with a
   core dump, as it should).

   The handler is C because it runs in signal context: it reads atomics,
   takes no locks and calls only write and sigaction (async-signal-safe,
   signal-safety(7)) and mmap (not on that list, but a bare system call in
   glibc: no lock, no allocation). */
#include <stddef.h>
#include <stdint.h>

/** Installs the SIGBUS handler; `notify_fd` (an eventfd) is written once per
    replaced page and once per ignored signal. Idempotent: a second call only
    changes the fd. 0 or -errno. */
int vb_fault_guard_install(int notify_fd);

/** Registers [start, start+length) as frontend-shared memory and stores its
    slot (for vb_fault_guard_unregister/vb_fault_guard_faults) in `*slot`.
    Returns 0, with `*slot` = -1 when the guard is not installed (a process
    that never asked for it, such as a test frontend), or -errno when the range
    cannot be guarded (-ENOMEM: the table could not grow; -EINVAL): the caller
    must then unmap it and refuse it. */
int vb_fault_guard_register(void *start, size_t length, int *slot);

/** Forgets a slot (before the range is unmapped); -1 is ignored. */
void vb_fault_guard_unregister(int slot);

/** Pages replaced so far in a slot's range (0 for -1). */
uint32_t vb_fault_guard_faults(int slot);

/** Ranges registered now. */
size_t vb_fault_guard_ranges(void);

/** SIGBUS signals ignored so far because a process sent them; the last
    sender's pid (0 if unknown) and uid. */
uint32_t vb_fault_guard_ignored(int32_t *last_pid, uint32_t *last_uid);

#endif
