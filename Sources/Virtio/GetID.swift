import Glibc

/// The device's serial as VIRTIO_BLK_T_GET_ID returns it (virtio 1.2
/// §5.2.6): 20 bytes, zero-padded when the serial is shorter, with no
/// terminating zero when it is not.
///
/// A plain 20-byte value, so the data path copies it without reference counting.
public struct BlkSerial: Equatable, Sendable {
    public static let length = 20
    private var storage: (UInt64, UInt64, UInt32) = (0, 0, 0)

    /// The first 20 bytes of `bytes`, zero-padded.
    public init(_ bytes: [UInt8] = []) {
        withUnsafeMutableBytes(of: &storage) { field in
            for (i, byte) in bytes.prefix(Self.length).enumerated() { field[i] = byte }
        }
    }

    /// The first 20 bytes of `string`'s UTF-8 encoding, zero-padded.
    public init(_ string: String) { self.init(Array(string.utf8)) }

    /// The 20 bytes of the field.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        Swift.withUnsafeBytes(of: storage) { body(UnsafeRawBufferPointer(rebasing: $0.prefix(Self.length))) }
    }

    public static func == (a: BlkSerial, b: BlkSerial) -> Bool {
        a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
    }
}

/// VIRTIO_BLK_T_GET_ID (virtio 1.2 §5.2.6): the device writes its 20-byte serial.
public enum BlkGetID {
    /// Length of the ID string field.
    public static let serialLength = BlkSerial.length

    /// Writes the 20-byte `serial` field into the data segments of
    /// `request`, stopping early if they are shorter. Returns the bytes
    /// written; the used length is that + 1 (status).
    public static func fill(
        serial: BlkSerial, request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> Int {
        var cursor = IOVecCursor(iovecs, range: request.dataRange)
        return serial.withUnsafeBytes { cursor.copyIn(from: $0) }
    }

    /// `fill(serial:request:iovecs:)` with the bytes of `serial`, truncated or padded to 20.
    public static func fill(
        serial: [UInt8], request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> Int {
        fill(serial: BlkSerial(serial), request: request, iovecs: iovecs)
    }

    /// `fill(serial:request:iovecs:)` with the UTF-8 bytes of `serial`.
    public static func fill(
        serial: String, request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> Int {
        fill(serial: BlkSerial(serial), request: request, iovecs: iovecs)
    }
}
