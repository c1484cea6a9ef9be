import BlockIO
import Glibc
import Reactor
import VhostUser
import Virtio

/// Each request from chain to status: walk and parse it (Virtio's decoders),
/// then step it through `BlkExecutor` while the backend performs the
/// operations it asks for.
extension VirtqueueServer {
    /// Takes a slot for `head`, decodes its chain and starts the request;
    /// a malformed one completes with an error at once.
    func handle(head buffer: PackedChainHead) {
        let head = buffer.id
        guard let slot = slots.take(head: head, slotCount: buffer.slotCount, generation: backendGeneration) else { return }
        inFlight += 1
        inflight?.markInFlight(head)
        if let packedInflight { slots[slot].inflightEntry = ring.record(buffer, in: packedInflight) }

        let chain: ChainBuffers
        do {
            chain = try ring.walk(buffer, memory: memory, into: slots.iovecs(of: slot))
        } catch {
            logMalformed("malformed descriptor chain at head \(head): \(error)")
            finish(slot: slot, statusByte: nil, status: .ioErr, usedLength: 0)
            return
        }
        serve(slot: slot, head: head, chain: chain)
    }

    /// A packed buffer a crashed daemon popped and never completed, walked
    /// from the copies of its descriptors in the inflight region
    /// (`PackedInflightQueue`): the ring slots it took may hold used
    /// elements by now (virtio 1.2 §2.8.6).
    func handleRecovered(entry: UInt16, tracking: PackedInflightQueue) {
        let buffer = tracking.buffer(at: entry)
        let count = UInt16(truncatingIfNeeded: buffer.descriptors.count)
        guard let slot = slots.take(head: buffer.id, slotCount: count, generation: backendGeneration) else { return }
        inFlight += 1
        slots[slot].inflightEntry = entry
        let chain: ChainBuffers
        do {
            chain = try buffer.descriptors.withUnsafeBytes { (copies) throws(VirtioError) -> ChainBuffers in
                guard let base = copies.baseAddress, count > 0 else { throw VirtioError.chainTooLong }
                return try PackedChainWalker.walk(
                    ring: base, size: count, head: PackedChainHead(index: 0, id: buffer.id, slotCount: count),
                    memory: memory, into: slots.iovecs(of: slot))
            }
        } catch {
            logMalformed("malformed recovered descriptor chain for buffer \(buffer.id): \(error)")
            finish(slot: slot, statusByte: nil, status: .ioErr, usedLength: 0)
            return
        }
        serve(slot: slot, head: buffer.id, chain: chain)
    }

    /// Parses the walked chain of `slot` and starts its request.
    @inline(__always)
    func serve(slot: UInt32, head: UInt16, chain: ChainBuffers) {
        let iov = slots.iovecs(of: slot)
        slots[slot].writableFirst = UInt16(truncatingIfNeeded: chain.readableCount)
        slots[slot].writableCount = UInt16(truncatingIfNeeded: chain.writableCount)
        let request: BlkRequest
        do {
            request = try BlkRequestParser.parse(chain, iovecs: iov)
        } catch {
            logMalformed("malformed virtio-blk request at head \(head): \(error)")
            finish(slot: slot, statusByte: BlkRequestParser.statusPointer(chain, iovecs: iov), status: .ioErr, usedLength: 1)
            return
        }
        slots[slot].status = request.status
        slots[slot].dataFirst = UInt16(truncatingIfNeeded: request.dataRange.lowerBound)
        slots[slot].dataCount = UInt16(truncatingIfNeeded: request.dataRange.count)
        stats.begin(slot, request.type, bytes: request.dataLength, at: reactor.loopTime.load(ordering: .relaxed))
        if tracing { logger.trace("request \(request.type) sector \(request.sector) bytes \(request.dataLength) segments \(request.dataRange)") }
        if let qos = backend.qos, !qos.admit(QoSCost(request), waiter: self) {
            qosHeld = (request, slot)
            return
        }
        dispatch(request, slot: slot)
    }

    /// The executor's first step for `request`.
    func dispatch(_ request: BlkRequest, slot: UInt32) {
        let step = BlkExecutor.start(request, iovecs: slots.iovecs(of: slot), disk: disk)
        if case .submit(let operation) = step, operation.kind == .discard || operation.kind == .writeZeroes {
            stats.setBytes(slot, operation.length)  // the range, not the 16-byte segment
        }
        advance(slot, step)
    }

    /// The backend finished `slot`'s operation with `result`.
    @inline(__always)
    func operationFinished(slot: UInt32, result: Int32) {
        let operation = slots[slot].operation
        let step = BlkExecutor.finish(operation, result: result, disk: disk)
        // Only a failure pays for the check's second half (VirtqueueServer+Errors.swift).
        if case .complete(let status, _) = step, status != .ok,
           operationFailed(slot: slot, operation: operation, result: result) { return }
        advance(slot, step)
    }

    /// Performs operations while the backend finishes them at once (RAM,
    /// null, inline files), until the request completes or an operation
    /// goes to an engine (its completion comes back to `operationFinished`).
    @inline(__always)
    func advance(_ slot: UInt32, _ first: BlkStep) {
        var step = first
        while case .submit(let operation) = step {
            slots[slot].operation = operation
            guard let result = perform(operation, slot: slot) else { return }
            step = BlkExecutor.finish(operation, result: result, disk: disk)
            if case .complete(let status, _) = step, status != .ok,
               operationFailed(slot: slot, operation: operation, result: result) { return }
        }
        if case .complete(let status, let usedLength) = step {
            finish(slot: slot, statusByte: slots[slot].status, status: status, usedLength: usedLength)
        }
    }

    /// The one switch over backends: performs `operation` now and returns
    /// its result (bytes moved, 0, or -errno), or queues it on the
    /// reactor's engine and returns nil.
    @inline(__always)
    func perform(_ operation: BlkOperation, slot: UInt32) -> Int32? {
        let s = slots[slot]
        let data = UnsafePointer(slots.iovecPointer(Int(s.dataFirst), of: slot))
        let count = Int(s.dataCount)
        switch backend.storage {
        case .file(let fd, let engine, _):
            guard case .async(let choice) = engine else {
                if operation.length > LargeCopies.chunk && (operation.movesData || operation.clearsRange) { return copyInChunks(slot: slot) }
                return FileBackend.ioOperation(operation, fd: fd, data: data, count: count).performBlocking()
            }
            let io = FileBackend.ioOperation(operation, fd: fd, data: data, count: count)
            if reactor.enqueue(io, task: taskID, slot: slot, on: choice) { return nil }
            // The queue checked for room before popping; fail this one rather than leak it.
            logger.error("engine refused an operation after reporting room")
            return -EIO
        case .memory:
            if operation.length > LargeCopies.chunk && (operation.movesData || operation.clearsRange) { return copyInChunks(slot: slot) }
            return memoryBacking?._withUnsafeGuaranteedRef {
                MemoryBackend.perform(operation, on: $0, data: data, count: count)
            } ?? -ENXIO
        case .null:
            return NullBackend.perform(operation)
        case .rbd(let image):
            return startRBD(operation, on: image, slot: slot, data: data, count: count)
        case .none:
            return -ENXIO
        }
    }

    /// Writes the status (when the chain has a status byte) and the used element, and frees the slot.
    func finish(slot: UInt32, statusByte: UnsafeMutablePointer<UInt8>?, status: BlkStatus, usedLength: UInt32) {
        let s = slots[slot]
        if tracing { logger.trace("completed head \(s.head) status \(status.rawValue) used \(usedLength)") }
        if let statusByte { statusByte.pointee = UInt8(truncatingIfNeeded: status.rawValue) }
        if let packedInflight {
            ring.addUsed(id: s.head, length: statusByte == nil ? 0 : usedLength, slotCount: s.slotCount,
                         tracking: packedInflight, entry: s.inflightEntry)
        } else {
            ring.addUsed(id: s.head, length: statusByte == nil ? 0 : usedLength, slotCount: s.slotCount)
        }
        if let log = dirtyLog { logWrites(slot: slot, statusByte: statusByte, log: log) }
        stats.complete(slot, status, at: completionTime())
        if inflight != nil { noteUsedForInflight(head: s.head) }
        slots.release(slot)
        inFlight -= 1
        if s.generation != backendGeneration {
            previousBackendInFlight -= 1
            reportPreviousBackendDrainedIfIdle()
        }
        reactor.markDirty(taskID)
    }

    /// `completionClock`, read again when stale.
    @inline(__always)
    func completionTime() -> UInt64 {
        if completionClockStale {
            completionClock = Reactor.now()
            completionClockStale = false
        }
        return completionClock
    }

    func logMalformed(_ message: String) {
        malformedLogged &+= 1
        if malformedLogged <= 10 || malformedLogged % 1000 == 0 {
            logger.warning("\(message) (completed with an error; \(malformedLogged) so far)")
        }
    }
}
