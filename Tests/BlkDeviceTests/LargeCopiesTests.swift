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

    /// A chunk ends on a multiple of its size (whole pages), or at the range's end.
    @Test func chunksEndOnMultiplesOfTheirSize() {
        let k: UInt64 = 1024
        let chunk = AdaptiveChunk(start: 64 * k, floor: 4 * k, ceiling: 1 << 31)
        #expect(chunk.end(from: 0, to: 1 << 31) == 64 * k)
        #expect(chunk.end(from: 512, to: 1 << 31) == 64 * k)
        #expect(chunk.end(from: 64 * k, to: 100 * k) == 100 * k)
        #expect(chunk.end(from: 3 << 20, to: 1 << 40) == (3 << 20) + 64 * k)
        #expect(chunk.end(from: UInt64.max - 4095, to: UInt64.max) == UInt64.max, "no overflow")
    }

    /// The chunk halves when one took over the budget, doubles when a full one took under a
    /// quarter of it, and stays between its floor and ceiling.
    @Test func chunkAdaptsToTheBudget() {
        let budget = AdaptiveChunk.budgetNanoseconds
        var chunk = AdaptiveChunk(start: 64 << 10, floor: 4096, ceiling: 1 << 31)
        chunk.took(budget / 8, length: 64 << 10)
        #expect(chunk.bytes == 128 << 10)
        chunk.took(budget / 8, length: 4096)
        #expect(chunk.bytes == 128 << 10, "a short last chunk does not grow it")
        chunk.took(budget / 2, length: chunk.bytes)
        #expect(chunk.bytes == 128 << 10, "within the budget: unchanged")
        for _ in 0..<10 { chunk.took(budget * 25, length: chunk.bytes) }
        #expect(chunk.bytes == 4096, "never under its floor")
        for _ in 0..<40 { chunk.took(100, length: chunk.bytes) }
        #expect(chunk.bytes == 1 << 31, "never over its ceiling")
        let copies = LargeCopies()
        #expect(copies.clearChunk.bytes == LargeCopies.chunk && copies.clearChunk.floor == 4096)
        #expect(copies.clearChunk.ceiling == 1 << 20)
    }
}
