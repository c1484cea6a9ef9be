import Glibc

/// Sequential, bounds-checked byte copies out of and into a list of iovecs
/// (request headers, discard segments, GET_ID serials).
///
/// The iovecs must point at valid memory (e.g. produced by `GuestMemory`);
/// the cursor never reads or writes past any `iov_len`.
public struct IOVecCursor {
    private let iovecs: UnsafeMutableBufferPointer<iovec>
    private var index: Int
    private let end: Int
    private var offset: Int = 0

    /// A cursor over `iovecs[range]`; the range is clamped to the buffer.
    public init(_ iovecs: UnsafeMutableBufferPointer<iovec>, range: Range<Int>) {
        self.iovecs = iovecs
        self.index = max(0, min(range.lowerBound, iovecs.count))
        self.end = max(self.index, min(range.upperBound, iovecs.count))
    }

    /// Bytes left from the cursor to the end of its range.
    public var remaining: Int {
        var total = 0
        var i = index
        var skip = offset
        while i < end {
            total += max(0, iovecs[i].iov_len - skip)
            skip = 0
            i += 1
        }
        return total
    }

    /// Copies up to `buffer.count` bytes out, advancing; returns the bytes copied.
    @discardableResult
    public mutating func copyOut(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let dst = buffer.baseAddress else { return 0 }
        return transfer(buffer.count) { segment, done, n in memcpy(dst + done, segment, n) }
    }

    /// Copies up to `buffer.count` bytes in, advancing; returns the bytes copied.
    @discardableResult
    public mutating func copyIn(from buffer: UnsafeRawBufferPointer) -> Int {
        guard let src = buffer.baseAddress else { return 0 }
        return transfer(buffer.count) { segment, done, n in memcpy(segment, src + done, n) }
    }

    /// Writes `count` zero bytes (or fewer if the range ends); returns the bytes written.
    @discardableResult
    public mutating func zero(count: Int) -> Int {
        transfer(count) { segment, _, n in memset(segment, 0, n) }
    }

    /// Advances up to `count` bytes; returns the bytes skipped.
    @discardableResult
    public mutating func skip(_ count: Int) -> Int {
        transfer(count) { _, _, _ in }
    }

    private mutating func transfer(
        _ count: Int, _ body: (UnsafeMutableRawPointer, Int, Int) -> Void
    ) -> Int {
        var done = 0
        while done < count && index < end {
            let v = iovecs[index]
            let avail = v.iov_len - offset
            guard avail > 0, let base = v.iov_base else {
                index += 1
                offset = 0
                continue
            }
            let n = min(avail, count - done)
            body(base + offset, done, n)
            done += n
            offset += n
            if offset >= v.iov_len {
                index += 1
                offset = 0
            }
        }
        return done
    }
}
