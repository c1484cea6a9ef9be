import Glibc
import Synchronization
import Virtio

/// What a bdev does when a write finds its file system full (docs/OPERATIONS.md, "Full disks").
package enum IOErrorPolicy: UInt8, Sendable, CaseIterable {
    /// The guest gets VIRTIO_BLK_S_IOERR (virtio 1.2 §5.2.6), as for any other error.
    case report = 0
    /// A write that failed with ENOSPC or EDQUOT (or moved fewer bytes than
    /// asked, which is how a file system that fills up mid-write answers)
    /// is held, not completed; its queue stops popping until
    /// `bdev_resume_io`, which performs the held writes again. The guest
    /// sees a stall instead of an error.
    case pause = 1

    /// The name in the RPC parameters and results.
    package var name: String {
        switch self {
        case .report: return "report"
        case .pause: return "pause"
        }
    }

    package init?(name: String) {
        guard let policy = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = policy
    }
}

/// The errnos counted apart: a small fixed set, so every queue's counters
/// stay a fixed block of words (`QueueStatsBlock`).
package enum IOErrnoClass: Int, CaseIterable, Sendable {
    case eio, enospc, edquot, erofs, einval, enxio
    /// A read or write that moved fewer bytes than asked (no errno).
    case short
    case other

    /// The class of a failed operation's result (-errno, or the bytes a short transfer moved).
    package init(result: Int32) {
        switch 0 &- result {
        case EIO: self = .eio
        case ENOSPC: self = .enospc
        case EDQUOT: self = .edquot
        case EROFS: self = .erofs
        case EINVAL: self = .einval
        case ENXIO: self = .enxio
        default: self = result >= 0 ? .short : .other
        }
    }

    /// The key in `bdev_get_iostat`'s `io_errno` and the metrics' `errno` label.
    package var name: String {
        switch self {
        case .eio: return "EIO"
        case .enospc: return "ENOSPC"
        case .edquot: return "EDQUOT"
        case .erofs: return "EROFS"
        case .einval: return "EINVAL"
        case .enxio: return "ENXIO"
        case .short: return "short"
        case .other: return "other"
        }
    }
}

/// Failed backend operations per errno class.
package struct IOErrnoCounts: Sendable, Equatable {
    package private(set) var counts = [UInt64](repeating: 0, count: IOErrnoClass.allCases.count)

    package init() {}

    package subscript(_ errnoClass: IOErrnoClass) -> UInt64 {
        get { counts[errnoClass.rawValue] }
        set { counts[errnoClass.rawValue] = newValue }
    }

    package var total: UInt64 { counts.reduce(0, &+) }

    package mutating func add(_ other: IOErrnoCounts) {
        for index in counts.indices { counts[index] &+= other.counts[index] }
    }
}

/// One bdev's error handling, shared by the control plane and the queues
/// that serve it (handed to them in `DeviceBackend.errors`): the policy,
/// the count of failed operations the log lines quote, and which queues
/// hold writes under `pause`. Atomics only: queues read the policy on the
/// failure path, never on a success.
package final class BdevErrorState: Sendable {
    package let bdevName: String
    private let policyRaw: Atomic<UInt8>
    private let failures = Atomic<UInt64>(0)
    private let pausedQueueCount = Atomic<Int>(0)
    /// CLOCK_REALTIME seconds when the first queue paused (0: none paused).
    private let pausedSinceSeconds = Atomic<Int64>(0)

    package init(bdevName: String, policy: IOErrorPolicy = .report) {
        self.bdevName = bdevName
        policyRaw = Atomic(policy.rawValue)
    }

    package var policy: IOErrorPolicy {
        get { IOErrorPolicy(rawValue: policyRaw.load(ordering: .relaxed)) ?? .report }
        set { policyRaw.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// Counts one failed operation; returns the bdev's count so far.
    package func countFailure() -> UInt64 {
        failures.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Queues holding writes now.
    package var pausedQueues: Int { pausedQueueCount.load(ordering: .relaxed) }

    /// When the oldest pause still in force began (CLOCK_REALTIME seconds), if any queue is paused.
    package var pausedSince: Int64? {
        guard pausedQueues > 0 else { return nil }
        let since = pausedSinceSeconds.load(ordering: .relaxed)
        return since == 0 ? nil : since
    }

    /// A queue began holding writes.
    package func queuePaused() {
        let now = Int64(time(nil))
        if pausedQueueCount.wrappingAdd(1, ordering: .relaxed).oldValue == 0 {
            pausedSinceSeconds.store(now, ordering: .relaxed)
        }
    }

    /// A queue stopped holding writes (resumed, or stopped and failed them).
    package func queueResumed() {
        if pausedQueueCount.wrappingSubtract(1, ordering: .relaxed).newValue <= 0 {
            pausedSinceSeconds.store(0, ordering: .relaxed)
        }
    }
}

extension IOErrnoClass {
    /// The errno's symbolic name for log lines ("ENOSPC"), or "errno N".
    package static func symbol(_ errno: Int32) -> String {
        switch errno {
        case EIO: return "EIO"
        case ENOSPC: return "ENOSPC"
        case EDQUOT: return "EDQUOT"
        case EROFS: return "EROFS"
        case EINVAL: return "EINVAL"
        case ENXIO: return "ENXIO"
        case EFBIG: return "EFBIG"
        case EBADF: return "EBADF"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        case ENODEV: return "ENODEV"
        case ENOMEM: return "ENOMEM"
        case EAGAIN: return "EAGAIN"
        case ECANCELED: return "ECANCELED"
        case ETIMEDOUT: return "ETIMEDOUT"
        default: return "errno \(errno)"
        }
    }
}
