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
        _ = request.checkReadWrite(capacity: UInt64(truncatingIfNeeded: request.ioprio))
        switch request.type {
        case .discard, .writeZeroes, .secureErase:
            _ = try? DiscardSegment.decode(request, iovecs: iovecs, maxSegments: 256)
        case .getID:
            var cursor = IOVecCursor(iovecs, range: range)
            let serial = [UInt8](repeating: 0x41, count: 20)
            _ = serial.withUnsafeBytes { cursor.copyIn(from: $0) }
        default:
            break
        }
        request.setStatus(.ok)
        return request.writableBytes
    }
}
