// Shared by the descriptor-chain and blk-request fuzz targets.
import Glibc
import Virtio

/// What the daemon does with a parsed request, touching every byte it would.
enum BlkRequestChecks {
    static func perform(
        _ chain: ChainBuffers, iovecs: UnsafeMutableBufferPointer<iovec>,
        blocks inside: (UnsafeRawPointer, Int) -> Bool
    ) -> UInt32 {
        let last = chain.segmentCount - 1
        let lastBefore = last >= 0 && last < iovecs.count ? iovecs[last] : iovec()
        let request: BlkRequest
        do {
            request = try BlkRequestParser.parse(chain, iovecs: iovecs)
        } catch {
            _ = error.description
            if error != .missingStatus, let status = BlkRequestParser.statusPointer(chain, iovecs: iovecs) {
                guard inside(status, 1) else { fatalError("status byte outside guest memory") }
                status.pointee = BlkStatus.ioErr.rawValue
                return 1
            }
            return 0
        }
        guard inside(request.status, 1) else { fatalError("status byte outside guest memory") }
        let range = request.dataRange
        guard range.lowerBound >= 0, range.upperBound <= chain.segmentCount, range.lowerBound <= range.upperBound else {
            fatalError("data range \(range) outside \(chain.segmentCount) segments")
        }
        var total: UInt64 = 0
        for i in range {
            let v = iovecs[i]
            guard let base = v.iov_base, inside(base, v.iov_len) else { fatalError("data segment \(i) outside guest memory") }
            total += UInt64(v.iov_len)
            if request.type.dataIsDeviceWritable {
                memset(base, 0xa5, v.iov_len)  // readv into guest memory
            } else {
                _ = UnsafeRawBufferPointer(start: base, count: v.iov_len).reduce(0 as UInt8, &+)  // writev from it
            }
        }
        guard total == request.dataLength else { fatalError("data length \(request.dataLength) but segments hold \(total)") }
        // The status byte is the last byte of the last writable segment, and
        // that segment lost it (the guest may alias buffers, so compare
        // positions, not addresses).
        guard let lastBase = lastBefore.iov_base,
              UnsafeMutableRawPointer(request.status) == lastBase + (lastBefore.iov_len - 1)
        else { fatalError("status byte is not the last writable byte") }
        if range.contains(last), iovecs[last].iov_len != lastBefore.iov_len - 1 {
            fatalError("data range still holds the status byte")
        }
        return execute(request, iovecs: iovecs)
    }

    /// Steps `request` through `BlkExecutor` (the daemon's code) against a
    /// disk whose traits come from the request's ioprio field, "performing"
    /// each operation as a backend would. Checks: every operation lies on
    /// the disk, and the used length never exceeds the chain's writable bytes.
    static func execute(_ request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>) -> UInt32 {
        let traits = request.ioprio
        let disk = BlkDisk(
            capacitySectors: UInt64(traits >> 8), readOnly: traits & 1 != 0, syncsWrites: traits & 2 != 0,
            punchesForZeroes: traits & 4 != 0, serial: BlkSerial([UInt8](repeating: 0x41, count: Int(traits >> 3 & 31))))
        let failing: Int32 = [0, -EIO, -EOPNOTSUPP, -EINVAL][Int(traits >> 6 & 3)]
        var step = BlkExecutor.start(request, iovecs: iovecs, disk: disk)
        var operations = 0
        while case .submit(let operation) = step {
            operations += 1
            guard operations <= 3 else { fatalError("more than 3 operations for one request") }
            let (end, overflow) = operation.offset.addingReportingOverflow(operation.length)
            guard !overflow, end <= disk.capacitySectors &* 512 else { fatalError("\(operation) beyond the disk") }
            var result: Int32 = failing
            switch operation.kind {
            case .read, .write:
                guard operation.length == request.dataLength else { fatalError("\(operation) is not the request's data") }
                if failing == 0 { result = Int32(truncatingIfNeeded: operation.length) }
            default:
                break
            }
            step = BlkExecutor.finish(operation, result: result, disk: disk)
        }
        guard case .complete(let status, let usedLength) = step else { return 0 }
        guard usedLength >= 1, usedLength <= request.writableBytes else {
            fatalError("used length \(usedLength) but the chain has \(request.writableBytes) writable bytes")
        }
        request.setStatus(status)
        return usedLength
    }
}
