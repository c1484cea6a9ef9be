import Glibc
import Testing
@testable import BlkDevice

/// `LargeCopies.slice`: the iovecs of one chunk of a request's data.
@Suite struct LargeCopiesTests {
    @Test func slicesCrossSegmentsAndStopAtTheEnd() {
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
        defer { bytes.deallocate() }
        // Segments of 100, 0 (skipped), 300 and 600 bytes.
        let data = [iovec(iov_base: bytes, iov_len: 100), iovec(iov_base: bytes + 100, iov_len: 0),
                    iovec(iov_base: bytes + 100, iov_len: 300), iovec(iov_base: bytes + 400, iov_len: 600)]
        let scratch = UnsafeMutablePointer<iovec>.allocate(capacity: 4)
        defer { scratch.deallocate() }
        func slice(_ from: UInt64, _ length: UInt64, capacity: Int = 4) -> [(Int, Int)] {
            let n = data.withUnsafeBufferPointer { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return LargeCopies.slice(base, count: buffer.count, from: from, length: length, into: scratch, capacity: capacity)
            }
            return (0..<n).map { ((scratch[$0].iov_base ?? bytes) - bytes, scratch[$0].iov_len) }
        }
        #expect(slice(0, 100).elementsEqual([(0, 100)], by: ==))
        #expect(slice(50, 100).elementsEqual([(50, 50), (100, 50)], by: ==))
        #expect(slice(150, 600).elementsEqual([(150, 250), (400, 350)], by: ==))
        #expect(slice(900, 500).elementsEqual([(900, 100)], by: ==), "the data ends first")
        #expect(slice(1000, 10).isEmpty)
        #expect(slice(0, 1000, capacity: 2).elementsEqual([(0, 100), (100, 300)], by: ==), "no more entries than the scratch holds")
    }
}
