import Glibc
import JSONRPC
import Posix
import Reactor

/// framework_get_reactors and thread_get_stats in SPDK's shapes (one SPDK
/// thread per reactor, named `reactor_N`, id N+1), and the per-queue detail
/// of vhost_get_controllers. Busy and idle are nanoseconds (`tick_rate` 1e9):
/// time handling completions vs. time waiting in the engine.
extension VhostTarget {
    /// Brings every reactor's busy/idle counters up to date: a reactor adds
    /// its wait to `idle` only when the wait ends, so an idle one would show
    /// nothing. Two round trips: the second message runs in the iteration
    /// after the one the first ended, whose accounting is then done.
    private func settleReactorTimes() {
        for reactor in reactors {
            for _ in 0..<2 { _ = reactor.postAndWait { true } }
        }
    }

    func frameworkGetReactors() -> JSON {
        settleReactorTimes()
        let snapshots = controllerOrder.compactMap { controllers[$0] }.map { ($0, $0.queueSnapshots()) }
        return [
            "tick_rate": .int(Self.tickRate),
            "pid": .int(Int64(getpid())),
            "control_cpumask": .string((configuration.controlCPUs?.effective ?? configuration.cpumask).hexMask),
            "control_pinned": .bool(configuration.controlCPUs?.cpus != nil),
            "reactors": .array(reactors.map { reactor in
                let busy = reactor.busyNanoseconds.load(ordering: .relaxed)
                let idle = reactor.idleNanoseconds.load(ordering: .relaxed)
                let served: [JSON] = snapshots.compactMap { controller, queues in
                    let here = queues.filter { $0.reactor == reactor.index }
                    guard controller.reactor === reactor || !here.isEmpty else { return nil }
                    return ["ctrlr": .string(controller.name), "queues": .array(here.map { .int(Int64($0.index)) })]
                }
                return [
                    "lcore": .int(Int64(reactor.cpu)),
                    "tid": .int(Int64(reactor.threadID.load(ordering: .relaxed))),
                    "busy": Self.int(busy),
                    "idle": Self.int(idle),
                    "in_interrupt": true,
                    "io_engine": .string(reactor.engineName),
                    "sqpoll": .bool(reactor.submissionPolling),
                    "irq_count": 0,
                    "lw_threads": [threadEntry(reactor, elapsed: busy &+ idle)],
                    "controllers": .array(served),
                    "loop": loopCounters(reactor.countersSnapshot()),
                ]
            }),
        ]
    }

    /// vhost-blkd's own addition to a reactor's entry: what its loop did
    /// since it started (docs/PERFORMANCE.md, "Why identical runs differ").
    private func loopCounters(_ c: ReactorCounters) -> JSON {
        [
            "sleeps": Self.int(c.sleeps),
            "poll_phases": Self.int(c.pollPhases), "poll_rounds": Self.int(c.pollRounds),
            "empty_poll_rounds": Self.int(c.emptyPollRounds),
            "poll_window_offs": Self.int(c.pollWindowOffs), "poll_window_grows": Self.int(c.pollWindowGrows),
            "poll_window_probes": Self.int(c.pollWindowProbes),
            "poll_window_ns": Self.int(c.pollWindowNanoseconds),
            "engine_submits": Self.int(c.engineSubmits), "engine_submitted": Self.int(c.engineSubmitted),
            "poll_ns": Self.int(c.pollNanoseconds),
        ]
    }

    func threadGetStats() -> JSON {
        settleReactorTimes()
        return [
            "tick_rate": .int(Self.tickRate),
            "threads": .array(reactors.map { reactor -> JSON in
                var entry = threadEntry(reactor, elapsed: nil).objectValue ?? JSONObject()
                entry["busy"] = Self.int(reactor.busyNanoseconds.load(ordering: .relaxed))
                entry["idle"] = Self.int(reactor.idleNanoseconds.load(ordering: .relaxed))
                entry["active_pollers_count"] = 0
                entry["timed_pollers_count"] = 0
                entry["paused_pollers_count"] = 0
                return .object(entry)
            }),
        ]
    }

    private func threadEntry(_ reactor: Reactor, elapsed: UInt64?) -> JSON {
        let mask = CPUSet([reactor.cpu])
        var entry: JSONObject = [
            "name": .string("reactor_\(reactor.index)"), "id": .int(Int64(reactor.index) + 1), "cpumask": .string(mask.hexMask),
        ]
        if let elapsed { entry["elapsed"] = Self.int(elapsed) }
        return .object(entry)
    }

    /// vhost_get_controllers' queue entries: size, reactor and the queue's counters.
    func queueDetail(_ controller: Controller) -> [JSON] {
        controller.queueSnapshots().map { queue in
            let s = queue.stats
            return [
                "index": .int(Int64(queue.index)), "size": .int(Int64(s.size)), "reactor": .int(Int64(queue.reactor)),
                "in_flight": .int(Int64(s.inFlight)), "requests": Self.int(s.requests), "kicks": Self.int(s.kicks),
                "interrupts_sent": Self.int(s.interruptsSent), "interrupts_suppressed": Self.int(s.interruptsSuppressed),
                "batches": Self.int(s.batches), "interrupts_delayed": Self.int(s.interruptsDelayed),
                "mean_batch_size": .double((s.meanBatchSize * 100).rounded() / 100),
            ]
        }
    }
}
