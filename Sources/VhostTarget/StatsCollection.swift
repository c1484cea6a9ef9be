import BlkDevice
import Glibc

/// One running virtqueue's counters, copied on its reactor.
struct QueueSnapshot: Sendable {
    let controller: String
    let index: Int
    let reactor: Int
    let stats: QueueStats
}

/// Gathering the counters the queues keep on their reactors (control loop).
///
/// Every read is a closure posted to the queue's reactor (`postAndWait`),
/// so the data path keeps plain stores and the control loop blocks only for
/// one round trip per reactor serving the controller's queues.
extension Controller {
    /// The running queues, in index order.
    var runningServers: [(index: Int, server: VirtqueueServer)] {
        guard let session else { return [] }
        return session.vrings.enumerated().compactMap { index, vring in vring.server.map { (index, $0) } }
    }

    /// A copy of every running queue's counters; `reset` is applied on the
    /// reactor right after the copy, so nothing is lost between the two.
    func queueSnapshots(reset: IOStatResetMode = .none) -> [QueueSnapshot] {
        loop.preconditionInLoop()
        let servers = runningServers
        guard !servers.isEmpty else { return [] }
        let name = self.name
        var snapshots: [QueueSnapshot] = []
        // One round trip per reactor that serves some of the queues.
        for queueReactor in queueReactors {
            let here = servers.filter { $0.server.reactor === queueReactor }
            guard !here.isEmpty else { continue }
            let reactorIndex = queueReactor.index
            snapshots += queueReactor.postAndWait {
                here.map { entry in
                    let copy = entry.server.statsSnapshot()
                    if reset != .none { entry.server.stats.reset(reset) }
                    return QueueSnapshot(controller: name, index: entry.index, reactor: reactorIndex, stats: copy)
                }
            }
        }
        return snapshots.sorted { $0.index < $1.index }
    }

    /// Folds a stopped queue's I/O counters into its bdev's totals, so they
    /// survive queue restarts and the session's end.
    func retireStats(of server: VirtqueueServer) {
        loop.preconditionInLoop()
        let stats = server.reactor.postAndWait { server.statsSnapshot() }
        bdev?.retiredStats.add(stats.io)
    }

    /// Before the bdev changes (attach, detach): moves what the running
    /// queues counted into the current bdev's totals (dropped when there is
    /// none) and zeroes their I/O counters, so each bdev keeps its own.
    func settleStatsBeforeBackendChange() {
        loop.preconditionInLoop()
        for snapshot in queueSnapshots(reset: .ioOnly) {
            bdev?.retiredStats.add(snapshot.stats.io)
        }
    }
}

extension VhostTarget {
    /// The controller serving `bdev`, if any.
    func controller(serving bdev: Bdev) -> Controller? {
        guard let controller = bdev.claimedBy, controller.bdev === bdev else { return nil }
        return controller
    }

    /// A bdev's totals: stopped queues plus running ones (with `reset` applied to both).
    func totals(of bdev: Bdev, reset: IOStatResetMode = .none) -> (total: IOStats, queues: [QueueSnapshot]) {
        var total = bdev.retiredStats
        let queues = controller(serving: bdev)?.queueSnapshots(reset: reset) ?? []
        for queue in queues { total.add(queue.stats.io) }
        bdev.retiredStats.reset(reset)
        return (total, queues)
    }

    /// CLOCK_MONOTONIC in nanoseconds: the `ticks` of the stats results.
    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
