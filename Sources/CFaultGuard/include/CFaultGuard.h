#ifndef VHOST_BLKD_CFAULTGUARD_H
#define VHOST_BLKD_CFAULTGUARD_H
/* A SIGBUS guard for memory a frontend shares with the daemon (guest RAM,
   the dirty log, the inflight region). A frontend that shrinks such a file
   (ftruncate) makes every access past the new end raise SIGBUS, which would
   kill the whole daemon. With the guard installed, a fault inside a
   registered range gets a private zero page mapped over the missing one:
   the access completes (reads see zeros, writes go nowhere), the range's
   fault count grows, and an eventfd tells the control loop, which then
   disconnects that frontend. A SIGBUS anywhere else gets the action it had
   before (the Swift runtime's backtrace, or the default: the process dies
   with a core dump, as it should).

   The handler is C because it runs in signal context: it only reads atomics,
   calls mmap and write, and takes no locks. */
#include <stddef.h>
#include <stdint.h>

/** Installs the SIGBUS handler; `notify_fd` (an eventfd) is written once per
    replaced page. Idempotent: a second call only changes the fd. 0 or -errno. */
int vb_fault_guard_install(int notify_fd);

/** Registers [start, start+length) as frontend-shared memory. Returns a slot
    number for vb_fault_guard_unregister/vb_fault_guard_faults, or -1 when the
    guard is not installed or every slot is taken (the range is then unguarded). */
int vb_fault_guard_register(void *start, size_t length);

/** Forgets a slot (before the range is unmapped); -1 is ignored. */
void vb_fault_guard_unregister(int slot);

/** Pages replaced so far in a slot's range (0 for -1). */
uint32_t vb_fault_guard_faults(int slot);

#endif
