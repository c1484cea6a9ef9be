import Glibc
import Posix

/// The shared inflight-tracking region (GET_INFLIGHT_FD / SET_INFLIGHT_FD;
/// vhost-user spec, "Inflight I/O tracking"): one area per queue, back to
/// back, in the split layout (`InflightQueue`) or the packed one
/// (`PackedInflightQueue`), whichever the features set before
/// GET_INFLIGHT_FD chose (QEMU sets them first: `vhost_dev_prepare_inflight`).
/// The back-end creates it as a memfd; the front-end keeps the fd and hands
/// it back after a back-end restart.
public final class InflightRegion {
    public let mapping: SharedMapping
    public let numQueues: UInt16
    public let queueSize: UInt16
    /// Whether the areas have the packed layout (VIRTIO_F_RING_PACKED).
    public let packed: Bool

    /// The largest region accepted: 256 queues of 32768 entries.
    public static let maxQueues: UInt16 = 256

    public static func size(numQueues: UInt16, queueSize: UInt16, packed: Bool = false) -> Int {
        Int(numQueues) * areaSize(queueSize: queueSize, packed: packed)
    }

    static func areaSize(queueSize: UInt16, packed: Bool) -> Int {
        packed ? PackedInflightQueue.areaSize(queueSize: queueSize) : InflightQueue.areaSize(queueSize: queueSize)
    }

    /// A new zeroed region in a memfd (GET_INFLIGHT_FD). Returns it and the
    /// fd to send; the caller closes the fd once sent.
    public static func create(numQueues: UInt16, queueSize: UInt16, packed: Bool = false) throws(VhostUserError) -> (InflightRegion, FileDescriptor) {
        try validate(numQueues: numQueues, queueSize: queueSize)
        let size = Self.size(numQueues: numQueues, queueSize: queueSize, packed: packed)
        let fd: FileDescriptor
        do {
            fd = try Memfd.create(name: "vhost-blkd-inflight", size: size)
        } catch {
            throw .invalidInflight("cannot create the inflight region: \(error)")
        }
        do {
            let mapping = try SharedMapping(fd: fd, length: size)
            return (InflightRegion(mapping: mapping, numQueues: numQueues, queueSize: queueSize, packed: packed), fd)
        } catch {
            fd.close()
            throw .invalidInflight("cannot map the inflight region: \(error)")
        }
    }

    /// Maps the front-end's region (SET_INFLIGHT_FD); the caller closes `fd`.
    public static func map(fd: FileDescriptor, size: UInt64, offset: UInt64, numQueues: UInt16, queueSize: UInt16,
                           packed: Bool = false) throws(VhostUserError) -> InflightRegion {
        try validate(numQueues: numQueues, queueSize: queueSize)
        let expected = Self.size(numQueues: numQueues, queueSize: queueSize, packed: packed)
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
            return InflightRegion(mapping: mapping, numQueues: numQueues, queueSize: queueSize, packed: packed)
        } catch {
            throw .invalidInflight("cannot map the inflight region: \(error)")
        }
    }

    private static func validate(numQueues: UInt16, queueSize: UInt16) throws(VhostUserError) {
        guard numQueues >= 1, numQueues <= maxQueues, queueSize >= 1, queueSize <= 32768, queueSize & (queueSize &- 1) == 0 else {
            throw .invalidInflight("inflight region for \(numQueues) queues of \(queueSize) entries")
        }
    }

    private init(mapping: SharedMapping, numQueues: UInt16, queueSize: UInt16, packed: Bool) {
        self.mapping = mapping
        self.numQueues = numQueues
        self.queueSize = queueSize
        self.packed = packed
    }

    /// Queue `index`'s area, if the region has one of `queueSize` entries in the split layout.
    public func queue(_ index: Int, queueSize: UInt16) -> InflightQueue? {
        guard !packed, index >= 0, index < Int(numQueues), queueSize == self.queueSize else { return nil }
        return InflightQueue(base: mapping.base + index * InflightQueue.areaSize(queueSize: queueSize), queueSize: queueSize)
    }

    /// Queue `index`'s area, if the region has one of `queueSize` entries in the packed layout.
    public func packedQueue(_ index: Int, queueSize: UInt16) -> PackedInflightQueue? {
        guard packed, index >= 0, index < Int(numQueues), queueSize == self.queueSize else { return nil }
        return PackedInflightQueue(
            base: mapping.base + index * PackedInflightQueue.areaSize(queueSize: queueSize), queueSize: queueSize)
    }

    /// Unmaps (once; the owner calls it when the session ends or replaces it).
    public func unmap() { mapping.unmap() }
}
