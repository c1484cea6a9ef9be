import Glibc
import Testing
import Virtio
@testable import BlkDevice

/// The pieces of the error policy that need no daemon: errno classes, the
/// per-errno counters and their resets, what counts as a full disk, the log
/// text, and the shared bdev state.
@Suite struct ErrorPolicyUnitTests {
    @Test func errnoClasses() {
        #expect(IOErrnoClass(result: -ENOSPC) == .enospc)
        #expect(IOErrnoClass(result: -EDQUOT) == .edquot)
        #expect(IOErrnoClass(result: -EIO) == .eio)
        #expect(IOErrnoClass(result: -EROFS) == .erofs)
        #expect(IOErrnoClass(result: -EINVAL) == .einval)
        #expect(IOErrnoClass(result: -ENXIO) == .enxio)
        #expect(IOErrnoClass(result: -EBADF) == .other)
        #expect(IOErrnoClass(result: 100) == .short)
        #expect(IOErrnoClass(result: Int32.min) == .other)
        #expect(Set(IOErrnoClass.allCases.map(\.name)).count == IOErrnoClass.allCases.count)
    }

    @Test func countersAddUpAndResetWithErrors() {
        let block = QueueStatsBlock(slotCount: 4)
        block.countErrno(.enospc)
        block.countErrno(.enospc)
        block.countErrno(.eio)
        var s = block.snapshot()
        #expect(s.io.errnos[.enospc] == 2 && s.io.errnos[.eio] == 1 && s.io.errnos.total == 3)
        var total = IOStats()
        total.add(s.io)
        total.add(s.io)
        #expect(total.errnos[.enospc] == 4)
        total.reset(.maxmin)
        #expect(total.errnos[.enospc] == 4)
        total.reset(.error)
        #expect(total.errnos.total == 0)

        block.reset(.maxmin)
        #expect(block.snapshot().io.errnos.total == 3)
        block.reset(.error)
        #expect(block.snapshot().io.errnos.total == 0)
        block.countErrno(.other)
        block.reset(.ioOnly)
        #expect(block.snapshot().io.errnos.total == 0)
        block.countErrno(.short)
        block.reset(.all)
        s = block.snapshot()
        #expect(s.io.errnos.total == 0)
    }

    @Test func whatMeansAFullDisk() {
        let disk = BlkDisk(capacitySectors: 2048, readOnly: false)
        let write = BlkOperation(.write, offset: 4096, length: 8192)
        #expect(VirtqueueServer.meansFull(write, result: -ENOSPC, disk: disk))
        #expect(VirtqueueServer.meansFull(write, result: -EDQUOT, disk: disk))
        #expect(VirtqueueServer.meansFull(write, result: 4096, disk: disk), "a short write")
        #expect(!VirtqueueServer.meansFull(write, result: -EIO, disk: disk))
        let beyond = BlkOperation(.write, offset: 2048 * 512, length: 4096)
        #expect(!VirtqueueServer.meansFull(beyond, result: 0, disk: disk), "off the (shrunk) disk is not full")
        #expect(VirtqueueServer.meansFull(BlkOperation(.writeSync, offset: 0, length: 4096), result: -ENOSPC, disk: disk))
        #expect(VirtqueueServer.meansFull(BlkOperation(.writeZeroes, offset: 0, length: 4096), result: -ENOSPC, disk: disk))
        #expect(!VirtqueueServer.meansFull(BlkOperation(.read, offset: 0, length: 4096), result: -ENOSPC, disk: disk))
        #expect(!VirtqueueServer.meansFull(BlkOperation(.flush), result: -ENOSPC, disk: disk))
        #expect(!VirtqueueServer.meansFull(BlkOperation(.discard, offset: 0, length: 4096), result: -ENOSPC, disk: disk))
    }

    @Test func logText() {
        let disk = BlkDisk(capacitySectors: 4096, readOnly: false)
        #expect(VirtqueueServer.describe(BlkOperation(.write, offset: 1_048_576, length: 65536), result: -ENOSPC, disk: disk)
                == "write offset 1048576 length 65536 failed: ENOSPC (No space left on device)")
        #expect(VirtqueueServer.describe(BlkOperation(.read, offset: 0, length: 4096), result: 512, disk: disk)
                == "read offset 0 length 4096 failed: moved 512 of 4096 bytes")
        #expect(VirtqueueServer.describe(BlkOperation(.read, offset: 4096 * 512, length: 4096), result: 4096, disk: disk)
                .hasSuffix("the range is beyond the disk's end (resized while in flight)"))
        #expect(VirtqueueServer.describe(BlkOperation(.flush), result: -12345, disk: disk).contains("errno 12345"))
        #expect((1...10).allSatisfy(VirtqueueServer.logsIOError))
        #expect(!VirtqueueServer.logsIOError(11) && !VirtqueueServer.logsIOError(999))
        #expect(VirtqueueServer.logsIOError(1000) && VirtqueueServer.logsIOError(2000))
    }

    @Test func sharedStateCountsPausedQueues() {
        let state = BdevErrorState(bdevName: "D0")
        #expect(state.policy == .report)
        state.policy = .pause
        #expect(state.policy == .pause)
        #expect(IOErrorPolicy(name: "pause") == .pause && IOErrorPolicy(name: "retry") == nil)
        #expect(state.countFailure() == 1 && state.countFailure() == 2)
        #expect(state.pausedQueues == 0 && state.pausedSince == nil)
        state.queuePaused()
        state.queuePaused()
        #expect(state.pausedQueues == 2)
        let since = state.pausedSince
        #expect(since != nil)
        state.queueResumed()
        #expect(state.pausedSince == since)
        state.queueResumed()
        #expect(state.pausedQueues == 0 && state.pausedSince == nil)
    }
}
