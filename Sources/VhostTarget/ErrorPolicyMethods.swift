import BlkDevice
import Glibc
import JSONRPC
import VhostBlkAPI

/// `bdev_set_error_policy` and `bdev_resume_io` (vhost-blkd's extensions,
/// api/vhost-blkd.openrpc.json; docs/OPERATIONS.md, "Full disks"). The
/// policy lives in the bdev's `BdevErrorState`, which its queues read when
/// an operation fails; resuming is posted to each running queue's reactor.
extension VhostTarget {
    func bdevSetErrorPolicy(_ p: BdevSetErrorPolicyParams) throws(RPCError) -> JSON {
        guard let bdev = bdevs[p.name] else { throw .errno(ENODEV) }
        guard let policy = IOErrorPolicy(name: p.policy) else { throw .invalidParams("unknown policy \(p.policy)") }
        let previous = bdev.errorState.policy
        bdev.errorState.policy = policy
        if previous != policy {
            logger.notice("bdev error policy set", metadata: ["bdev.name": "\(bdev.name)", "policy": "\(policy.name)"])
        }
        // Held writes do not outlive the policy that held them.
        if policy == .report { resumeIO(of: bdev) }
        return .bool(true)
    }

    func bdevResumeIO(_ p: BdevResumeIOParams) throws(RPCError) -> JSON {
        guard let bdev = bdevs[p.name] else { throw .errno(ENODEV) }
        let paused = bdev.errorState.pausedQueues
        logger.notice("bdev I/O resumed by RPC", metadata: ["bdev.name": "\(bdev.name)", "paused_queues": "\(paused)"])
        resumeIO(of: bdev)
        return .bool(true)
    }

    /// Tells every running queue of the controller serving `bdev` to perform
    /// its held writes again (a queue that holds none ignores it).
    private func resumeIO(of bdev: Bdev) {
        guard let controller = controller(serving: bdev) else { return }
        for (_, server) in controller.runningServers {
            server.reactor.post { server.resumeIO() }
        }
    }

    /// `bdev_get_bdevs`' `error_policy`: the policy, and whether queues hold writes now.
    static func errorPolicyJSON(_ bdev: Bdev) -> JSON {
        var o: JSONObject = ["policy": .string(bdev.errorState.policy.name)]
        let paused = bdev.errorState.pausedQueues
        o["io_paused"] = .bool(paused > 0)
        o["paused_queues"] = .int(Int64(paused))
        if let since = bdev.errorState.pausedSince { o["paused_since"] = .int(since) }
        return .object(o)
    }

    /// The `bdev_set_error_policy` call that restores a policy other than
    /// the default (`framework_get_config`, after the bdev's create).
    static func errorPolicyConfigEntries(_ bdev: Bdev) -> [SavedConfig.Entry] {
        let policy = bdev.errorState.policy
        guard policy != .report else { return [] }
        let p = BdevSetErrorPolicyParams(name: bdev.name, policy: policy.name)
        return [SavedConfig.Entry(method: BdevSetErrorPolicyParams.method, params: p.json)]
    }

    /// The error-policy methods: the policy is saved, resuming is not state.
    static let errorPolicyRPCMethods: [RPCMethod] = [
        .immediate(BdevSetErrorPolicyParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevSetErrorPolicy(p) },
        .immediate(BdevResumeIOParams.self, .bdev, mutatesConfig: false) { t, p throws(RPCError) in try t.bdevResumeIO(p) },
    ]
}
