import Glibc
import Posix

/// The shared inflight-tracking region (GET_INFLIGHT_FD / SET_INFLIGHT_FD;
/// vhost-user spec, "Inflight I/O tracking"): one `InflightQueue` area per
/// queue, back to back. The back-end creates it as a memfd; the front-end
/// keeps the fd and hands it back after a back-end restart.
public final class InflightRegion {
    public let mapping: SharedMapping
    public let numQueues: UInt16
    public let queueSize: UInt16

    /// The largest region accepted: 256 queues of 32768 entries.
    public static let maxQueues: UInt16 = 256

    public static func size(numQueues: UInt16, queueSize: UInt16) -> Int {
        Int(numQueues) * InflightQueue.areaSize(queueSize: queueSize)
    }

    /// A new zeroed region in a memfd (GET_INFLIGHT_FD). Returns it and the
    /// fd to send; the caller closes the fd once sent.
    public static func create(numQueues: UInt16, queueSize: UInt16) throws(VhostUserError) -> (InflightRegion, FileDescriptor) {
        try validate(numQueues: numQueues, queueSize: queueSize)
        let size = Self.size(numQueues: numQueues, queueSize: queueSize)
        let fd: FileDescriptor
        do {
            fd = try Memfd.create(name: "vhost-blkd-inflight", size: size)
        } catch {
            throw .invalidInflight("cannot create the inflight region: \(error)")
        }
        do {
            let mapping = try SharedMapping(fd: fd, length: size)
            return (InflightRegion(mapping: mapping, numQueues: numQueues, queueSize: queueSize), fd)
        } catch {
            fd.close()
            throw .invalidInflight("cannot map the inflight region: \(error)")
        }
    }

    /// Maps the front-end's region (SET_INFLIGHT_FD); the caller closes `fd`.
    public static func map(fd: FileDescriptor, size: UInt64, offset: UInt64, numQueues: UInt16, queueSize: UInt16) throws(VhostUserError) -> InflightRegion {
        try validate(numQueues: numQueues, queueSize: queueSize)
        let expected = Self.size(numQueues: numQueues, queueSize: queueSize)
        guard size == UInt64(expected) else {
            throw .invalidInflight("inflight region of \(size) bytes, expected \(expected) for \(numQueues) queues of \(queueSize)")
        }
        let st: Glibc.stat
        do { st = try fd.stat() } catch { throw .invalidInflight("cannot stat the inflight fd: \(error)") }
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard offset % UInt64(getpagesize()) == 0, !overflow, end <= UInt64(clamping: st.st_size), let at = Int(exactly: offset) else {
            throw .invalidInflight("inflight region [\(offset), +\(size)) is not a page-aligned range of its \(st.st_size)-byte file")
        }
        do {
            let mapping = try SharedMapping(fd: fd, length: expected, offset: at)
            return InflightRegion(mapping: mapping, numQueues: numQueues, queueSize: queueSize)
        } catch {
            throw .invalidInflight("cannot map the inflight region: \(error)")
        }
    }

    private static func validate(numQueues: UInt16, queueSize: UInt16) throws(VhostUserError) {
        guard numQueues >= 1, numQueues <= maxQueues, queueSize >= 1, queueSize <= 32768, queueSize & (queueSize &- 1) == 0 else {
            throw .invalidInflight("inflight region for \(numQueues) queues of \(queueSize) entries")
        }
    }

    private init(mapping: SharedMapping, numQueues: UInt16, queueSize: UInt16) {
        self.mapping = mapping
        self.numQueues = numQueues
        self.queueSize = queueSize
    }

    /// Queue `index`'s area, if the region has one of `queueSize` entries.
    public func queue(_ index: Int, queueSize: UInt16) -> InflightQueue? {
        guard index >= 0, index < Int(numQueues), queueSize == self.queueSize else { return nil }
        return InflightQueue(base: mapping.base + index * InflightQueue.areaSize(queueSize: queueSize), queueSize: queueSize)
    }

    /// Unmaps (once; the owner calls it when the session ends or replaces it).
    public func unmap() { mapping.unmap() }
}
