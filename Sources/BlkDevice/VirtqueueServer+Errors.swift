import Glibc
import Reactor
import Virtio

/// Failed operations: counted per errno, logged (rate-limited), and under the
/// bdev's `pause` policy a write that found the file system full is held
/// instead of completing with IOERR (docs/OPERATIONS.md, "Full disks").
/// None of this runs for a request that succeeds.
extension VirtqueueServer {
    /// Log lines per queue: the first ten failures, then every thousandth.
    static func logsIOError(_ seen: UInt64) -> Bool { seen <= 10 || seen % 1000 == 0 }

    /// `operation` of `slot` finished with `result` and the executor fails
    /// the request: counts and logs it; returns true when the write is held
    /// (the request does not complete now).
    @inline(never)
    func operationFailed(slot: UInt32, operation: BlkOperation, result: Int32) -> Bool {
        stats.countErrno(IOErrnoClass(result: result))
        let errors = backend.errors
        let total = errors?.countFailure() ?? 0
        ioErrorsSeen &+= 1
        let holds = !stopping && errors?.policy == .pause && Self.meansFull(operation, result: result, disk: disk)
        if Self.logsIOError(ioErrorsSeen) {
            let bdev = errors?.bdevName ?? "(none attached)"
            let counted = errors == nil ? "" : " (\(total) errors so far)"
            let outcome = holds ? "; held until bdev_resume_io (error policy pause)" : ""
            logger.error("bdev \(bdev): \(Self.describe(operation, result: result, disk: disk))\(counted)\(outcome)")
        }
        guard holds else { return false }
        hold(slot)
        return true
    }

    /// A write (or its flush, or a zeroing) that failed because the file
    /// system is full: ENOSPC, EDQUOT, or fewer bytes written than asked
    /// within the disk (a file system that fills up mid-write answers so).
    static func meansFull(_ operation: BlkOperation, result: Int32, disk: BlkDisk) -> Bool {
        switch operation.kind {
        case .write:
            if result == -ENOSPC || result == -EDQUOT { return true }
            return result >= 0 && UInt64(result) < operation.length && disk.contains(offset: operation.offset, length: operation.length)
        case .writeSync, .writeZeroes:
            return result == -ENOSPC || result == -EDQUOT
        case .read, .flush, .discard, .punchZeroes:
            return false
        }
    }

    /// "write offset 1048576 length 65536 failed: ENOSPC (No space left on device)".
    static func describe(_ operation: BlkOperation, result: Int32, disk: BlkDisk) -> String {
        let what: String
        switch operation.kind {
        case .read: what = "read"
        case .write: what = "write"
        case .flush: what = "flush"
        case .discard: what = "discard"
        case .writeZeroes: what = "write-zeroes"
        case .punchZeroes: what = "write-zeroes (hole punch)"
        case .writeSync: what = "write-through sync"
        }
        let head = "\(what) offset \(operation.offset) length \(operation.length) failed: "
        if result < 0 {
            let errno = 0 &- result
            return head + "\(IOErrnoClass.symbol(errno)) (\(String(cString: strerror(errno))))"
        }
        if !disk.contains(offset: operation.offset, length: operation.length) {
            return head + "the range is beyond the disk's end (resized while in flight)"
        }
        return head + "moved \(result) of \(operation.length) bytes"
    }

    /// Keeps `slot` taken and stops popping until `resumeIO`.
    private func hold(_ slot: UInt32) {
        heldWrites.append(slot)
        errorHold = true
        guard !ioPaused else { return }
        ioPaused = true
        pausedOn = backend.errors
        pausedOn?.queuePaused()
        logger.warning("bdev \(pausedOn?.bdevName ?? "?"): queue \(queueIndex) paused on a full disk: writes are held and nothing is popped until bdev_resume_io")
    }

    /// `bdev_resume_io` (posted to this reactor): held writes are performed
    /// again from the start of their operation and popping goes on. A write
    /// that fails the same way again is held again.
    package func resumeIO() {
        reactor.preconditionOnReactor()
        guard ioPaused else { return }
        endPause()
        logger.notice("bdev \(backend.errors?.bdevName ?? "?"): queue \(queueIndex) resumed: \(heldWrites.count) held writes performed again")
        guard !stopping else { return }
        processAvail()
        reactor.markDirty(taskID)
    }

    /// Whether this queue holds writes now (reactor thread).
    package var isPausedOnError: Bool {
        reactor.preconditionOnReactor()
        return ioPaused
    }

    private func endPause() {
        ioPaused = false
        pausedOn?.queueResumed()
        pausedOn = nil
    }

    /// Performs the held writes again while the engine has room (from
    /// `processAvail`); false while some still wait (paused, or the engine
    /// is full: popping resumes with them).
    func releaseHeldWrites() -> Bool {
        if ioPaused { return false }
        while let slot = heldWrites.first {
            guard engineHasRoom() else {
                blocked = true
                reactor.waitForSlots(taskID)
                return false
            }
            heldWrites.removeFirst()
            var operation = slots[slot].operation
            // The data may not have reached the file: write it again, then sync.
            if operation.kind == .writeSync { operation.kind = .write }
            advance(slot, .submit(operation))
            if ioPaused { return false }  // held again: still full
        }
        errorHold = false
        return true
    }

    /// Completes every held write with IOERR: the queue stops (every popped
    /// head gets a used element) or the bdev changed under them.
    func failHeldWrites(reason: String) {
        let held = heldWrites
        heldWrites = []
        errorHold = false
        if ioPaused { endPause() }
        guard !held.isEmpty else { return }
        logger.warning("queue \(queueIndex): \(held.count) held writes completed with an I/O error: \(reason)")
        for slot in held {
            finish(slot: slot, statusByte: slots[slot].status, status: .ioErr, usedLength: 1)
        }
    }
}
