import BlockIO
import Glibc
import Posix
import Testing

/// One conformance suite, run against every engine.
@Suite("IOEngine conformance")
struct EngineConformanceTests {
    /// Where the round-trip file lives and how it is opened.
    enum Placement: String, CaseIterable, Sendable {
        case tmpfs  // /dev/shm, buffered
        case direct  // /var/tmp, O_DIRECT
    }

    @Test("readv/writev round trip", arguments: EngineKind.allCases, Placement.allCases)
    func roundTrip(kind: EngineKind, placement: Placement) throws {
        let engine = try kind.make()
        let file = TempFile(directory: placement == .tmpfs ? "/dev/shm" : "/var/tmp", size: 1 << 20)
        let fd = file.open(O_RDWR | (placement == .direct ? O_DIRECT : 0))
        try #require(fd >= 0)
        defer { close(fd) }

        let out = [AlignedBuffer(count: 4096), AlignedBuffer(count: 8192)]
        out[0].fill(pattern: 7)
        out[1].fill(pattern: 99)
        let outVecs = IOVecs(out)
        #expect(engine.enqueue(.writev(fd: FileDescriptor(fd), iovecs: outVecs.pointer, count: 2, offset: 16384), tag: 1))
        #expect(engine.inFlight == 1)
        let written = collect(engine, count: 1)
        #expect(written.results == [1: 12288])
        #expect(engine.inFlight == 0)

        let back = [AlignedBuffer(count: 8192), AlignedBuffer(count: 4096)]
        let backVecs = IOVecs(back)
        #expect(engine.enqueue(.readv(fd: FileDescriptor(fd), iovecs: backVecs.pointer, count: 2, offset: 16384), tag: 2))
        let read = collect(engine, count: 1)
        #expect(read.results == [2: 12288])
        #expect(back[0].bytes + back[1].bytes == out[0].bytes + out[1].bytes)
        withExtendedLifetime((outVecs, backVecs)) {}
    }

    @Test("fdatasync completes with 0", arguments: EngineKind.allCases)
    func fdatasync(kind: EngineKind) throws {
        let engine = try kind.make()
        let file = TempFile(directory: "/var/tmp", size: 65536)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(engine.enqueue(.fdatasync(fd: FileDescriptor(fd)), tag: 42))
        engine.submit()
        #expect(collect(engine, count: 1).results == [42: 0])
    }

    @Test("fallocate punch hole reads back zeroes", arguments: EngineKind.allCases, Placement.allCases)
    func punchHole(kind: EngineKind, placement: Placement) throws {
        let engine = try kind.make()
        let file = TempFile(directory: placement == .tmpfs ? "/dev/shm" : "/var/tmp", size: 65536)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let data = AlignedBuffer(count: 8192, fill: 0xAB)
        let vecs = IOVecs([data])
        #expect(engine.enqueue(.writev(fd: FileDescriptor(fd), iovecs: vecs.pointer, count: 1, offset: 0), tag: 1))
        #expect(collect(engine, count: 1).results == [1: 8192])

        #expect(engine.enqueue(.fallocate(fd: FileDescriptor(fd), mode: FallocateMode.punchHole, offset: 0, length: 4096), tag: 2))
        #expect(collect(engine, count: 1).results == [2: 0])

        let back = AlignedBuffer(count: 8192, fill: 0x55)
        let backVecs = IOVecs([back])
        #expect(engine.enqueue(.readv(fd: FileDescriptor(fd), iovecs: backVecs.pointer, count: 1, offset: 0), tag: 3))
        #expect(collect(engine, count: 1).results == [3: 8192])
        #expect(back.bytes[0..<4096].allSatisfy { $0 == 0 })
        #expect(back.bytes[4096...].allSatisfy { $0 == 0xAB })
        withExtendedLifetime((vecs, backVecs)) {}
    }

    @Test("write-zeroes: zero range, or punch hole where tmpfs refuses it", arguments: EngineKind.allCases, Placement.allCases)
    func writeZeroes(kind: EngineKind, placement: Placement) throws {
        let engine = try kind.make()
        let file = TempFile(directory: placement == .tmpfs ? "/dev/shm" : "/var/tmp", size: 65536)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let data = AlignedBuffer(count: 8192, fill: 0xCD)
        let vecs = IOVecs([data])
        #expect(engine.enqueue(.writev(fd: FileDescriptor(fd), iovecs: vecs.pointer, count: 1, offset: 0), tag: 1))
        #expect(collect(engine, count: 1).results == [1: 8192])

        let mode = FallocateMode.writeZeroes(unmap: false)
        #expect(engine.enqueue(.fallocate(fd: FileDescriptor(fd), mode: mode, offset: 4096, length: 4096), tag: 2))
        var result = collect(engine, count: 1).results[2]
        if let first = result, let retry = FallocateMode.fallback(after: mode, result: first) {
            #expect(placement == .tmpfs, "only tmpfs should refuse ZERO_RANGE, got \(first)")
            #expect(engine.enqueue(.fallocate(fd: FileDescriptor(fd), mode: retry, offset: 4096, length: 4096), tag: 3))
            result = collect(engine, count: 1).results[3]
        }
        #expect(result == 0)
        let back = AlignedBuffer(count: 8192, fill: 0x55)
        let backVecs = IOVecs([back])
        #expect(engine.enqueue(.readv(fd: FileDescriptor(fd), iovecs: backVecs.pointer, count: 1, offset: 0), tag: 4))
        #expect(collect(engine, count: 1).results == [4: 8192])
        #expect(back.bytes[0..<4096].allSatisfy { $0 == 0xCD })
        #expect(back.bytes[4096...].allSatisfy { $0 == 0 })
        withExtendedLifetime((vecs, backVecs)) {}
    }

    @Test("a .read on an eventfd completes only once it is signalled", arguments: EngineKind.allCases, [true, false])
    func eventfdRead(kind: EngineKind, nonBlocking: Bool) throws {
        let engine = try kind.make()
        let event = try EventFD(nonBlocking: nonBlocking)
        defer { event.close() }
        let buffer = AlignedBuffer(count: 8)
        #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: 5))
        #expect(engine.wait(timeoutNanoseconds: 0) { _, _ in } == 0)
        #expect(engine.wait(timeoutNanoseconds: 20_000_000) { _, _ in } == 0)
        #expect(engine.inFlight == 1)

        let signaller = try PosixThread.start(name: "test-signal") {
            usleep(50_000)
            event.signal()
        }
        let started = monotonicNow()
        var collected = Collected()
        let delivered = engine.wait(timeoutNanoseconds: 5_000_000_000) { collected.add($0, $1) }
        PosixThread.join(signaller)
        #expect(delivered == 1)
        #expect(collected.results == [5: 8])
        #expect(buffer.pointer.load(as: UInt64.self) == 1)
        #expect(monotonicNow() - started >= 30_000_000)
        #expect(engine.inFlight == 0)
    }

    @Test("a cancelled eventfd read completes once, with -ECANCELED, and frees its slot", arguments: EngineKind.allCases)
    func cancelledRead(kind: EngineKind) throws {
        let engine = try kind.make()
        let event = try EventFD()
        defer { event.close() }
        let buffer = AlignedBuffer(count: 8)
        #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: 11))
        #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: 12))
        #expect(engine.wait(timeoutNanoseconds: 0) { _, _ in } == 0)
        engine.cancelRead(tag: 11)
        engine.cancelRead(tag: 999)  // no such read: nothing happens
        var collected = Collected()
        collect(engine, count: 1, into: &collected)
        #expect(collected.results == [11: -ECANCELED])
        #expect(engine.inFlight == 1)
        // Nothing else completes: the other read still waits, and only it takes the signal.
        #expect(engine.wait(timeoutNanoseconds: 20_000_000) { collected.add($0, $1) } == 0)
        event.signal()
        collect(engine, count: 1, into: &collected)
        #expect(collected.results == [11: -ECANCELED, 12: 8])
        #expect(collected.duplicates.isEmpty)
        #expect(engine.inFlight == 0)
        engine.cancelRead(tag: 12)  // already completed: nothing more is delivered
        #expect(engine.wait(timeoutNanoseconds: 20_000_000) { collected.add($0, $1) } == 0)
    }

    @Test("a cancel that finds the submission queue full waits for room, it is not lost", arguments: EngineKind.allCases)
    func cancelWithTheQueueFull(kind: EngineKind) throws {
        for _ in 0..<20 { try cancelWithTheQueueFullOnce(kind: kind) }  // an SQPOLL thread may or may not have made room
    }

    func cancelWithTheQueueFullOnce(kind: EngineKind) throws {
        let engine = try kind.make(capacity: 8)
        let event = try EventFD()
        defer { event.close() }
        let buffer = AlignedBuffer(count: 8)
        var accepted: UInt64 = 0
        while engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: accepted) {
            accepted += 1
            if accepted > 1000 { break }
        }
        #expect(accepted == UInt64(engine.capacity))
        engine.cancelRead(tag: 0)  // before any submission: the SQ is full
        var collected = Collected()
        collect(engine, count: 1, into: &collected, seconds: 5)
        #expect(collected.results == [0: -ECANCELED])
        #expect(engine.inFlight == engine.capacity - 1)
        for tag in 1..<accepted { engine.cancelRead(tag: tag) }
        collect(engine, count: Int(accepted) - 1, into: &collected, seconds: 5)
        #expect(collected.results.count == Int(accepted) && collected.results.values.allSatisfy { $0 == -ECANCELED })
        #expect(collected.duplicates.isEmpty)
        #expect(engine.inFlight == 0)
    }

    @Test("a read cancelled on a closed eventfd does not hold up one on the next", arguments: EngineKind.allCases)
    func cancelThenReuse(kind: EngineKind) throws {
        let engine = try kind.make()
        let buffer = AlignedBuffer(count: 8)
        for round in 0..<3 {
            // A queue's session: arm a kick read, cancel it at stop, close the
            // fd; the next session's eventfd often gets the same number.
            let event = try EventFD()
            let tag = UInt64(round)
            #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: tag))
            #expect(engine.wait(timeoutNanoseconds: 0) { _, _ in } == 0)
            engine.cancelRead(tag: tag)
            #expect(collect(engine, count: 1).results == [tag: -ECANCELED])
            event.close()
        }
        let event = try EventFD()
        defer { event.close() }
        #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: 7))
        #expect(engine.wait(timeoutNanoseconds: 0) { _, _ in } == 0)
        event.signal()
        #expect(collect(engine, count: 1, seconds: 2).results == [7: 8])
    }

    @Test("non-blocking waits (timeout 0) pick up a signalled eventfd read", arguments: EngineKind.allCases)
    func pollingWait(kind: EngineKind) throws {
        let engine = try kind.make()
        let event = try EventFD()
        defer { event.close() }
        let buffer = AlignedBuffer(count: 8)
        #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: 9))
        #expect(engine.wait(timeoutNanoseconds: 0) { _, _ in } == 0)
        event.signal()
        event.signal()
        var collected = Collected()
        for _ in 0..<1000 where collected.results.isEmpty {
            _ = engine.wait(timeoutNanoseconds: 0) { collected.add($0, $1) }
            if collected.results.isEmpty { usleep(1000) }
        }
        #expect(collected.results == [9: 8])
        #expect(buffer.pointer.load(as: UInt64.self) == 2)
    }

    @Test("an engine created on one thread serves another", arguments: EngineKind.allCases)
    func createdElsewhere(kind: EngineKind) throws {
        let box = UncheckedBox(try kind.make())
        let file = TempFile(directory: "/dev/shm", size: 65536)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let outcome = UncheckedBox(UnsafeMutablePointer<Int32>.allocate(capacity: 1))
        defer { outcome.value.deallocate() }
        outcome.value.initialize(to: 12345)
        let worker = try PosixThread.start(name: "test-reactor") {
            let engine = box.value
            guard engine.enqueue(.fdatasync(fd: FileDescriptor(fd)), tag: 1) else { return }
            let collected = collect(engine, count: 1)
            outcome.value.pointee = collected.results[1] ?? -1
        }
        PosixThread.join(worker)
        #expect(outcome.value.pointee == 0)
    }

    @Test("errors come back as -errno", arguments: EngineKind.allCases)
    func errors(kind: EngineKind) throws {
        let engine = try kind.make()
        let file = TempFile(directory: "/dev/shm", size: 65536)
        let readOnly = file.open(O_RDONLY)
        try #require(readOnly >= 0)
        defer { close(readOnly) }
        let data = AlignedBuffer(count: 4096)
        let vecs = IOVecs([data])
        // An fd number nothing in this process has open (a closed fd could be
        // reused by a test running in parallel).
        let notOpen: Int32 = 987_654
        #expect(engine.enqueue(.readv(fd: FileDescriptor(notOpen), iovecs: vecs.pointer, count: 1, offset: 0), tag: 1))
        #expect(engine.enqueue(.writev(fd: FileDescriptor(readOnly), iovecs: vecs.pointer, count: 1, offset: 0), tag: 2))
        #expect(engine.enqueue(.fdatasync(fd: FileDescriptor(notOpen)), tag: 3))
        let collected = collect(engine, count: 3)
        #expect(collected.results == [1: -EBADF, 2: -EBADF, 3: -EBADF])
        withExtendedLifetime(vecs) {}
    }

    @Test("flow control: full engine refuses, a completion frees a slot", arguments: EngineKind.allCases)
    func flowControl(kind: EngineKind) throws {
        let engine = try kind.make(capacity: 8)
        let file = TempFile(directory: "/dev/shm", size: 65536)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        var accepted: UInt64 = 0
        while engine.enqueue(.fdatasync(fd: FileDescriptor(fd)), tag: accepted) {
            accepted += 1
            if accepted > 10_000 { break }
        }
        #expect(accepted == UInt64(engine.capacity))
        #expect(engine.freeSlots == 0)
        #expect(engine.inFlight == engine.capacity)
        engine.submit()
        var collected = Collected()
        collect(engine, count: 1, into: &collected)
        #expect(!collected.results.isEmpty)
        #expect(engine.freeSlots == collected.results.count)
        #expect(engine.enqueue(.fdatasync(fd: FileDescriptor(fd)), tag: 1000))
        collect(engine, count: Int(accepted) + 1 - collected.results.count, into: &collected)
        #expect(collected.results.count == Int(accepted) + 1)
        #expect(collected.duplicates.isEmpty)
        #expect(collected.results.values.allSatisfy { $0 == 0 })
        #expect(engine.inFlight == 0)
    }

    @Test("stress: 10,000 ops in a bounded window, every tag exactly once", arguments: EngineKind.allCases)
    func stress(kind: EngineKind) throws {
        let engine = try kind.make(capacity: 64)
        let file = TempFile(directory: "/dev/shm", size: 1 << 20)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let window = 48
        let buffers = (0..<window).map { _ in AlignedBuffer(count: 4096) }
        let vecs = buffers.map { IOVecs([$0]) }
        var freeSlots = Array(0..<window)
        var slotOfTag: [UInt64: Int] = [:]
        var seen = Set<UInt64>()
        var duplicates = 0
        var wrong = 0
        let total: UInt64 = 10_000
        var next: UInt64 = 0
        var rng = SystemRandomNumberGenerator()
        let deadline = monotonicNow() + 60_000_000_000
        while UInt64(seen.count) < total && monotonicNow() < deadline {
            while next < total, let slot = freeSlots.last, engine.freeSlots > 0 {
                let offset = UInt64.random(in: 0..<256, using: &rng) * 4096
                let op: IOOperation = next % 2 == 0
                    ? .writev(fd: FileDescriptor(fd), iovecs: vecs[slot].pointer, count: 1, offset: offset)
                    : .readv(fd: FileDescriptor(fd), iovecs: vecs[slot].pointer, count: 1, offset: offset)
                guard engine.enqueue(op, tag: next) else { break }
                freeSlots.removeLast()
                slotOfTag[next] = slot
                next += 1
            }
            _ = engine.wait(timeoutNanoseconds: 1_000_000_000) { tag, result in
                if !seen.insert(tag).inserted { duplicates += 1 }
                if result != 4096 { wrong += 1 }
                if let slot = slotOfTag.removeValue(forKey: tag) { freeSlots.append(slot) }
            }
        }
        #expect(UInt64(seen.count) == total)
        #expect(seen == Set(0..<total))
        #expect(duplicates == 0)
        #expect(wrong == 0)
        #expect(engine.inFlight == 0)
        withExtendedLifetime((buffers, vecs)) {}
    }

    @Test("engine names")
    func names() throws {
        #expect(try EngineKind.uring.make().name == "io_uring")
        #expect(try EngineKind.threadPool.make().name == "thread-pool")
    }
}
