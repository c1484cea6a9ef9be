import Glibc
import Posix
import VhostUserFrontend
import Virtio

/// One run: handshake, queue start, timed I/O on one thread per queue, teardown.
struct Benchmark {
    let config: BenchConfig

    func run() throws(BenchError) -> BenchReport {
        let size = try memorySize()
        let memory: FrontendMemory
        do {
            memory = try FrontendMemory(size: size)
        } catch {
            throw .frontend(error)
        }
        var options = VhostUserFrontend.Options()
        options.timeout = .seconds(5)
        if config.packed {
            options.wantedFeatures.insert(.ringPacked)
            // GET_INFLIGHT_FD comes before SET_FEATURES and sizes the split
            // layout; the daemon does not track packed queues there anyway.
            options.useInflight = false
        }
        let frontend: VhostUserFrontend
        do {
            frontend = try VhostUserFrontend(socketPath: config.socketPath, memory: memory, options: options)
        } catch {
            memory.close()
            throw .frontend(error)
        }
        defer {
            // Stop the rings before unmapping; on failure the back end sees the socket close.
            _ = try? frontend.stop()
            frontend.close()
            memory.close()
        }
        let capacity: UInt64
        do {
            try frontend.connect()
            guard frontend.config.count >= 8 else {
                throw BenchError.usage("the back end gave no config space (VHOST_USER_PROTOCOL_F_CONFIG), so no capacity")
            }
            capacity = frontend.config.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            guard UInt64(config.queues) <= frontend.maxQueues else {
                throw BenchError.usage("the back end offers \(frontend.maxQueues) queues, \(config.queues) asked")
            }
            if config.packed && !frontend.deviceFeatures.contains(.ringPacked) {
                throw BenchError.usage("the back end does not offer VIRTIO_F_RING_PACKED (vhost-blkd: create the controller with packed_ring)")
            }
            try frontend.start(queueCount: config.queues, queueSize: config.queueSize)
            guard frontend.ackedFeatures.contains(.ringPacked) == config.packed, frontend.queues.allSatisfy({ $0.packed == config.packed }) else {
                throw BenchError.usage("the queues did not start as \(config.packed ? "packed" : "split") rings")
            }
        } catch let error as BenchError {
            throw error
        } catch let error as FrontendError {
            throw .frontend(error)
        } catch {
            throw .thread("\(error)")
        }

        var workers: [any QueueRunner] = []
        for q in frontend.queues {
            if config.packed {
                workers.append(try QueueWorker<PackedBenchRing>(queue: q, memory: memory, config: config, capacitySectors: capacity))
            } else {
                workers.append(try QueueWorker<SplitBenchRing>(queue: q, memory: memory, config: config, capacitySectors: capacity))
            }
        }

        let begin = MonotonicClock.nanos() &+ 10_000_000
        let measureStart = begin &+ (config.fill ? 0 : config.warmupNanos)
        // A fill ends when its writes are done; a day is only a bound.
        let measureEnd = measureStart &+ (config.fill ? 86_400_000_000_000 : config.runtimeNanos)
        var threads: [pthread_t] = []
        for (i, w) in workers.enumerated() {
            do {
                threads.append(try PosixThread.start(
                    name: "bench-q\(i)", cpu: config.queueCPUs.isEmpty ? config.cpu : config.queueCPUs[i % config.queueCPUs.count]) {
                    w.run(measureStart: measureStart, measureEnd: measureEnd)
                })
            } catch {
                // Already started threads stop by themselves at measureEnd.
                threads.forEach(PosixThread.join)
                throw .thread("cannot start queue thread \(i): \(error)")
            }
        }
        MonotonicClock.sleep(until: measureStart)
        let serverBefore = config.serverPID.flatMap(ServerCPU.seconds(pid:))
        let clientBefore = ServerCPU.selfSeconds()
        if config.fill {
            threads.forEach(PosixThread.join)
        } else {
            MonotonicClock.sleep(until: measureEnd)
        }
        let serverAfter = config.serverPID.flatMap(ServerCPU.seconds(pid:))
        let clientAfter = ServerCPU.selfSeconds()
        let elapsed = MonotonicClock.nanos() &- measureStart
        if !config.fill { threads.forEach(PosixThread.join) }

        var serverCPU: Double?
        if let a = serverBefore, let b = serverAfter { serverCPU = b - a }
        return BenchReport(
            config: config, queueResults: workers.map(\.result), capacitySectors: capacity,
            eventIdx: frontend.ackedFeatures.contains(.eventIdx), serverCPUSeconds: serverCPU,
            clientCPUSeconds: clientAfter - clientBefore,
            // Completions count only inside [measureStart, measureEnd).
            measuredSeconds: Double(config.fill ? elapsed : config.runtimeNanos) / 1e9)
    }

    /// Rings, slots (header, 4 KiB-aligned data, status) and slack, rounded to 2 MiB.
    private func memorySize() throws(BenchError) -> Int {
        let perSlot = config.blockSize + 4096 + 256
        let perQueue = config.iodepth.multipliedReportingOverflow(by: perSlot)
        // Split: 16 B descriptors plus avail and used entries; packed needs less (16 B slots, two 4 B areas).
        let rings = 16 * Int(config.queueSize) + 6 * Int(config.queueSize) + 3 * 8192
        guard !perQueue.overflow else { throw .usage("iodepth x bs too large") }
        let all = (perQueue.partialValue + rings).multipliedReportingOverflow(by: config.queues)
        guard !all.overflow, all.partialValue <= 16 << 30 else { throw .usage("guest memory needed exceeds 16 GiB") }
        let total = all.partialValue + (4 << 20)
        return (total + (2 << 20) - 1) / (2 << 20) * (2 << 20)
    }
}
