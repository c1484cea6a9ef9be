import BlockIO
import Glibc
import Posix
import Testing

@Suite("URingEngine")
struct URingEngineTests {
    @Test("io_uring is available on this kernel")
    func probe() {
        #expect(URingEngine.probe() == nil)
    }

    @Test("the kernel takes SINGLE_ISSUER|DEFER_TASKRUN (6.1+)")
    func setupFlags() throws {
        let engine = try URingEngine(entries: 8)
        let singleIssuer: UInt32 = 1 << 12, deferTaskrun: UInt32 = 1 << 13
        #expect(engine.setupFlags & (singleIssuer | deferTaskrun) == singleIssuer | deferTaskrun)
    }

    @Test("SQPOLL: the kernel takes it (root, 6.18) without the task-run flags, which it refuses beside it")
    func submissionPolling() throws {
        let engine = try URingEngine(entries: 8, polling: SubmissionPolling(idleMilliseconds: 10, cpu: 0))
        let sqPoll: UInt32 = 1 << 1, sqAffinity: UInt32 = 1 << 2
        #expect(engine.submissionPolling)
        #expect(engine.setupFlags == sqPoll | sqAffinity)
    }

    @Test("SQPOLL on a CPU the kernel refuses: the usual ring instead")
    func submissionPollingRefused() throws {
        let engine = try URingEngine(entries: 8, polling: SubmissionPolling(idleMilliseconds: 10, cpu: 1023))
        let singleIssuer: UInt32 = 1 << 12, deferTaskrun: UInt32 = 1 << 13
        #expect(!engine.submissionPolling)
        #expect(engine.setupFlags & (singleIssuer | deferTaskrun) == singleIssuer | deferTaskrun)
    }

    @Test("capacity never exceeds the SQ size")
    func capacity() throws {
        let engine = try URingEngine(entries: 32)
        #expect(engine.capacity == 32)
        #expect(engine.freeSlots == 32)
    }

    @Test("deinit cancels a pending eventfd read promptly")
    func deinitCancelsPendingRead() throws {
        let event = try EventFD()
        defer { event.close() }
        let buffer = AlignedBuffer(count: 8)
        let started = monotonicNow()
        do {
            let engine = try URingEngine(entries: 8)
            #expect(engine.enqueue(.read(fd: event.fd, buffer: buffer.pointer, length: 8), tag: 1))
            engine.submit()
            #expect(engine.wait(timeoutNanoseconds: 0) { _, _ in } == 0)
        }
        #expect(monotonicNow() - started < 2_000_000_000)
        withExtendedLifetime(buffer) {}
    }

    @Test("a ThreadPoolEngine works as a secondary engine through its completion eventfd")
    func secondaryThreadPool() throws {
        let uring = try URingEngine(entries: 16)
        let pool = try ThreadPoolEngine(threads: 2, capacity: 32)
        let file = TempFile(directory: "/var/tmp", size: 1 << 20)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let counter = AlignedBuffer(count: 8)
        let data = AlignedBuffer(count: 4096, fill: 0x11)
        let vecs = IOVecs([data])
        let armTag: UInt64 = 999
        #expect(uring.enqueue(.read(fd: pool.completionEventFD, buffer: counter.pointer, length: 8), tag: armTag))

        for tag in 0..<UInt64(20) {
            let op: IOOperation = tag % 5 == 4
                ? .fdatasync(fd: FileDescriptor(fd))
                : .writev(fd: FileDescriptor(fd), iovecs: vecs.pointer, count: 1, offset: tag * 4096)
            #expect(pool.enqueue(op, tag: tag))
        }
        pool.submit()

        var poolResults = Collected()
        var wakeups = 0
        let deadline = monotonicNow() + 10_000_000_000
        while poolResults.results.count < 20 && monotonicNow() < deadline {
            var fired = false
            _ = uring.wait(timeoutNanoseconds: 1_000_000_000) { tag, result in
                if tag == armTag && result == 8 { fired = true }
            }
            guard fired else { continue }
            wakeups += 1
            _ = pool.reapCompletions { poolResults.add($0, $1) }
            #expect(uring.enqueue(.read(fd: pool.completionEventFD, buffer: counter.pointer, length: 8), tag: armTag))
        }
        #expect(poolResults.results.count == 20)
        #expect(poolResults.duplicates.isEmpty)
        #expect(wakeups >= 1)
        for tag in 0..<UInt64(20) {
            #expect(poolResults.results[tag] == (tag % 5 == 4 ? 0 : 4096))
        }
        #expect(pool.inFlight == 0)
        #expect(uring.inFlight == 1)  // the re-armed read
        withExtendedLifetime((uring, counter, vecs)) {}
    }
}

@Suite("ThreadPoolEngine")
struct ThreadPoolEngineTests {
    @Test("shutdown joins workers; enqueue then refuses")
    func shutdown() throws {
        let pool = try ThreadPoolEngine(threads: 3, capacity: 4)
        pool.shutdown()
        pool.shutdown()
        let file = TempFile(directory: "/dev/shm", size: 4096)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(!pool.enqueue(.fdatasync(fd: FileDescriptor(fd)), tag: 1))
    }

    @Test("a .read whose fd epoll refuses fails with -errno")
    func readOnRegularFileFails() throws {
        let pool = try ThreadPoolEngine(threads: 1, capacity: 4)
        let file = TempFile(directory: "/dev/shm", size: 4096)
        let fd = file.open(O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let buffer = AlignedBuffer(count: 8)
        #expect(pool.enqueue(.read(fd: FileDescriptor(fd), buffer: buffer.pointer, length: 8), tag: 7))
        #expect(collect(pool, count: 1).results == [7: -EPERM])
    }

    @Test("several reads on one eventfd complete one per signal")
    func severalReadsOneFD() throws {
        let pool = try ThreadPoolEngine(threads: 1, capacity: 8)
        let event = try EventFD()
        defer { event.close() }
        let first = AlignedBuffer(count: 8), second = AlignedBuffer(count: 8)
        #expect(pool.enqueue(.read(fd: event.fd, buffer: first.pointer, length: 8), tag: 1))
        #expect(pool.enqueue(.read(fd: event.fd, buffer: second.pointer, length: 8), tag: 2))
        event.signal()
        var collected = Collected()
        collect(pool, count: 1, into: &collected)
        #expect(collected.results == [1: 8])
        #expect(pool.wait(timeoutNanoseconds: 10_000_000) { collected.add($0, $1) } == 0)
        event.signal()
        collect(pool, count: 1, into: &collected)
        #expect(collected.results == [1: 8, 2: 8])
    }
}
