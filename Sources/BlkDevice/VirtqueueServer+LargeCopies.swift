import BlockIO
import Glibc
import Reactor
import Virtio

/// Large reads, writes and clears on inline backends, a chunk per iteration (`LargeCopies`).
extension VirtqueueServer {
    /// Starts `slot`'s copy; its first chunk is copied at the next iteration,
    /// after the other queues on this reactor had their turn.
    func copyInChunks(slot: UInt32) -> Int32? {
        slots[slot].progress = 0
        largeCopies.pending.append(slot)
        reactor.pollNextIteration(taskID)
        return nil
    }

    /// Copies the next chunk of the oldest copy under way, and moves that
    /// copy to the back; a finished or failed copy completes its request.
    /// Returns whether there was one. Runs from `poll()`, stopping or not.
    @discardableResult
    func continueLargeCopy() -> Bool {
        guard !largeCopies.pending.isEmpty else { return false }
        let slot = largeCopies.pending.removeFirst()
        let s = slots[slot]
        let operation = s.operation
        let clears = operation.clearsRange
        let position = operation.offset &+ s.progress
        let length = clears
            ? largeCopies.clearChunk.end(from: position, to: operation.offset &+ operation.length) &- position
            : min(LargeCopies.chunk, operation.length &- s.progress)
        let started = clears ? Reactor.now() : 0
        let chunk = BlkOperation(operation.kind, offset: operation.offset &+ s.progress, length: length)
        let count = LargeCopies.slice(
            UnsafePointer(slots.iovecPointer(Int(s.dataFirst), of: slot)), count: Int(s.dataCount),
            from: s.progress, length: length, into: largeCopies.scratch, capacity: largeCopies.scratchCount)
        let data = UnsafePointer(largeCopies.scratch)
        let result: Int32
        switch backend(of: s.generation)?.storage {
        case .memory(let backing):
            result = MemoryBackend.perform(chunk, on: backing, data: data, count: count)
        case .file(let fd, _, _):
            result = FileBackend.ioOperation(chunk, fd: fd, data: data, count: count).performBlocking()
        default:
            result = -ENXIO
        }
        if clears { largeCopies.clearChunk.took(Reactor.now() &- started, length: length) }
        // A clear answers 0 (madvise, fallocate), a copy the bytes it moved.
        if clears ? result == 0 : result >= 0 && UInt64(result) == length {
            slots[slot].progress = s.progress &+ length
            if slots[slot].progress < operation.length {
                largeCopies.pending.append(slot)
            } else {
                operationFinished(slot: slot, result: clears ? 0 : Int32(clamping: operation.length))
            }
        } else {
            // A short chunk makes the whole copy short (what a full file system answers);
            // a clear's error (EOPNOTSUPP: write-zeroes becomes a punched hole) is the request's.
            operationFinished(slot: slot, result: clears || result < 0 ? result : Int32(clamping: s.progress &+ UInt64(result)))
        }
        if !largeCopies.pending.isEmpty { reactor.pollNextIteration(taskID) }
        return true
    }
}
