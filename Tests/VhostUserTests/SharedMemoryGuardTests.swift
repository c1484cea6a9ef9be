import Glibc
import Posix
import Testing

/// `SharedMemoryGuard` in this test process. It is installed once, for the
/// whole process (the handler is process-wide and keeps its eventfd): other
/// tests' mappings are guarded from then on, which changes nothing for them.
@Suite(.serialized) struct SharedMemoryGuardTests {
    static let notify: EventFD? = {
        guard let e = try? EventFD() else { return nil }
        do {
            try SharedMemoryGuard.install(notify: e)
            return e
        } catch {
            e.close()
            return nil
        }
    }()

    static let page = Int(getpagesize())

    /// A memfd of `pages` pages, mapped; the caller unmaps and closes.
    static func mapped(pages: Int) throws -> (FileDescriptor, SharedMapping) {
        let fd = try Memfd.create(name: "guard-test", size: pages * page)
        do {
            return (fd, try SharedMapping(fd: fd, length: pages * page))
        } catch {
            fd.close()
            throw error
        }
    }

    /// Shrinks a fresh 3-page mapping to one page, then reads page 1 and
    /// writes page 2: both accesses complete on zero pages, page 0 keeps its
    /// data, and the mapping counts 2 lost pages.
    static func shrinkAndTouch() throws {
        let notify = try #require(Self.notify)
        let (fd, victim) = try mapped(pages: 3)
        defer {
            victim.unmap()
            fd.close()
        }
        victim.base.storeBytes(of: 0xab, as: UInt8.self)
        notify.drain()
        #expect(ftruncate(fd.rawValue, off_t(page)) == 0)
        // Without the guard the next line is SIGBUS (mmap(2)): the test process dies here.
        let read = victim.base.load(fromByteOffset: page + 8, as: UInt64.self)
        victim.base.storeBytes(of: UInt64(0x1234), toByteOffset: 2 * page + 16, as: UInt64.self)
        #expect(read == 0)
        #expect(victim.base.load(as: UInt8.self) == 0xab)
        #expect(victim.lostPages == 2)
        #expect(notify.drain() >= 2)
    }

    /// The table once had 4,096 slots, and a range registered past them was
    /// silently left unguarded: 5,000 mappings, then the last of them and
    /// one more shrink under this process.
    @Test func aShrinkAfterFiveThousandRangesIsSurvived() throws {
        _ = try #require(Self.notify)
        var held: [SharedMapping] = []
        defer { for m in held { m.unmap() } }
        var lastFD: FileDescriptor?
        defer { lastFD?.close() }
        for i in 0..<5000 {
            let (fd, mapping) = try Self.mapped(pages: 1)
            held.append(mapping)
            if i == 4999 { lastFD = fd } else { fd.close() }  // the mapping keeps the memory
        }
        let fd = try #require(lastFD)
        let last = try #require(held.last)
        #expect(ftruncate(fd.rawValue, 0) == 0)
        #expect(last.base.load(fromByteOffset: 100, as: UInt8.self) == 0)
        #expect(last.lostPages == 1)
        try Self.shrinkAndTouch()
    }

    /// A SIGBUS that a process sends (tgkill(2) through raise(3): SI_TKILL;
    /// pthread_sigqueue(3): SI_QUEUE) is no fault: the guard ignores it,
    /// stays installed, and the next shrink is still caught. (The handler
    /// once put back the previous action for any SIGBUS outside its ranges,
    /// for good.) Both go to this thread only, so no other test's blocking
    /// call is interrupted; HostileFrontendTests sends kill(2) to the daemon.
    @Test func sentSignalsLeaveTheGuardInstalled() throws {
        _ = try #require(Self.notify)
        for i in 0..<3 {
            // Delivered to this thread before the call returns (signal(7)).
            #expect(raise(SIGBUS) == 0)
            #expect(pthread_sigqueue(pthread_self(), SIGBUS, sigval(sival_int: Int32(i))) == 0)
        }
        try Self.shrinkAndTouch()
    }
}
