import BlkDevice
import Glibc
import JSONRPC
import VhostBlkAPI

/// `bdev_set_qos_limit` (SPDK's name, parameters and checks: SPDK JSON-RPC,
/// "bdev_set_qos_limit") and how limits reach the queues: each controller
/// serving a limited bdev has one `QoSLimiter` on its reactor, handed to its
/// queues in their `DeviceBackend`.
extension VhostTarget {
    static let qosIOsPerSecondUnit: UInt64 = 1000
    static let bytesPerMiB: UInt64 = 1 << 20

    func bdevSetQosLimit(_ p: BdevSetQosLimitParams) throws(RPCError) -> JSON {
        guard let bdev = bdevs[p.name] else { throw .errno(ENODEV) }
        guard p.rwIOsPerSec != nil || p.rwMBytesPerSec != nil || p.rMBytesPerSec != nil || p.wMBytesPerSec != nil else {
            throw .invalidParams("No rate limits specified")
        }
        var limits = bdev.qosLimits
        if let ios = p.rwIOsPerSec {
            guard ios % Self.qosIOsPerSecondUnit == 0 else {
                throw RPCError(code: -Int(EINVAL),
                               message: "Assigned limit \(ios) on bdev \(bdev.name) is not multiple of \(Self.qosIOsPerSecondUnit)")
            }
            limits.rwIOsPerSec = ios
        }
        if let mb = p.rwMBytesPerSec { limits.rwBytesPerSec = try Self.bytes(mb, bdev: bdev.name) }
        if let mb = p.rMBytesPerSec { limits.rBytesPerSec = try Self.bytes(mb, bdev: bdev.name) }
        if let mb = p.wMBytesPerSec { limits.wBytesPerSec = try Self.bytes(mb, bdev: bdev.name) }
        bdev.qosLimits = limits
        controller(serving: bdev)?.applyQoS()
        logger.info("bdev QoS limits set", metadata: [
            "bdev.name": "\(bdev.name)", "rw_ios_per_sec": "\(limits.rwIOsPerSec)",
            "rw_mbytes_per_sec": "\(limits.rwBytesPerSec / Self.bytesPerMiB)",
            "r_mbytes_per_sec": "\(limits.rBytesPerSec / Self.bytesPerMiB)",
            "w_mbytes_per_sec": "\(limits.wBytesPerSec / Self.bytesPerMiB)",
        ])
        return .bool(true)
    }

    private static func bytes(_ mib: UInt64, bdev: String) throws(RPCError) -> UInt64 {
        let (bytes, overflow) = mib.multipliedReportingOverflow(by: bytesPerMiB)
        guard !overflow, bytes <= UInt64(Int64.max) else {
            throw RPCError(code: -Int(EINVAL), message: "Assigned limit \(mib) MB/s on bdev \(bdev) is too large")
        }
        return bytes
    }

    /// `bdev_get_bdevs`' `assigned_rate_limits` (MiB for the byte limits, as SPDK).
    static func assignedRateLimits(_ bdev: Bdev) -> JSON {
        let l = bdev.qosLimits
        return [
            "rw_ios_per_sec": .int(Int64(clamping: l.rwIOsPerSec)),
            "rw_mbytes_per_sec": .int(Int64(clamping: l.rwBytesPerSec / bytesPerMiB)),
            "r_mbytes_per_sec": .int(Int64(clamping: l.rBytesPerSec / bytesPerMiB)),
            "w_mbytes_per_sec": .int(Int64(clamping: l.wBytesPerSec / bytesPerMiB)),
        ]
    }

    /// The `bdev_set_qos_limit` call that restores `bdev`'s limits, if it has any
    /// (`framework_get_config`, after the bdev's create).
    static func qosConfigEntries(_ bdev: Bdev) -> [SavedConfig.Entry] {
        let l = bdev.qosLimits
        guard !l.isUnlimited else { return [] }
        let p = BdevSetQosLimitParams(
            name: bdev.name, rwIOsPerSec: l.rwIOsPerSec, rwMBytesPerSec: l.rwBytesPerSec / bytesPerMiB,
            rMBytesPerSec: l.rBytesPerSec / bytesPerMiB, wMBytesPerSec: l.wBytesPerSec / bytesPerMiB)
        return [SavedConfig.Entry(method: BdevSetQosLimitParams.method, params: p.json)]
    }
}

extension Controller {
    /// The limiter the queues use for `bdev`: nil while it never had limits
    /// here; otherwise this controller's, told about changed limits.
    func qosLimiter(for bdev: Bdev) -> QoSLimiter? {
        loop.preconditionInLoop()
        let limits = bdev.qosLimits
        if let limiter = qosLimiter {
            if limiter.controlLimits != limits {
                limiter.controlLimits = limits
                limiter.reactor.post { limiter.setLimits(limits) }
            }
            return limiter
        }
        guard !limits.isUnlimited else { return nil }
        let limiter = QoSLimiter(reactor: reactor, limits: limits)
        qosLimiter = limiter
        return limiter
    }

    /// Applies the bdev's current limits to the running queues: a new
    /// limiter goes to them with the backend (no config change for the guest),
    /// an existing one changes its limits on the reactor.
    func applyQoS() {
        loop.preconditionInLoop()
        guard let bdev else { return }
        let hadLimiter = qosLimiter != nil
        let limiter = qosLimiter(for: bdev)
        if !hadLimiter, limiter != nil, let session {
            session.backendChanged(waitForPreviousRequests: false, notifyFrontend: false)
        }
    }

    /// The controller is deleted (after its session ended): held requests go, the timer closes.
    func closeQoS() {
        loop.preconditionInLoop()
        guard let limiter = qosLimiter else { return }
        qosLimiter = nil
        limiter.reactor.post { limiter.close() }
    }
}

extension VhostTarget {
    /// The qos module's methods: limits are saved (`qosConfigEntries`).
    static let qosRPCMethods: [RPCMethod] = [
        .immediate(BdevSetQosLimitParams.self, .qos, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevSetQosLimit(p) },
    ]
}
