@testable import BlockIO
import Posix
import Testing

/// The thread pool's job queue: oldest job first, at most `perFileLimit`
/// running per file, owed tokens, and how many workers other files' jobs
/// need (PoolJobQueue.swift). The jobs are never executed: `fdatasync` on
/// made-up descriptors only names a file.
@Suite("Thread-pool job queue")
struct PoolJobQueueTests {
    static func job(fd: Int32, tag: UInt64) -> PoolJob { PoolJob(op: .fdatasync(fd: FileDescriptor(fd)), tag: tag) }

    @Test func oldestJobFirstWithinTheLimitPerFile() {
        var queue = PoolJobQueue(perFileLimit: 2)
        queue.append([Self.job(fd: 10, tag: 1), Self.job(fd: 10, tag: 2), Self.job(fd: 10, tag: 3), Self.job(fd: 11, tag: 4)])
        // No worker yet: three jobs may run (two of file 10, file 11's).
        #expect(queue.workersWanted(workers: 0) == 3)
        let first = queue.take()
        #expect(first?.tag == 1)
        #expect(queue.take()?.tag == 2)
        // File 10 is at its limit: its third job waits, file 11's goes first.
        #expect(queue.take()?.tag == 4)
        // A fourth token finds nothing that may run: it is owed to job 3...
        #expect(queue.take() == nil)
        #expect(queue.waitingCount == 1)
        // ...which the worker that finishes one of file 10's jobs runs next.
        if let first { #expect(queue.finish(first)?.tag == 3) }
        #expect(queue.waitingCount == 0)
        #expect(queue.busy == 3)
    }

    @Test func aFinishedJobWithNoTokenOwedLeavesTheNextToItsToken() {
        var queue = PoolJobQueue(perFileLimit: 1)
        queue.append([Self.job(fd: 10, tag: 1)])
        let first = queue.take()
        queue.append([Self.job(fd: 10, tag: 2)])
        if let first { #expect(queue.finish(first) == nil) }
        #expect(queue.take()?.tag == 2)
        #expect(queue.busy == 1)
    }

    @Test func oneBusyFileNeverAsksForWorkers() {
        var queue = PoolJobQueue(perFileLimit: 2)
        queue.append([Self.job(fd: 10, tag: 1), Self.job(fd: 10, tag: 2)])
        _ = queue.take()
        _ = queue.take()
        // Two workers, both on file 10: more of its jobs cannot run anyway.
        queue.append([Self.job(fd: 10, tag: 3), Self.job(fd: 10, tag: 4)])
        #expect(queue.workersWanted(workers: 2) == 0)
        // Another file's job can: no worker is idle, so one more.
        queue.append([Self.job(fd: 12, tag: 5)])
        #expect(queue.workersWanted(workers: 2) == 1)
    }

    @Test func idleWorkersSuffice() {
        var queue = PoolJobQueue(perFileLimit: 4)
        queue.append([Self.job(fd: 10, tag: 1), Self.job(fd: 11, tag: 2)])
        #expect(queue.workersWanted(workers: 4) == 0)
        #expect(queue.workersWanted(workers: 1) == 1)
    }
}
