import BlockIO
import Glibc
import Posix
import Testing

/// The engines the conformance suite runs against.
enum EngineKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case uring
    /// io_uring with a kernel thread polling the submission queue (2 ms idle:
    /// it goes to sleep between most test steps, so each wake-up path runs too).
    case uringSQPoll
    case threadPool

    var testDescription: String { rawValue }

    func make(capacity: Int = 256) throws -> any IOEngine {
        switch self {
        case .uring: return try URingEngine(entries: UInt32(capacity))
        case .uringSQPoll: return try URingEngine(entries: UInt32(capacity), polling: SubmissionPolling(idleMilliseconds: 2))
        case .threadPool: return try ThreadPoolEngine(threads: 4, capacity: capacity)
        }
    }
}

/// Completions collected by tag, with any tag seen twice recorded.
struct Collected {
    var results: [UInt64: Int32] = [:]
    var duplicates: [UInt64] = []

    mutating func add(_ tag: UInt64, _ result: Int32) {
        if results[tag] != nil { duplicates.append(tag) }
        results[tag] = result
    }
}

/// Waits until `count` completions arrived (or 10 s passed).
func collect(_ engine: any IOEngine, count: Int, into collected: inout Collected, seconds: Int64 = 10) {
    let deadline = monotonicNow() + seconds * 1_000_000_000
    var got = 0
    while got < count && monotonicNow() < deadline {
        got += engine.wait(timeoutNanoseconds: 100_000_000) { tag, result in collected.add(tag, result) }
    }
}

func collect(_ engine: any IOEngine, count: Int, seconds: Int64 = 10) -> Collected {
    var collected = Collected()
    collect(engine, count: count, into: &collected, seconds: seconds)
    return collected
}

func monotonicNow() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// A page-aligned heap buffer (O_DIRECT-safe).
final class AlignedBuffer {
    let pointer: UnsafeMutableRawPointer
    let count: Int

    init(count: Int, fill: UInt8 = 0) {
        var raw: UnsafeMutableRawPointer?
        _ = posix_memalign(&raw, 4096, count)
        pointer = raw ?? UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 4096)
        self.count = count
        memset(pointer, Int32(fill), count)
    }

    deinit { free(pointer) }

    var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: pointer, count: count)) }

    func fill(pattern seed: UInt8) {
        for index in 0..<count { pointer.storeBytes(of: seed &+ UInt8(truncatingIfNeeded: index), toByteOffset: index, as: UInt8.self) }
    }
}

/// A stable iovec array over buffers.
final class IOVecs {
    let pointer: UnsafeMutablePointer<iovec>
    let count: Int

    init(_ buffers: [AlignedBuffer]) {
        count = buffers.count
        pointer = .allocate(capacity: max(buffers.count, 1))
        for (index, buffer) in buffers.enumerated() {
            pointer[index] = iovec(iov_base: buffer.pointer, iov_len: buffer.count)
        }
    }

    deinit { pointer.deallocate() }
}

/// A temporary file of `size` bytes, removed on deinit.
final class TempFile {
    let path: String

    init(directory: String, size: Int, name: String = "blockio") {
        path = "\(directory)/\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = Glibc.open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        if fd >= 0 {
            _ = ftruncate(fd, off_t(size))
            close(fd)
        }
    }

    deinit { unlink(path) }

    func open(_ flags: Int32) -> Int32 { Glibc.open(path, flags | O_CLOEXEC) }
}

/// Runs a shell command; returns its trimmed stdout and exit status.
func shell(_ command: String) -> (output: String, status: Int32) {
    guard let pipe = popen(command + " 2>/dev/null", "r") else { return ("", -1) }
    var output = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 256)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, 256, pipe) }
        if n == 0 { break }
        output.append(contentsOf: chunk[0..<n])
    }
    let status = pclose(pipe)
    let text = String(decoding: output, as: UTF8.self)
    return (text.trimmed(), status)
}

extension String {
    func trimmed() -> String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}

/// Hands a non-Sendable value to one other thread (the test joins it before reuse).
final class UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
