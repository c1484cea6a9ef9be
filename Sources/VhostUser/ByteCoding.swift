/// Little-endian field reader over a message body. Reads past the end yield
/// zero; callers validate the length first (see `VhostUserMessage.decode`).
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset: Int = 0

    init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    var remaining: Int { max(0, bytes.count - offset) }

    mutating func u64() -> UInt64 { UInt64(truncatingIfNeeded: read(8)) }
    mutating func u32() -> UInt32 { UInt32(truncatingIfNeeded: read(4)) }
    mutating func u16() -> UInt16 { UInt16(truncatingIfNeeded: read(2)) }

    mutating func skip(_ n: Int) { offset += n }

    mutating func rest() -> [UInt8] {
        guard offset < bytes.count else { return [] }
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }

    private mutating func read(_ n: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<n where offset + i < bytes.count {
            value |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        offset += n
        return value
    }
}

/// Little-endian field writer.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u64(_ v: UInt64) { write(v, 8) }
    mutating func u32(_ v: UInt32) { write(UInt64(v), 4) }
    mutating func u16(_ v: UInt16) { write(UInt64(v), 2) }
    mutating func append(_ other: [UInt8]) { bytes.append(contentsOf: other) }
    mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }

    private mutating func write(_ v: UInt64, _ n: Int) {
        for i in 0..<n { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }
}
