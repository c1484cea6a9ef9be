import BlkDevice
import Glibc
import JSONRPC
import VhostBlkAPI

/// `vhost_controller_set_coalescing` (SPDK's name, parameters, checks and
/// errors: SPDK JSON-RPC, "vhost_controller_set_coalescing"; SPDK
/// lib/vhost/vhost.c, `vhost_dev_set_coalescing`) and how the settings reach
/// the queues: each running queue gets them on its reactor; queues started
/// later take the controller's.
extension VhostTarget {
    func vhostControllerSetCoalescing(_ p: VhostControllerSetCoalescingParams) throws(RPCError) -> JSON {
        guard let controller = controllers[p.ctrlr] else {
            throw .invalidParams("\(RPCError.errorText(ENODEV)): controller \(p.ctrlr)")
        }
        let settings: CoalescingSettings
        do {
            settings = try CoalescingSettings(delayBaseMicros: p.delayBaseUs, iopsThreshold: p.iopsThreshold)
        } catch {
            throw .invalidParams("\(RPCError.errorText(EINVAL)): \(Self.describe(error))")
        }
        controller.setCoalescing(settings)
        controller.logger.info("interrupt coalescing set", metadata: [
            "delay_base_us": "\(settings.delayBaseMicros)", "iops_threshold": "\(settings.iopsThreshold)",
        ])
        return .bool(true)
    }

    private static func describe(_ refusal: CoalescingSettings.Refusal) -> String {
        switch refusal {
        case .delayTooLarge(let us): "delay_base_us \(us) is too big (at most \(CoalescingSettings.maxDelayBaseMicros))"
        case .thresholdTooLow(let iops): "iops_threshold \(iops) is too low (at least \(CoalescingSettings.minIOPSThreshold))"
        }
    }

    /// The `vhost_controller_set_coalescing` call that restores `controller`'s
    /// settings, when they are not the defaults (`framework_get_config`, after
    /// the controller's create, as SPDK's save_config writes it).
    static func coalescingConfigEntries(_ controller: Controller) -> [SavedConfig.Entry] {
        let c = controller.coalescing
        guard c != .off else { return [] }
        let p = VhostControllerSetCoalescingParams(
            ctrlr: controller.name, delayBaseUs: c.delayBaseMicros, iopsThreshold: c.iopsThreshold)
        return [SavedConfig.Entry(method: VhostControllerSetCoalescingParams.method, params: p.json)]
    }
}

extension Controller {
    /// Keeps `settings` for queues started later and posts them to every
    /// running queue's reactor (no lock: each queue's state is its reactor's).
    func setCoalescing(_ settings: CoalescingSettings) {
        loop.preconditionInLoop()
        coalescing = settings
        for entry in runningServers {
            let server = entry.server
            server.reactor.post { server.setCoalescing(settings) }
        }
    }
}

extension VhostTarget {
    /// The coalescing method: saved with the controller (`coalescingConfigEntries`).
    static let coalescingRPCMethods: [RPCMethod] = [
        .immediate(VhostControllerSetCoalescingParams.self, .vhost, mutatesConfig: true) { t, p throws(RPCError) in
            try t.vhostControllerSetCoalescing(p)
        },
    ]
}
