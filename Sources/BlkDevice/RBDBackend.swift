import BlockIO
import Glibc
import Posix
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
        if operation.kind != .read && operation.kind != .flush && operation.kind != .writeSync, case .idle = stopFlush {
            stopFlush = .wanted
        }
        let rc = image.submit(RBDBackend.operation(operation.kind), iovecs: data, count: count, offset: operation.offset,
                              length: operation.length, slot: slot, queue: completions)
        return rc == 0 ? nil : rc
    }

    /// The eventfd read finished: deliver what librbd completed, then read again
    /// (unless the queue stops and nothing is in flight any more).
    func rbdCompletionsReady(_ readResult: Int32) {
        rbdArmed = false
        let flushSlot = rbdCompletions?.stopFlushSlot
        rbdCompletions?.drain { slot, value in
            if slot == flushSlot {
                stopFlushFinished(value)
                return
            }
            guard slots.isSlot(slot) else { return }
            operationFinished(slot: slot, result: RBDBackend.result(value, for: slots[slot].operation))
        }
        if stopping && inFlight == 0 && !stopFlush.isPending {
            finishStopIfIdle()
            return
        }
        armRBD()
        reactor.markDirty(taskID)
    }
}

/// A stopping RBD queue's own flush (`VirtqueueServer.stopFlush`).
enum RBDStopFlush {
    /// The queue wrote nothing (or its flush came back).
    case idle
    /// The queue started a write, discard or write-zeroes.
    case wanted
    /// `rbd_aio_flush` is in librbd since `started`.
    case pending(started: ContinuousClock.Instant)

    var isPending: Bool {
        if case .pending = self { return true }
        return false
    }
}

extension VirtqueueServer {
    /// A stopping queue that wrote flushes its image before GET_VRING_BASE is
    /// answered. librbd's default cache policy (writearound) acknowledges a
    /// write as it sends it to the OSDs, so a guest write completed here may
    /// not be on the OSDs yet when QEMU stops the queues: after a live
    /// migration the destination daemon's librbd client would read the old
    /// data until it lands (reads take no exclusive lock; only the
    /// destination's first write makes this client flush, as it hands the
    /// lock over). The flush waits for those writes. Returns whether the
    /// stop waits for it (its completion calls `finishStopIfIdle` again).
    func startStopFlush() -> Bool {
        if stopFlush.isPending { return true }
        guard case .wanted = stopFlush, case .rbd(let image) = backend.storage, let completions = rbdCompletions else { return false }
        let rc = image.submitFlush(queue: completions)
        guard rc == 0 else {
            stopFlush = .idle
            logger.warning("queue stop: cannot start the RBD image flush (\(Errno(-rc))); GET_VRING_BASE is answered without it")
            return false
        }
        stopFlush = .pending(started: .now)
        if !rbdArmed { armRBD() }
        return true
    }

    /// The stop's flush came back (librbd's result).
    func stopFlushFinished(_ result: Int32) {
        guard case .pending(let started) = stopFlush else { return }
        stopFlush = .idle
        let elapsed = ContinuousClock.now - started
        if result < 0 {
            logger.warning("queue stop: the RBD image flush failed after \(elapsed) (\(Errno(-result))); GET_VRING_BASE is answered")
        } else {
            logger.info("queue stop: RBD image flushed in \(elapsed) before GET_VRING_BASE is answered")
        }
    }
}
