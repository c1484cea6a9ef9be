import BlockIO
import Glibc
import Virtio

/// Ceph RBD images (`bdev_rbd_create`): each executor operation is one of
/// librbd's asynchronous calls (rbd_aio_readv, _writev, _flush, _discard,
/// _write_zeroes). librbd completes them on its own threads into the
/// queue's `RBDCompletionQueue` (no lock); the reactor reads its eventfd
/// through the engine like a kick, so a reactor never blocks on the cluster
/// and its other queues go on whatever the cluster does.
enum RBDBackend {
    /// Operations one queue has in flight at most: it stops popping beyond
    /// (flow control, `VirtqueueServer.engineHasRoom`) and resumes on a completion.
    static let maxInFlight = 128

    /// librbd's call for `kind`.
    @inline(__always)
    static func operation(_ kind: BlkOperation.Kind) -> RBDImage.Operation {
        switch kind {
        case .read: return .readv
        case .write: return .writev
        case .flush, .writeSync: return .flush
        case .discard, .punchZeroes: return .discard
        case .writeZeroes: return .writeZeroes
        }
    }

    /// librbd's return value as the executor's result: reads return the
    /// bytes read, everything else 0 on success (SPDK's bdev_rbd does the same check).
    @inline(__always)
    static func result(_ value: Int32, for operation: BlkOperation) -> Int32 {
        if value == 0 && operation.kind == .write { return Int32(clamping: operation.length) }
        return value
    }
}

extension VirtqueueServer {
    /// The queue's completion queue exists and its eventfd is read (start, or a backend switch to RBD).
    func adoptRBD() {
        if rbdCompletions == nil {
            do {
                rbdCompletions = try RBDCompletionQueue(slots: slots.count)
            } catch {
                logger.error("cannot create the RBD completion queue: \(error); RBD requests fail")
                return
            }
        }
        if !rbdArmed { armRBD() }
    }

    func armRBD() {
        guard let completions = rbdCompletions else { return }
        rbdArmed = reactor.enqueue(.read(fd: completions.event.fd, buffer: rbdBuffer, length: 8), task: taskID, slot: Self.rbdSlot)
        if !rbdArmed { reactor.markDirty(taskID) }  // retried at the flush
    }

    /// Starts `operation` on `image`; nil when started (the result comes
    /// back through `rbdCompletionsReady`), else -errno.
    @inline(__always)
    func startRBD(_ operation: BlkOperation, on image: RBDImage, slot: UInt32, data: UnsafePointer<iovec>, count: Int) -> Int32? {
        guard let completions = rbdCompletions else { return -EIO }
        let rc = image.submit(RBDBackend.operation(operation.kind), iovecs: data, count: count, offset: operation.offset,
                              length: operation.length, slot: slot, queue: completions)
        return rc == 0 ? nil : rc
    }

    /// The eventfd read finished: deliver what librbd completed, then read again
    /// (unless the queue stops and nothing is in flight any more).
    func rbdCompletionsReady(_ readResult: Int32) {
        rbdArmed = false
        rbdCompletions?.drain { slot, value in
            guard slots.isSlot(slot) else { return }
            operationFinished(slot: slot, result: RBDBackend.result(value, for: slots[slot].operation))
        }
        if stopping && inFlight == 0 {
            finishStopIfIdle()
            return
        }
        armRBD()
        reactor.markDirty(taskID)
    }
}
