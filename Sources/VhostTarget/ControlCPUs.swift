import Posix

/// Where the daemon's threads other than its reactors run: the control loop
/// (the main thread: RPC, vhost-user messages, accepts), the `vb-storage`
/// and `vb-config` threads it starts, thread-pool workers (`vb-pool-N`) and
/// io_uring's kernel workers (`iou-wrk-PID`). They stay off the reactors'
/// CPUs, so an RPC flood or a blocking call takes no reactor's time
/// (docs/OPERATIONS.md, "CPU mask sizing").
///
/// By default: every CPU the daemon may use (sched_getaffinity(2) at start)
/// but the reactors'; none left means not pinned. `--control-cpus` names
/// them instead, any within the allowed set.
public struct ControlCPUs: Sendable, Equatable {
    /// The CPUs, or nil: not pinned (they run on any allowed CPU).
    public let cpus: CPUSet?
    /// The CPUs the daemon may use, as it started.
    public let allowed: CPUSet
    /// Named by `--control-cpus`.
    public let explicit: Bool

    /// `requested` is `--control-cpus` (nil: the default), parsed as `-m` is.
    public static func resolve(requested: String?, reactors: CPUSet, allowed: CPUSet) throws(ControlCPUsError) -> ControlCPUs {
        guard let requested else {
            let rest = allowed.subtracting(reactors)
            return ControlCPUs(cpus: rest.isEmpty ? nil : rest, allowed: allowed, explicit: false)
        }
        guard let set = CPUSet(parsing: requested) else {
            throw ControlCPUsError("invalid --control-cpus '\(requested)': a hex mask such as 0x2 or a list such as [1,3-4]")
        }
        guard set.isSubset(of: allowed) else {
            throw ControlCPUsError(
                "--control-cpus \(set.list) includes CPUs this process may not use (allowed: \(allowed.list), \(allowed.hexMask))")
        }
        return ControlCPUs(cpus: set, allowed: allowed, explicit: true)
    }

    /// The CPUs these threads may run on, pinned or not.
    public var effective: CPUSet { cpus ?? allowed }

    /// The start-up log line.
    public func describe(reactors: CPUSet) -> String {
        guard let cpus else {
            return "control threads not pinned: the reactors use every CPU this process may run on (\(allowed.list))"
        }
        let shared = cpus.cpus.filter { reactors.cpus.contains($0) }
        let note = shared.isEmpty ? "" : "; they share CPU(s) \(CPUSet(shared).list) with reactors"
        return "control threads pinned to CPU(s) \(cpus.list) (\(explicit ? "--control-cpus" : "allowed \(allowed.list) less the reactors' \(reactors.list)")\(note))"
    }
}

/// A `--control-cpus` the daemon cannot use.
public struct ControlCPUsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
