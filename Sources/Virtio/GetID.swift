import Glibc

/// VIRTIO_BLK_T_GET_ID (virtio 1.2 §5.2.6): the device writes a serial of up
/// to 20 bytes, zero-padded when shorter.
public enum BlkGetID {
    /// Length of the ID string field.
    public static let serialLength = 20

    /// Writes `serial` (truncated to 20 bytes, zero-padded to 20) into the
    /// data segments of `request`, stopping early if they are shorter.
    /// Returns the bytes written; the used length is that + 1 (status).
    public static func fill(
        serial: [UInt8], request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> Int {
        var field = [UInt8](repeating: 0, count: serialLength)
        for (i, byte) in serial.prefix(serialLength).enumerated() { field[i] = byte }
        var cursor = IOVecCursor(iovecs, range: request.dataRange)
        return field.withUnsafeBytes { cursor.copyIn(from: $0) }
    }

    /// `fill(serial:request:iovecs:)` with the UTF-8 bytes of `serial`.
    public static func fill(
        serial: String, request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> Int {
        fill(serial: Array(serial.utf8), request: request, iovecs: iovecs)
    }
}
