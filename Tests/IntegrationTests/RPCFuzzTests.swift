import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Testing
import VhostUserFrontend

/// Seeded, randomized *stateful* fuzzing of the JSON-RPC control plane
/// against the real daemon. Each round runs a random list of steps: valid and
/// invalid bdev calls (malloc, null, uring and aio on small files in
/// /dev/shm, missing files, directories, relative paths, odd sizes),
/// resizes, rescans, QoS limits, controllers (cpumasks, duplicates, missing
/// bdevs, read-only), attach/detach, forced and unforced deletes, queries,
/// and malformed params (wrong types, missing fields, unknown keys, negative
/// and huge numbers). Some calls are pipelined on one connection, some sent
/// on parallel connections; well-behaved frontends connect to controllers,
/// stay connected across steps and do verified I/O.
///
/// A model (`RPCFuzzModel`) predicts every answer. After every step:
/// - every request got exactly one response (a sentinel request sent after
///   it is the next one answered), a result or an error object with an
///   integer code and a string message, within 5 s; the code is the one the
///   model predicts, one documented for the method in
///   api/vhost-blkd.openrpc.json (its errors or its descriptions), and never
///   -32603;
/// - `bdev_get_bdevs` and `vhost_get_controllers` agree with the model
///   (order, names, num_blocks, block_size, claimed, QoS limits,
///   controller -> bdev, read-only, number of sessions);
/// - the daemon lives and answers `spdk_get_version` within 2 s.
/// After every round each connected frontend does a verified round trip
/// (or gets the IOERR the model predicts). Every fourth round saves
/// framework_get_config, restarts the daemon with `--config` on it, and
/// checks the listings are the same. At the end everything is deleted
/// through RPC, the daemon's fd count is back to its baseline, SIGTERM exits
/// 0 and the log has no crash text.
///
/// Replay: a failure names its seed, round and step list. Run
/// `VHOST_BLKD_FUZZ_SEED=<seed> VHOST_BLKD_FUZZ_ROUNDS=<n> swift test --skip-build --filter RPCFuzzTests`
/// (`VHOST_BLKD_FUZZ_VERBOSE=1` prints every step and answer).
@Suite("Stateful JSON-RPC control-plane fuzzing", .serialized)
struct RPCFuzzTests {
    /// Seeds run by default (CI); each starts its own daemon.
    static let defaultSeeds: [UInt64] = [1, 2, 3]
    static let defaultRounds = 6

    static var seeds: [UInt64] {
        if let text = ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_SEED"], let seed = UInt64(text) { return [seed] }
        return defaultSeeds
    }

    static var rounds: Int {
        if let text = ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_ROUNDS"], let n = Int(text), n > 0 { return n }
        return defaultRounds
    }

    static var verbose: Bool { ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_VERBOSE"] != nil }

    /// For every seed, a daemon (cpumask 0x3 for odd seeds, so "0x2" is a
    /// valid controller mask there; the thread-pool engine for seed 2) takes
    /// `rounds` rounds of random steps, checked as the suite's documentation
    /// says. Defects the fuzzer found are recorded as known issues.
    @Test(arguments: seeds)
    func randomControlPlaneSequencesMatchTheModel(seed: UInt64) throws {
        var arguments: [String] = []
        if seed % 3 == 2 { arguments += ["--engine", "thread-pool"] }
        let world = try RPCFuzzWorld(seed: seed, cpumask: seed % 2 == 1 ? "0x3" : "0x1", extraArguments: arguments)
        defer { world.tearDown() }
        try world.warmUp()
        let baselineFDs = HostileRPCTests.fdCount(world.daemon.pid)
        let baselineListing = Self.describeFDs(world.daemon.pid)
        var totalSteps = 0
        var stopped = false
        for round in 0..<Self.rounds where !stopped {
            var rng = SplitMix64(seed: seed &* 0x1_0000 &+ UInt64(round) &+ 0x5eed)
            var steps = RPCFuzzStep.sequence(using: &rng, cpumask: world.cpumask)
            if round % 4 == 3 { steps.append(.saveConfigAndRestart) }
            let replay = "seed \(seed) round \(round)\nsteps:\n"
                + steps.enumerated().map { "  \($0.offset): \($0.element)" }.joined(separator: "\n")
            if Self.verbose { print(replay) }
            for (i, step) in steps.enumerated() {
                totalSteps += 1
                let problems = world.run(step, index: i) + world.checkAfterStep()
                if Self.report(problems, context: "\(replay)\nat step \(i): \(step)", world: world) {
                    stopped = true
                    break
                }
            }
            if stopped { break }
            let roundProblems = world.frontendsDoVerifiedIO(round: round)
            if Self.report(roundProblems, context: "\(replay)\nafter the round", world: world) { stopped = true }
        }
        // Teardown through RPC: frontends, controllers (forced), bdevs.
        let cleanup = world.deleteEverything()
        _ = Self.report(cleanup, context: "seed \(seed): deleting everything", world: world)
        HostileRPCTests.expectFDsBack(to: baselineFDs, world.daemon)
        if HostileRPCTests.fdCount(world.daemon.pid) > baselineFDs {
            print("seed \(seed): daemon fds at the end:\n\(Self.describeFDs(world.daemon.pid))\nat the start:\n\(baselineListing)")
        }
        let status = world.daemon.stop()
        #expect(status == 0, "seed \(seed): SIGTERM exit status \(status)\n\(world.daemon.log.suffix(3000))")
        let log = world.daemon.log
        for marker in ["Fatal error", "Segmentation fault", "Illegal instruction", "Stack dump", "crash"] {
            #expect(!log.localizedCaseInsensitiveContains(marker), "seed \(seed): log mentions '\(marker)'")
        }
        print("rpc fuzz seed \(seed): \(Self.rounds) rounds, \(totalSteps) steps, \(world.requests) requests, \(world.ioChecks) verified I/O checks, \(world.restarts) restarts")
    }

    /// A defect the fuzzer found, minimized: a guest started on a 4096-byte
    /// bdev; after `vhost_blk_detach`, attaching another 4096-byte bdev is
    /// accepted and a 512-byte one refused (-32602), as documented ("the
    /// bdev's block size differs from what a connected guest uses"). The
    /// daemon used to compare with the detached controller's 512.
    @Test func attachAfterDetachKeepsTheGuestBlockSize() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["name": "Big0", "num_blocks": 512, "block_size": 4096])
        try daemon.call("bdev_malloc_create", ["name": "Big1", "num_blocks": 512, "block_size": 4096])
        try daemon.call("bdev_malloc_create", ["name": "Small", "num_blocks": 4096, "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "Big0"])
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        try daemon.call("vhost_blk_detach", ["ctrlr": "vhost.0"])
        expectRPCError(-32602) { try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "Small"]) }
        do {
            try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "Big1"])
        } catch {
            Issue.record("attaching a 4096-byte bdev for a guest that uses 4096: \(error)")
        }
        #expect(try DataPathTests.roundTrip(f, queue: 0, sector: 8, seed: 4), "I/O on the attached bdev")
        #expect(daemon.stop() == 0)
    }

    /// The daemon's open descriptors and what they point to (a leak's diagnosis).
    static func describeFDs(_ pid: Int32) -> String {
        let dir = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { name in
            "  \(name) -> \((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\(name)")) ?? "?")"
        }.joined(separator: "\n")
    }

    /// Records `problems`; returns true when there were any (the seed
    /// stops: later steps would only report their consequences).
    static func report(_ problems: [RPCFuzzProblem], context: String, world: RPCFuzzWorld) -> Bool {
        for problem in problems {
            Issue.record(Comment(rawValue: "\(context)\n\(problem.text)\nlog tail:\n\(world.daemon.log.suffix(2500))"))
        }
        return !problems.isEmpty
    }
}

/// Something the daemon did that the model did not predict.
struct RPCFuzzProblem {
    var text: String
}

// MARK: - Steps

/// A bdev driver (the method prefix).
enum RPCFuzzDriver: String, CaseIterable, Sendable {
    case malloc, null, uring, aio
}

/// Where a file bdev's `filename` points.
enum RPCFuzzPath: Equatable, Sendable, CustomStringConvertible {
    case file(Int), missing, directory, relative, odd, empty, charDevice

    var description: String {
        switch self {
        case .file(let i): "F\(i)"
        case .missing: "missing"
        case .directory: "directory"
        case .relative: "relative"
        case .odd: "odd-size file"
        case .empty: "empty file"
        case .charDevice: "/dev/null"
        }
    }
}

/// One JSON-RPC call, structured so the model can predict its answer.
enum RPCFuzzOp: Sendable, CustomStringConvertible {
    case mallocCreate(name: String?, blocks: UInt64, blockSize: UInt64)
    case nullCreate(name: String, blocks: UInt64, blockSize: UInt64)
    case fileCreate(RPCFuzzDriver, name: String, path: RPCFuzzPath, blockSize: UInt64?, readOnly: Bool)
    case delete(RPCFuzzDriver, name: String)
    case rescan(RPCFuzzDriver, name: String)
    case nullResize(name: String, mib: UInt64)
    case resize(name: String, mib: UInt64, allowShrink: Bool?)
    case qos(name: String, ios: UInt64?, rw: UInt64?, r: UInt64?, w: UInt64?)
    case createController(name: String, bdev: String?, cpumask: String?, readOnly: Bool?)
    case deleteController(name: String, force: Bool?)
    case attach(ctrlr: String, bdev: String)
    case detach(ctrlr: String)
    case getBdevs(name: String?, timeout: UInt64?)
    case getControllers(name: String?)
    case iostat(name: String?, perChannel: Bool, reset: String?)
    case resetIostat(name: String?)
    case getConfig(String)
    case getMethods
    case version
    /// Params (raw JSON text, nil: none) that no daemon state makes valid.
    case malformed(method: String, params: String?, codes: [Int])

    var method: String {
        switch self {
        case .mallocCreate: "bdev_malloc_create"
        case .nullCreate: "bdev_null_create"
        case .fileCreate(let d, _, _, _, _): "bdev_\(d.rawValue)_create"
        case .delete(let d, _): "bdev_\(d.rawValue)_delete"
        case .rescan(let d, _): "bdev_\(d.rawValue)_rescan"
        case .nullResize: "bdev_null_resize"
        case .resize: "bdev_resize"
        case .qos: "bdev_set_qos_limit"
        case .createController: "vhost_create_blk_controller"
        case .deleteController: "vhost_delete_controller"
        case .attach: "vhost_blk_attach"
        case .detach: "vhost_blk_detach"
        case .getBdevs: "bdev_get_bdevs"
        case .getControllers: "vhost_get_controllers"
        case .iostat: "bdev_get_iostat"
        case .resetIostat: "bdev_reset_iostat"
        case .getConfig: "framework_get_config"
        case .getMethods: "rpc_get_methods"
        case .version: "spdk_get_version"
        case .malformed(let m, _, _): m
        }
    }

    /// Answered later by the daemon (storage calls, drains): only last in a pipelined batch.
    var isDeferred: Bool {
        switch self {
        case .fileCreate, .rescan, .resize, .deleteController, .detach: true
        default: false
        }
    }

    /// Changes nothing: safe next to a mutation on parallel connections.
    var isQuery: Bool {
        switch self {
        case .getBdevs(nil, _), .getControllers(nil), .iostat(nil, false, nil), .getConfig, .getMethods, .version, .malformed: true
        default: false
        }
    }

    /// The params as JSON text; nil sends none.
    func paramsText(files: RPCFuzzFiles) -> String? {
        var o: [(String, JSON)] = []
        func int(_ v: UInt64) -> JSON { .int(Int64(clamping: v)) }
        switch self {
        case .mallocCreate(let name, let blocks, let bs):
            o = [("num_blocks", int(blocks)), ("block_size", int(bs))]
            if let name { o.append(("name", .string(name))) }
        case .nullCreate(let name, let blocks, let bs):
            o = [("name", .string(name)), ("num_blocks", int(blocks)), ("block_size", int(bs))]
        case .fileCreate(let driver, let name, let path, let bs, let ro):
            o = [("name", .string(name)), ("filename", .string(files.path(path)))]
            if let bs { o.append(("block_size", int(bs))) }
            if driver == .aio && ro { o.append(("readonly", true)) }
        case .delete(_, let name), .rescan(_, let name):
            o = [("name", .string(name))]
        case .nullResize(let name, let mib):
            o = [("name", .string(name)), ("new_size", int(mib))]
        case .resize(let name, let mib, let allow):
            o = [("name", .string(name)), ("new_size_mib", int(mib))]
            if let allow { o.append(("allow_shrink", .bool(allow))) }
        case .qos(let name, let ios, let rw, let r, let w):
            o = [("name", .string(name))]
            if let ios { o.append(("rw_ios_per_sec", int(ios))) }
            if let rw { o.append(("rw_mbytes_per_sec", int(rw))) }
            if let r { o.append(("r_mbytes_per_sec", int(r))) }
            if let w { o.append(("w_mbytes_per_sec", int(w))) }
        case .createController(let name, let bdev, let mask, let ro):
            o = [("ctrlr", .string(name))]
            if let bdev { o.append(("dev_name", .string(bdev))) }
            if let mask { o.append(("cpumask", .string(mask))) }
            if let ro { o.append(("readonly", .bool(ro))) }
        case .deleteController(let name, let force):
            o = [("ctrlr", .string(name))]
            if let force { o.append(("force", .bool(force))) }
        case .attach(let c, let b):
            o = [("ctrlr", .string(c)), ("dev_name", .string(b))]
        case .detach(let c):
            o = [("ctrlr", .string(c))]
        case .getBdevs(let name, let timeout):
            if let name { o.append(("name", .string(name))) }
            if let timeout { o.append(("timeout", int(timeout))) }
        case .getControllers(let name):
            if let name { o.append(("name", .string(name))) }
        case .iostat(let name, let perChannel, let reset):
            if let name { o.append(("name", .string(name))) }
            if perChannel { o.append(("per_channel", true)) }
            if let reset { o.append(("reset_mode", .string(reset))) }
        case .resetIostat(let name):
            if let name { o.append(("name", .string(name))) }
        case .getConfig(let name):
            o = [("name", .string(name))]
        case .getMethods, .version:
            return nil
        case .malformed(_, let text, _):
            return text
        }
        return o.isEmpty ? nil : JSON.object(JSONObject(o)).encoded()
    }

    var description: String {
        switch self {
        case .malformed(let m, let p, _): "\(m) \(p ?? "(no params)") [malformed]"
        case .fileCreate(let d, let n, let p, let bs, let ro): "bdev_\(d.rawValue)_create \(n) \(p) bs \(bs.map(String.init) ?? "-")\(ro ? " ro" : "")"
        default: "\(method) \(paramsText(files: RPCFuzzFiles.placeholder) ?? "")"
        }
    }
}

/// One step of a round.
enum RPCFuzzStep: CustomStringConvertible {
    case rpc(RPCFuzzOp)
    /// Sent in one write on one connection; answers read afterwards.
    case pipelined([RPCFuzzOp])
    /// Each on its own connection, at once (one mutation at most, the rest queries).
    case parallel([RPCFuzzOp])
    /// A uring create pipelined with `bdev_get_bdevs {name, timeout}` for it.
    case createThenWaitForIt(name: String, file: Int)
    /// A well-behaved frontend connects to an existing controller without
    /// one (the `pick`th, modulo their number) and starts a queue.
    case connect(pick: Int)
    /// A frontend tries a controller that may not exist: refused when it does not.
    case connectNamed(String)
    /// The `pick`th connected frontend does a verified round trip.
    case io(pick: Int)
    /// The `pick`th connected frontend closes.
    case disconnect(pick: Int)
    /// The test truncates file `i` (the daemon learns of it on a rescan).
    case truncate(Int, mib: UInt64)
    /// framework_get_config saved, SIGTERM, a daemon started with `--config` on it.
    case saveConfigAndRestart

    var description: String {
        switch self {
        case .rpc(let op): "\(op)"
        case .pipelined(let ops): "pipelined [\(ops.map(\.description).joined(separator: "; "))]"
        case .parallel(let ops): "parallel [\(ops.map(\.description).joined(separator: "; "))]"
        case .createThenWaitForIt(let n, let f): "pipelined [bdev_uring_create \(n) F\(f); bdev_get_bdevs {name \(n), timeout 2000}]"
        case .connect(let i): "frontend connects to free controller #\(i)"
        case .connectNamed(let c): "frontend connects to \(c)"
        case .io(let i): "frontend #\(i): verified I/O"
        case .disconnect(let i): "frontend #\(i) closes"
        case .truncate(let i, let mib): "truncate F\(i) to \(mib) MiB"
        case .saveConfigAndRestart: "save framework_get_config, restart with --config"
        }
    }

    static let bdevNames = ["M0", "M1", "N0", "N1", "U0", "U1", "A0", "A1"]
    static let controllerNames = ["vhost.0", "vhost.1", "vhost.2"]

    static func pick<T>(_ items: [T], _ rng: inout SplitMix64) -> T { items[rng.below(items.count)] }

    /// A bdev name: mostly one of the driver's own, sometimes any (or one never used).
    static func bdevName(_ prefix: String?, _ rng: inout SplitMix64) -> String {
        if let prefix, rng.chance(80) { return "\(prefix)\(rng.below(2))" }
        return rng.chance(95) ? pick(bdevNames, &rng) : pick(["Nope", "", "a/b"], &rng)
    }

    static func controllerName(_ rng: inout SplitMix64) -> String {
        rng.chance(95) ? pick(controllerNames, &rng) : pick(["vhost.9", "", "..", "x/y"], &rng)
    }

    static func blockSize(_ rng: inout SplitMix64) -> UInt64 {
        rng.chance(85) ? pick([512, 512, 4096], &rng) : pick([0, 1000, 131_072, 256], &rng)
    }

    /// A round: setup-heavy at first, then 12 to 30 random steps.
    static func sequence(using rng: inout SplitMix64, cpumask: String) -> [RPCFuzzStep] {
        var steps: [RPCFuzzStep] = []
        let count = 12 + rng.below(19)
        for _ in 0..<count {
            switch rng.weighted([55, 6, 5, 2, 8, 8, 3, 2]) {
            case 0: steps.append(.rpc(randomOp(&rng, cpumask: cpumask)))
            case 1:
                var ops: [RPCFuzzOp] = []
                for _ in 0..<(2 + rng.below(4)) {
                    let op = randomOp(&rng, cpumask: cpumask)
                    if !op.isDeferred { ops.append(op) }
                }
                let last = randomOp(&rng, cpumask: cpumask)
                if last.isDeferred { ops.append(last) }
                steps.append(.pipelined(ops))
            case 2:
                var ops: [RPCFuzzOp] = []
                for _ in 0..<(2 + rng.below(5)) {
                    ops.append(rng.chance(50) ? randomQuery(&rng) : randomMalformed(&rng))
                }
                ops.insert(randomOp(&rng, cpumask: cpumask), at: rng.below(ops.count + 1))
                steps.append(.parallel(ops))
            case 3: steps.append(.createThenWaitForIt(name: "U\(rng.below(2))", file: rng.below(RPCFuzzFiles.count)))
            case 4: steps.append(rng.chance(85) ? .connect(pick: rng.below(8)) : .connectNamed(controllerName(&rng)))
            case 5: steps.append(.io(pick: rng.below(8)))
            case 6: steps.append(.disconnect(pick: rng.below(8)))
            default: steps.append(.truncate(rng.below(RPCFuzzFiles.count), mib: UInt64(1 + rng.below(6))))
            }
        }
        return steps
    }

    static func randomQuery(_ rng: inout SplitMix64) -> RPCFuzzOp {
        switch rng.below(6) {
        case 0: .getBdevs(name: nil, timeout: nil)
        case 1: .getControllers(name: nil)
        case 2: .iostat(name: nil, perChannel: false, reset: nil)
        case 3: .getConfig(pick(["bdev", "vhost_blk"], &rng))
        case 4: .getMethods
        default: .version
        }
    }

    static func randomOp(_ rng: inout SplitMix64, cpumask: String) -> RPCFuzzOp {
        let weights = [
            8, 6, 8, 8, 4, 4, 3, 7, 4,  // malloc, null, uring, aio create; deletes (malloc/null, file); rescan, resize, null resize
            4, 10, 6, 7, 6,  // qos, create controller, delete controller, attach, detach
            3, 3, 3, 2, 2, 1, 1,  // get bdevs, get controllers, iostat, reset iostat, get config, methods, version
            10,  // malformed
        ]
        switch rng.weighted(weights) {
        case 0:
            let blocks: UInt64 = rng.chance(92) ? UInt64(256 << rng.below(5)) : pick([0, 1 << 45], &rng)
            return .mallocCreate(name: rng.chance(90) ? bdevName("M", &rng) : nil, blocks: blocks, blockSize: blockSize(&rng))
        case 1:
            let blocks: UInt64 = rng.chance(92) ? UInt64(8 << rng.below(12)) : pick([0, 1 << 45], &rng)
            return .nullCreate(name: bdevName("N", &rng), blocks: blocks, blockSize: blockSize(&rng))
        case 2, 3:
            let driver: RPCFuzzDriver = rng.chance(50) ? .uring : .aio
            let name = bdevName(driver == .uring ? "U" : "A", &rng)
            let roll = rng.below(100)
            // Mostly the name's own file (U0: F0, U1: F1, A0: F2, A1: F3), sometimes another one.
            let own = (driver == .uring ? 0 : 2) + (name.last == "1" ? 1 : 0)
            let path: RPCFuzzPath = roll < 70 ? .file(own) : roll < 80 ? .file(rng.below(RPCFuzzFiles.count))
                : pick([.missing, .directory, .relative, .odd, .empty, .charDevice], &rng)
            let bs: UInt64? = rng.chance(30) ? nil : blockSize(&rng)
            return .fileCreate(driver, name: name, path: path, blockSize: bs, readOnly: driver == .aio && rng.chance(25))
        case 4:
            let driver: RPCFuzzDriver = rng.chance(50) ? .malloc : .null
            return .delete(driver, name: bdevName(driver == .malloc ? "M" : "N", &rng))
        case 5:
            let driver: RPCFuzzDriver = rng.chance(50) ? .uring : .aio
            return .delete(driver, name: bdevName(driver == .uring ? "U" : "A", &rng))
        case 6:
            let driver: RPCFuzzDriver = rng.chance(50) ? .uring : .aio
            return .rescan(driver, name: bdevName(driver == .uring ? "U" : "A", &rng))
        case 7:
            let mib: UInt64 = rng.chance(92) ? UInt64(1 + rng.below(8)) : pick([0, 1 << 31], &rng)
            return .resize(name: bdevName(nil, &rng), mib: mib, allowShrink: rng.chance(30) ? nil : rng.chance(50))
        case 8:
            let mib: UInt64 = rng.chance(92) ? UInt64(1 + rng.below(8)) : pick([0, 1 << 31], &rng)
            return .nullResize(name: bdevName("N", &rng), mib: mib)
        case 9:
            func ios() -> UInt64? { rng.chance(50) ? nil : pick([0, 1000, 5000, 1500], &rng) }
            func mb() -> UInt64? { rng.chance(60) ? nil : pick([0, 1, 10, 1 << 50], &rng) }
            return .qos(name: bdevName(nil, &rng), ios: ios(), rw: mb(), r: mb(), w: mb())
        case 10:
            let masks = cpumask == "0x3" ? ["0x1", "0x2", "0x3", "0x4", "zz", ""] : ["0x1", "0x2", "zz", "", "0x1"]
            return .createController(
                name: controllerName(&rng), bdev: rng.chance(85) ? bdevName(nil, &rng) : nil,
                cpumask: rng.chance(40) ? pick(masks, &rng) : nil, readOnly: rng.chance(50) ? nil : rng.chance(30))
        case 11:
            return .deleteController(name: controllerName(&rng), force: rng.chance(30) ? nil : rng.chance(50))
        case 12: return .attach(ctrlr: controllerName(&rng), bdev: bdevName(nil, &rng))
        case 13: return .detach(ctrlr: controllerName(&rng))
        case 14: return .getBdevs(name: rng.chance(50) ? nil : bdevName(nil, &rng), timeout: nil)
        case 15: return .getControllers(name: rng.chance(50) ? nil : controllerName(&rng))
        case 16:
            return .iostat(name: rng.chance(50) ? nil : bdevName(nil, &rng), perChannel: rng.chance(40),
                           reset: rng.chance(60) ? nil : pick(["all", "maxmin", "error", "none"], &rng))
        case 17: return .resetIostat(name: rng.chance(50) ? nil : bdevName(nil, &rng))
        case 18: return .getConfig(pick(["bdev", "vhost_blk", "nvmf", ""], &rng))
        case 19: return .getMethods
        case 20: return .version
        default: return randomMalformed(&rng)
        }
    }

    /// Params no state makes valid, with the codes allowed for them.
    static let malformedCases: [(String, String?, [Int])] = [
        ("bdev_malloc_create", #"{"num_blocks":"8","block_size":512}"#, [-32602]),
        ("bdev_malloc_create", #"{"block_size":512}"#, [-32602]),
        ("bdev_malloc_create", #"{"num_blocks":-8,"block_size":512}"#, [-32602]),
        ("bdev_malloc_create", #"{"num_blocks":8,"block_size":512,"bogus":1}"#, [-32602]),
        ("bdev_malloc_create", #"{"num_blocks":9223372036854775807,"block_size":512,"name":"Huge"}"#, [-22]),
        ("bdev_malloc_create", #"{"num_blocks":8,"block_size":4294967296}"#, [-32602]),
        ("bdev_malloc_create", #"{"num_blocks":1.5,"block_size":512}"#, [-32602]),
        ("bdev_malloc_create", #"[2048,512]"#, [-32602]),
        ("bdev_malloc_create", #"{"num_blocks":8,"block_size":512,"name":"Md","md_size":8}"#, [-32602, -22]),
        ("bdev_malloc_delete", #"{"name":null}"#, [-32602]),
        ("bdev_null_create", #"{"name":"Nx","num_blocks":8,"block_size":512,"dif_type":1}"#, [-32602, -22]),
        ("bdev_null_create", #"{"name":"Nx","num_blocks":8}"#, [-32602]),
        ("bdev_null_resize", #"{"name":"N0","new_size":-1}"#, [-32602]),
        ("bdev_resize", #"{"name":"M0","new_size_mib":-1}"#, [-32602]),
        ("bdev_resize", #"{"name":"M0","new_size_mib":"2"}"#, [-32602]),
        ("bdev_resize", #"{"name":"M0","new_size_mib":9223372036854775807}"#, [-22, -19]),
        ("bdev_resize", #"{"name":"M0","new_size_mib":2,"allow_shrink":"yes"}"#, [-32602]),
        ("bdev_set_qos_limit", #"{"name":"M0"}"#, [-32602, -19]),
        ("bdev_set_qos_limit", #"{"name":"M0","rw_ios_per_sec":-1000}"#, [-32602]),
        ("bdev_set_qos_limit", #"{"name":"M0","rw_mbytes_per_sec":9223372036854775807}"#, [-22, -19]),
        ("vhost_create_blk_controller", #"{"ctrlr":"vhost.9","cpumask":"zz"}"#, [-32602]),
        ("vhost_create_blk_controller", #"{"ctrlr":"vhost.9","transport":"nvme"}"#, [-32602]),
        ("vhost_create_blk_controller", #"{"ctrlr":"vhost.9","socket_mode":"0999"}"#, [-32602]),
        ("vhost_create_blk_controller", #"{"ctrlr":"vhost.9","socket_mode":4096}"#, [-32602]),
        ("vhost_create_blk_controller", #"{"ctrlr":"vhost.9","socket_group":"no-such-group-xyz"}"#, [-32602]),
        ("vhost_create_blk_controller", #"{"dev_name":"M0"}"#, [-32602]),
        ("vhost_create_blk_controller", #"{"ctrlr":["vhost.9"]}"#, [-32602]),
        ("vhost_delete_controller", #"{"ctrlr":"vhost.0","force":1}"#, [-32602]),
        ("vhost_blk_attach", #"{"ctrlr":"vhost.0"}"#, [-32602]),
        ("vhost_blk_detach", #"{"ctrlr":5}"#, [-32602]),
        ("bdev_get_bdevs", #"{"name":"M0","bogus":true}"#, [-32602]),
        ("bdev_get_bdevs", #"{"offset":-1}"#, [-32602]),
        ("bdev_get_iostat", #"{"reset_mode":"sometimes"}"#, [-32602]),
        ("bdev_get_iostat", #"{"per_channel":true}"#, [-32602]),
        ("bdev_get_iostat", #"{"names":"M0"}"#, [-32602]),
        ("bdev_uring_create", #"{"filename":"/dev/shm","name":7}"#, [-32602]),
        ("bdev_uring_create", #"{"filename":"/dev/shm/x.img"}"#, [-32602]),
        ("bdev_aio_create", #"{"filename":"/dev/shm/x.img","name":"Ax","readonly":"true"}"#, [-32602]),
        ("bdev_uring_rescan", #"{"name":["U0"]}"#, [-32602]),
        ("framework_get_config", #"{}"#, [-32602]),
        ("framework_get_config", #"{"name":"bdev","with_batches":"no"}"#, [-32602]),
        ("rpc_get_methods", #"{"current":"yes"}"#, [-32602]),
        ("spdk_get_version", #"{"x":1}"#, [-32602]),
        ("no_such_method", nil, [-32601]),
    ]

    static func randomMalformed(_ rng: inout SplitMix64) -> RPCFuzzOp {
        let (method, params, codes) = malformedCases[rng.below(malformedCases.count)]
        return .malformed(method: method, params: params, codes: codes)
    }
}

// MARK: - Files

/// The backing files of a seed, under /dev/shm: F0...F3 (1 to 4 MiB), an odd-sized and an empty one.
struct RPCFuzzFiles: Sendable {
    static let count = 4
    let prefix: String

    static let placeholder = RPCFuzzFiles(prefix: "/dev/shm/vbd-rpcfuzz")

    func path(_ p: RPCFuzzPath) -> String {
        switch p {
        case .file(let i): "\(prefix)-F\(i).img"
        case .missing: "\(prefix)-missing.img"
        case .directory: "/dev/shm"
        case .relative: "vbd-rpcfuzz-relative.img"
        case .odd: "\(prefix)-odd.img"
        case .empty: "\(prefix)-empty.img"
        case .charDevice: "/dev/null"
        }
    }

    func create(sizes: [UInt64]) throws {
        for (i, size) in sizes.enumerated() { try truncate(i, to: size, create: true) }
        try truncatePath(path(.odd), to: 1000, create: true)
        try truncatePath(path(.empty), to: 0, create: true)
    }

    func truncate(_ i: Int, to size: UInt64, create: Bool = false) throws {
        try truncatePath(path(.file(i)), to: size, create: create)
    }

    private func truncatePath(_ path: String, to size: UInt64, create: Bool) throws {
        if create { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard Glibc.truncate(path, off_t(size)) == 0 else { throw POSIXError(.EIO) }
    }

    func remove() {
        for p in (0..<Self.count).map(RPCFuzzPath.file) + [.odd, .empty] { try? FileManager.default.removeItem(atPath: path(p)) }
    }
}

// MARK: - The model

/// What should exist in the daemon.
struct RPCFuzzModel {
    struct Bdev: Equatable {
        var name: String
        var driver: RPCFuzzDriver
        var blockSize: UInt64
        var numBlocks: UInt64
        var file: Int?
        var readOnly = false
        /// rw_ios_per_sec, rw/r/w MiB per second.
        var qos: [UInt64] = [0, 0, 0, 0]
        var bytes: UInt64 { numBlocks * blockSize }
    }

    struct Controller: Equatable {
        var name: String
        var bdev: String?
        var readOnly: Bool
        /// The block size of the last bdev attached (512 before any, and
        /// after a restart without one): what a guest that connects reads.
        var lastBlockSize: UInt64 = 512
    }

    /// `controller`'s block size for a guest connecting now.
    func guestBlockSize(_ controller: Controller) -> UInt64 {
        controller.bdev.flatMap { bdev($0)?.blockSize } ?? controller.lastBlockSize
    }

    var bdevs: [Bdev] = []
    var controllers: [Controller] = []
    var fileSizes: [UInt64] = []
    /// Controllers with our frontend connected, and the block size its guest uses.
    var guests: [String: UInt64] = [:]

    func bdev(_ name: String) -> Bdev? { bdevs.first { $0.name == name } }
    func controller(_ name: String) -> Controller? { controllers.first { $0.name == name } }
    func owner(of bdev: String) -> Controller? { controllers.first { $0.bdev == bdev } }

    mutating func updateBdev(_ name: String, _ change: (inout Bdev) -> Void) {
        if let i = bdevs.firstIndex(where: { $0.name == name }) { change(&bdevs[i]) }
    }

    mutating func updateController(_ name: String, _ change: (inout Controller) -> Void) {
        if let i = controllers.firstIndex(where: { $0.name == name }) { change(&controllers[i]) }
    }

    /// After a known daemon defect, takes the daemon's listings as the truth
    /// (sizes, claims and mappings; drivers and files are kept when known).
    mutating func resync(from world: RPCFuzzWorld) {
        guard let client = try? RPCClient(path: world.daemon.rpcSocket, timeout: .seconds(5)),
              let bdevList = try? client.call("bdev_get_bdevs").arrayValue,
              let ctrlList = try? client.call("vhost_get_controllers").arrayValue else { return }
        var newBdevs: [Bdev] = []
        for entry in bdevList {
            guard let name = entry["name"]?.stringValue else { continue }
            var b = bdev(name) ?? Bdev(name: name, driver: .malloc, blockSize: 512, numBlocks: 0)
            b.numBlocks = UInt64(entry["num_blocks"]?.intValue ?? 0)
            b.blockSize = UInt64(entry["block_size"]?.intValue ?? 512)
            let limits = entry["assigned_rate_limits"]
            b.qos = ["rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec"].map {
                UInt64(limits?[$0]?.intValue ?? 0)
            }
            b.readOnly = entry["supported_io_types"]?["write"] == false
            newBdevs.append(b)
        }
        bdevs = newBdevs
        let before = controllers
        controllers = ctrlList.compactMap { entry in
            guard let name = entry["ctrlr"]?.stringValue else { return nil }
            let block = entry["backend_specific"]?["block"]
            var c = Controller(name: name, bdev: block?["bdev"]?.stringValue, readOnly: block?["readonly"]?.boolValue ?? false)
            c.lastBlockSize = c.bdev.flatMap { bdev($0)?.blockSize } ?? before.first { $0.name == name }?.lastBlockSize ?? 512
            return c
        }
    }

    static func validBdevName(_ n: String) -> Bool { !n.isEmpty && n.utf8.count <= 255 && !n.contains("/") }
    static func validControllerName(_ n: String) -> Bool { !n.isEmpty && !n.contains("/") && n != "." && n != ".." }
    static func validBlockSize(_ bs: UInt64) -> Bool { bs >= 512 && bs <= 65536 && bs & (bs - 1) == 0 }

    static func sizeError(_ blocks: UInt64, _ bs: UInt64) -> Int? {
        guard validBlockSize(bs), blocks > 0 else { return -22 }
        let (size, overflow) = blocks.multipliedReportingOverflow(by: bs)
        return overflow || size > 1 << 50 ? -22 : nil
    }

    /// What a call should answer: an error code, or success and how the model changes.
    enum Expect {
        case error(Set<Int>)
        case success((inout RPCFuzzModel) -> Void)
        /// A success whose result is compared with the model (queries).
        case query
    }

    /// The answer the daemon owes `op` in this state. `frontendBlockSizeRule`
    /// is the documented one: a connected guest keeps the block size it started with.
    func expect(_ op: RPCFuzzOp, cpumask: String) -> Expect {
        switch op {
        case .mallocCreate(let name, let blocks, let bs):
            var n = name ?? ""
            if name == nil {
                var i = 0
                while bdev("Malloc\(i)") != nil { i += 1 }
                n = "Malloc\(i)"
            }
            guard Self.validBdevName(n) else { return .error([-22]) }
            if bdev(n) != nil { return .error([-17]) }
            if let e = Self.sizeError(blocks, bs) { return .error([e]) }
            return .success { $0.bdevs.append(Bdev(name: n, driver: .malloc, blockSize: bs, numBlocks: blocks)) }
        case .nullCreate(let n, let blocks, let bs):
            guard Self.validBdevName(n) else { return .error([-22]) }
            if bdev(n) != nil { return .error([-17]) }
            if let e = Self.sizeError(blocks, bs) { return .error([e]) }
            return .success { $0.bdevs.append(Bdev(name: n, driver: .null, blockSize: bs, numBlocks: blocks)) }
        case .fileCreate(let driver, let n, let path, let bsGiven, let ro):
            guard Self.validBdevName(n) else { return .error([-22]) }
            if bdev(n) != nil { return .error([-17]) }
            switch path {
            case .relative: return .error([-22])
            case .missing: return .error([-2])
            case .directory: return .error([-21])
            default: break
            }
            let bs = bsGiven ?? 512
            guard Self.validBlockSize(bs) else { return .error([-22]) }
            guard case .file(let i) = path else { return .error([-22]) }  // char device, empty, odd size
            let size = fileSizes[i]
            guard size > 0, size % bs == 0 else { return .error([-22]) }
            return .success {
                $0.bdevs.append(Bdev(name: n, driver: driver, blockSize: bs, numBlocks: size / bs, file: i, readOnly: driver == .aio && ro))
            }
        case .delete(let driver, let n):
            guard let b = bdev(n), b.driver == driver else { return .error([-19]) }
            if owner(of: n) != nil { return .error([-16]) }
            return .success { $0.bdevs.removeAll { $0.name == n } }
        case .rescan(let driver, let n):
            guard let b = bdev(n), b.driver == driver, let file = b.file else { return .error([-19]) }
            let size = fileSizes[file]
            return .success { m in m.updateBdev(n) { $0.numBlocks = size / $0.blockSize } }
        case .nullResize(let n, let mib):
            guard let b = bdev(n), b.driver == .null else { return .error([-19]) }
            let (bytes, overflow) = mib.multipliedReportingOverflow(by: 1 << 20)
            guard mib > 0, !overflow, bytes <= 1 << 50 else { return .error([-22]) }
            let blocks = bytes / b.blockSize
            guard blocks >= b.numBlocks else { return .error([-22]) }
            return .success { m in m.updateBdev(n) { $0.numBlocks = blocks } }
        case .resize(let n, let mib, let allow):
            guard let b = bdev(n) else { return .error([-19]) }
            let (bytes, overflow) = mib.multipliedReportingOverflow(by: 1 << 20)
            guard mib > 0, !overflow, bytes <= 1 << 50 else { return .error([-22]) }
            if b.readOnly { return .error([-30]) }
            let blocks = bytes / b.blockSize
            if blocks < b.numBlocks, owner(of: n) != nil, allow != true { return .error([-16]) }
            return .success { m in
                m.updateBdev(n) { $0.numBlocks = blocks }
                if let f = b.file { m.fileSizes[f] = blocks * b.blockSize }
            }
        case .qos(let n, let ios, let rw, let r, let w):
            guard bdev(n) != nil else { return .error([-19]) }
            if ios == nil && rw == nil && r == nil && w == nil { return .error([-32602]) }
            if let ios, ios % 1000 != 0 { return .error([-22]) }
            for mb in [rw, r, w] {
                if let mb {
                    let (bytes, overflow) = mb.multipliedReportingOverflow(by: 1 << 20)
                    if overflow || bytes > UInt64(Int64.max) { return .error([-22]) }
                }
            }
            return .success { m in
                m.updateBdev(n) { b in
                    for (i, v) in [ios, rw, r, w].enumerated() { if let v { b.qos[i] = v } }
                }
            }
        case .createController(let n, let bdevName, let mask, let ro):
            guard Self.validControllerName(n), controller(n) == nil else { return .error([-32602]) }
            if let bdevName {
                guard bdev(bdevName) != nil, owner(of: bdevName) == nil else { return .error([-32602]) }
            }
            if let mask {
                let allowed: Set<String> = cpumask == "0x3" ? ["0x1", "0x2", "0x3"] : ["0x1"]
                guard allowed.contains(mask) else { return .error([-32602]) }
            }
            let size = bdevName.flatMap { bdev($0)?.blockSize } ?? 512
            return .success { $0.controllers.append(Controller(name: n, bdev: bdevName, readOnly: ro ?? false, lastBlockSize: size)) }
        case .deleteController(let n, let force):
            guard controller(n) != nil else { return .error([-32602]) }
            if guests[n] != nil, force != true { return .error([-16]) }
            return .success { m in
                m.controllers.removeAll { $0.name == n }
                m.guests[n] = nil
            }
        case .attach(let c, let n):
            guard let ctrl = controller(c) else { return .error([-32602]) }
            if ctrl.bdev != nil { return .error([-16]) }
            guard let b = bdev(n), owner(of: n) == nil else { return .error([-32602]) }
            if let guestBS = guests[c], guestBS != b.blockSize { return .error([-32602]) }
            return .success { m in m.updateController(c) { $0.bdev = n; $0.lastBlockSize = b.blockSize } }
        case .detach(let c):
            guard let ctrl = controller(c) else { return .error([-32602]) }
            guard ctrl.bdev != nil else { return .error([-19]) }
            return .success { m in m.updateController(c) { $0.bdev = nil } }
        case .getBdevs(let n, _):
            if let n, bdev(n) == nil { return .error([-19]) }
            return .query
        case .getControllers(let n):
            if let n, controller(n) == nil { return .error([-32602]) }
            return .query
        case .iostat(let n, let perChannel, _):
            if let n, bdev(n) == nil { return .error([-19]) }
            if perChannel && n == nil { return .error([-32602]) }
            return .query
        case .resetIostat(let n):
            if let n, bdev(n) == nil { return .error([-19]) }
            return .success { _ in }
        case .getConfig(let n):
            return ["bdev", "vhost_blk"].contains(n) ? .query : .error([-32602])
        case .getMethods, .version:
            return .query
        case .malformed(_, _, let codes):
            return .error(Set(codes))
        }
    }
}

// MARK: - The documented errors

/// Per method, the error codes api/vhost-blkd.openrpc.json documents: its
/// `errors`, and `(-N` mentions in its and its params' descriptions.
enum RPCFuzzContract {
    static let documented: [String: Set<Int>] = {
        let specPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("api/vhost-blkd.openrpc.json").path
        guard let data = FileManager.default.contents(atPath: specPath), let spec = try? JSON.parse(Array(data)) else { return [:] }
        var components: [String: Int] = [:]
        for (name, value) in spec["components"]?["errors"]?.objectValue ?? [:] {
            if let code = value["code"]?.intValue { components[name] = Int(code) }
        }
        var result: [String: Set<Int>] = [:]
        for method in spec["methods"]?.arrayValue ?? [] {
            guard let name = method["name"]?.stringValue else { continue }
            var codes: Set<Int> = [-32602]
            for error in method["errors"]?.arrayValue ?? [] {
                if let ref = error["$ref"]?.stringValue, let code = components[String(ref.split(separator: "/").last ?? "")] {
                    codes.insert(code)
                }
                if let code = error["code"]?.intValue { codes.insert(Int(code)) }
            }
            var texts = [method["description"]?.stringValue ?? ""]
            texts += (method["params"]?.arrayValue ?? []).map { $0["description"]?.stringValue ?? "" }
            for text in texts {
                var rest = Substring(text)
                while let r = rest.range(of: "-") {
                    let digits = rest[r.upperBound...].prefix { $0.isNumber }
                    let before = rest[..<r.lowerBound].last
                    if let n = Int(digits), before == nil || before == " " || before == "(" { codes.insert(-n) }
                    rest = rest[r.upperBound...]
                }
            }
            result[name] = codes
        }
        return result
    }()


    /// Whether `code` is documented for `method` (-32601 for unknown methods).
    static func isDocumented(_ code: Int, method: String) -> Bool {
        guard let codes = documented[method] else { return code == -32601 }
        return codes.contains(code)
    }
}

// MARK: - The daemon under test

/// One answer: the result, or the error's code and message.
enum RPCFuzzAnswer {
    case result(JSON)
    case error(Int, String)

    var short: String {
        switch self {
        case .result(let r): "result \(r.encoded().prefix(300))"
        case .error(let c, let m): "error \(c) \(m)"
        }
    }
}

/// The daemon, its backing files, connected frontends, the model and the checks.
final class RPCFuzzWorld {
    private(set) var daemon: DaemonProcess
    let seed: UInt64
    let cpumask: String
    let extraArguments: [String]
    let files: RPCFuzzFiles
    var model = RPCFuzzModel()
    /// Connected frontends by controller.
    private var frontends: [String: (f: VhostUserFrontend, memory: FrontendMemory)] = [:]
    private var nextID: Int64 = 1
    private(set) var requests = 0
    private(set) var ioChecks = 0
    private(set) var restarts = 0
    private var ioSalt = 0

    init(seed: UInt64, cpumask: String, extraArguments: [String]) throws {
        self.seed = seed
        self.cpumask = cpumask
        self.extraArguments = extraArguments
        files = RPCFuzzFiles(prefix: "/dev/shm/vbd-rpcfuzz-\(getpid())-\(seed)")
        var rng = SplitMix64(seed: seed)
        let sizes = (0..<RPCFuzzFiles.count).map { _ in UInt64(1 + rng.below(4)) << 20 }
        try files.create(sizes: sizes)
        model.fileSizes = sizes
        daemon = try DaemonProcess(cpumask: cpumask, extraArguments: extraArguments)
    }

    /// Starts what a reactor starts once and keeps (the thread-pool engine
    /// for aio bdevs, on first I/O) on every reactor, and leaves nothing else:
    /// the fd baseline is taken after it.
    func warmUp() throws {
        let masks = cpumask == "0x3" ? ["0x1", "0x2"] : ["0x1"]
        for (i, mask) in masks.enumerated() {
            try daemon.call("bdev_aio_create", ["name": "Warm", "filename": .string(files.path(.file(0))), "block_size": 512])
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "warm", "dev_name": "Warm", "cpumask": .string(mask)])
            let memory = try FrontendMemory(size: 8 << 20)
            let f = try DataPathTests.attach(daemon, "warm", memory: memory, queues: 1)
            let ok = try DataPathTests.roundTrip(f, sector: 0, seed: i)
            f.close()
            memory.close()
            try daemon.call("vhost_delete_controller", ["ctrlr": "warm", "force": true])
            try daemon.call("bdev_aio_delete", ["name": "Warm"])
            if !ok { throw RPCFuzzProblem(text: "warm-up round trip on \(mask) failed") }
        }
    }

    func tearDown() {
        for (_, fe) in frontends {
            fe.f.close()
            fe.memory.close()
        }
        frontends = [:]
        daemon.stop()
        daemon.cleanUp()
        files.remove()
    }

    // MARK: Calls

    /// Sends `ops` in one write on one connection, reads one answer each,
    /// then checks a sentinel request is the next one answered (no extra
    /// answers). Returns the answers in order, or what went wrong.
    func exchange(_ ops: [RPCFuzzOp]) -> Result<[RPCFuzzAnswer], RPCFuzzProblem> {
        Self.exchange(ops, socket: daemon.rpcSocket, files: files, firstID: reserveIDs(ops.count + 1))
    }

    private func reserveIDs(_ n: Int) -> Int64 {
        defer { nextID += Int64(n); requests += n }
        return nextID
    }

    static func exchange(_ ops: [RPCFuzzOp], socket: String, files: RPCFuzzFiles, firstID: Int64) -> Result<[RPCFuzzAnswer], RPCFuzzProblem> {
        func fail(_ text: String) -> Result<[RPCFuzzAnswer], RPCFuzzProblem> { .failure(RPCFuzzProblem(text: text)) }
        let client: RPCClient
        do { client = try RPCClient(path: socket, timeout: .seconds(5)) } catch { return fail("connect: \(error)") }
        var text = ""
        for (i, op) in ops.enumerated() {
            text += HostileRPCTests.request(op.method, id: .int(firstID + Int64(i)), params: op.paramsText(files: files)) + "\n"
        }
        let sentinelID = firstID + Int64(ops.count)
        do { try client.sendRaw(Array(text.utf8)) } catch { return fail("send: \(error)") }
        var byID: [Int64: RPCFuzzAnswer] = [:]
        for _ in ops {
            let response: JSON
            do { response = try client.readResponse() } catch {
                return fail("\(ops.count - byID.count) of \(ops.count) requests unanswered: \(error); answered \(byID.keys.sorted())")
            }
            guard case .object(let o) = response else { return fail("response is not an object: \(response)") }
            guard o["jsonrpc"] == "2.0" else { return fail("response without jsonrpc 2.0: \(response)") }
            guard let id = o["id"]?.intValue, id >= firstID, id < sentinelID else { return fail("response with an unknown id: \(response)") }
            guard byID[id] == nil else { return fail("two responses for id \(id): \(response)") }
            switch (o["result"], o["error"]) {
            case (let r?, nil): byID[id] = .result(r)
            case (nil, let e?):
                guard let code = e["code"], case .int(let c) = code, let message = e["message"]?.stringValue else {
                    return fail("malformed error object: \(response)")
                }
                byID[id] = .error(Int(c), message)
            default: return fail("response without exactly one of result and error: \(response)")
            }
        }
        do {
            try client.sendRaw(Array(HostileRPCTests.request("spdk_get_version", id: .int(sentinelID)).utf8))
            let next = try client.readResponse()
            guard next["id"] == .int(sentinelID) else { return fail("an extra response arrived: \(next)") }
        } catch {
            return fail("sentinel request: \(error)")
        }
        return .success((0..<ops.count).compactMap { byID[firstID + Int64($0)] })
    }

    // MARK: Steps

    func run(_ step: RPCFuzzStep, index: Int) -> [RPCFuzzProblem] {
        switch step {
        case .rpc(let op): return runSequential([op])
        case .pipelined(let ops): return ops.isEmpty ? [] : runSequential(ops)
        case .parallel(let ops): return runParallel(ops)
        case .createThenWaitForIt(let name, let file): return createThenWait(name: name, file: file)
        case .connect(let i):
            let free = model.controllers.map(\.name).filter { frontends[$0] == nil }
            return free.isEmpty ? [] : connect(free[i % free.count])
        case .connectNamed(let c): return connect(c)
        case .io(let i):
            let connected = frontends.keys.sorted()
            return connected.isEmpty ? [] : frontendIO(connected[i % connected.count])
        case .disconnect(let i):
            let connected = frontends.keys.sorted()
            return connected.isEmpty ? [] : disconnect(connected[i % connected.count])
        case .truncate(let i, let mib):
            do {
                try files.truncate(i, to: mib << 20)
                model.fileSizes[i] = mib << 20
            } catch {
                return [RPCFuzzProblem(text: "truncate F\(i): \(error)")]
            }
            return []
        case .saveConfigAndRestart: return saveConfigAndRestart()
        }
    }

    /// Ops sent together on one connection: answers must match the model applied in order.
    private func runSequential(_ ops: [RPCFuzzOp]) -> [RPCFuzzProblem] {
        // The model's predictions, in order, before anything is sent.
        var predicted = model
        var expects: [RPCFuzzModel.Expect] = []
        var snapshots: [RPCFuzzModel] = []
        for op in ops {
            let e = predicted.expect(op, cpumask: cpumask)
            snapshots.append(predicted)
            if case .success(let apply) = e { apply(&predicted) }
            expects.append(e)
        }
        let answers: [RPCFuzzAnswer]
        switch exchange(ops) {
        case .failure(let p): return [p]
        case .success(let a): answers = a
        }
        var problems: [RPCFuzzProblem] = []
        for (i, op) in ops.enumerated() {
            if RPCFuzzTests.verbose { print("    \(op) -> \(answers[i].short)") }
            problems += judge(op, answers[i], expected: expects[i], model: snapshots[i])
            if case .deleteController(let c, true) = op, case .result = answers[i] { problems += frontendWasDisconnected(c) }
        }
        adopt(predicted, problems)
        return problems
    }

    /// Takes the predicted state when the daemon answered as predicted, else the daemon's.
    private func adopt(_ predicted: RPCFuzzModel, _ problems: [RPCFuzzProblem]) {
        if problems.isEmpty {
            model = predicted
        } else {
            model.resync(from: self)
        }
    }

    /// Compares one answer with the model's prediction; documented codes only, never -32603.
    private func judge(_ op: RPCFuzzOp, _ answer: RPCFuzzAnswer, expected: RPCFuzzModel.Expect, model: RPCFuzzModel) -> [RPCFuzzProblem] {
        var problems: [RPCFuzzProblem] = []
        if case .error(let code, let message) = answer {
            if code == -32603 { problems.append(RPCFuzzProblem(text: "\(op): internal error -32603 \(message)")) }
            if !RPCFuzzContract.isDocumented(code, method: op.method) {
                problems.append(RPCFuzzProblem(text: "\(op): error \(code) (\(message)) is not documented for \(op.method)"))
            }
        }
        switch (expected, answer) {
        case (.error(let codes), .error(let code, _)) where codes.contains(code):
            break
        case (.success, .result), (.query, .result):
            if case .result(let r) = answer { problems += checkResult(op, r, model: model) }
        default:
            let wanted: String
            switch expected {
            case .error(let codes): wanted = "error \(codes.sorted())"
            default: wanted = "success"
            }
            problems.append(RPCFuzzProblem(text: "\(op): expected \(wanted), got \(answer.short)"))
        }
        return problems
    }

    /// A successful answer's result, compared with the model before the call.
    private func checkResult(_ op: RPCFuzzOp, _ r: JSON, model m: RPCFuzzModel) -> [RPCFuzzProblem] {
        func problem(_ text: String) -> [RPCFuzzProblem] { [RPCFuzzProblem(text: "\(op): \(text); result \(r.encoded().prefix(600))")] }
        switch op {
        case .mallocCreate(let name, _, _):
            if let name, r != .string(name) { return problem("expected the name") }
            if name == nil, r.stringValue?.hasPrefix("Malloc") != true { return problem("expected a generated MallocN name") }
        case .nullCreate(let name, _, _), .fileCreate(_, let name, _, _, _):
            if r != .string(name) { return problem("expected the name") }
        case .getBdevs(let name, _):
            let wanted = name.flatMap { n in m.bdevs.filter { $0.name == n } } ?? m.bdevs
            if let why = Self.compareBdevs(r, wanted, m) { return problem(why) }
        case .getControllers(let name):
            let wanted = name.flatMap { n in m.controllers.filter { $0.name == n } } ?? m.controllers
            if let why = Self.compareControllers(r, wanted, m) { return problem(why) }
        case .iostat(let name, let perChannel, _):
            if perChannel {
                guard r["name"] == name.map(JSON.string), let channels = r["channels"]?.arrayValue else { return problem("no channels") }
                // Our frontends start one queue: at most one running virtqueue serves a bdev.
                if channels.count > 1 { return problem("\(channels.count) channels, at most 1 queue runs") }
            } else {
                let names = r["bdevs"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
                let wanted = name.map { [$0] } ?? m.bdevs.map(\.name)
                if names != wanted { return problem("bdevs \(names ?? []) expected \(wanted)") }
                if r["tick_rate"]?.intValue != 1_000_000_000 { return problem("tick_rate") }
            }
        case .getConfig(let subsystem):
            guard let entries = r.arrayValue else { return problem("not an array") }
            if subsystem == "bdev" {
                let creates = entries.filter { $0["method"]?.stringValue?.hasSuffix("_create") == true }
                let names = creates.compactMap { $0["params"]?["name"]?.stringValue }
                if names != m.bdevs.map(\.name) { return problem("bdev creates \(names), model \(m.bdevs.map(\.name))") }
                for (entry, b) in zip(creates, m.bdevs) where entry["method"]?.stringValue != "bdev_\(b.driver.rawValue)_create" {
                    return problem("\(b.name) saved with \(entry["method"] ?? .null)")
                }
                let limited = entries.filter { $0["method"] == "bdev_set_qos_limit" }.compactMap { $0["params"]?["name"]?.stringValue }
                let wanted = m.bdevs.filter { $0.qos != [0, 0, 0, 0] }.map(\.name)
                if Set(limited) != Set(wanted) { return problem("QoS entries for \(limited), model \(wanted)") }
            } else {
                let pairs = entries.map { ($0["params"]?["ctrlr"]?.stringValue ?? "?", $0["params"]?["dev_name"]?.stringValue) }
                let wanted = m.controllers.map { ($0.name, $0.bdev) }
                if pairs.map(\.0) != wanted.map(\.0) || pairs.map(\.1) != wanted.map(\.1) {
                    return problem("controllers \(pairs), model \(wanted)")
                }
            }
        case .getMethods:
            let names = Set(r.arrayValue?.compactMap(\.stringValue) ?? [])
            let missing = Set(RPCFuzzContract.documented.keys).subtracting(names)
            if !missing.isEmpty { return problem("missing methods \(missing.sorted())") }
        case .version:
            if r["version"]?.stringValue?.hasPrefix("vhost-blkd") != true { return problem("no version") }
        default:
            if r != true { return problem("expected true") }
        }
        return []
    }

    static func compareBdevs(_ r: JSON, _ wanted: [RPCFuzzModel.Bdev], _ m: RPCFuzzModel) -> String? {
        guard let list = r.arrayValue else { return "not an array" }
        let names = list.map { $0["name"]?.stringValue ?? "?" }
        if names != wanted.map(\.name) { return "bdevs \(names), model \(wanted.map(\.name))" }
        for (entry, b) in zip(list, wanted) {
            let got = [entry["num_blocks"]?.intValue, entry["block_size"]?.intValue].map { $0.map(UInt64.init) }
            if got != [b.numBlocks, b.blockSize] { return "\(b.name): num_blocks/block_size \(got), model \([b.numBlocks, b.blockSize])" }
            let claimed = m.owner(of: b.name) != nil
            if entry["claimed"] != .bool(claimed) { return "\(b.name): claimed \(entry["claimed"] ?? .null), model \(claimed)" }
            let limits = entry["assigned_rate_limits"]
            let qos = ["rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec"].map { limits?[$0]?.intValue.map(UInt64.init) }
            if qos != b.qos.map(Optional.some) { return "\(b.name): QoS \(qos), model \(b.qos)" }
            if entry["supported_io_types"]?["write"] != .bool(!b.readOnly) { return "\(b.name): write support, model read-only \(b.readOnly)" }
        }
        return nil
    }

    func compareControllersNow(_ r: JSON, _ wanted: [RPCFuzzModel.Controller]) -> String? { Self.compareControllers(r, wanted, model) }

    static func compareControllers(_ r: JSON, _ wanted: [RPCFuzzModel.Controller], _ m: RPCFuzzModel) -> String? {
        guard let list = r.arrayValue else { return "not an array" }
        let names = list.map { $0["ctrlr"]?.stringValue ?? "?" }
        if names != wanted.map(\.name) { return "controllers \(names), model \(wanted.map(\.name))" }
        for (entry, c) in zip(list, wanted) {
            let block = entry["backend_specific"]?["block"]
            if block?["bdev"] != c.bdev.map(JSON.string) ?? .null { return "\(c.name): bdev \(block?["bdev"] ?? .null), model \(c.bdev ?? "none")" }
            if block?["readonly"] != .bool(c.readOnly) { return "\(c.name): readonly, model \(c.readOnly)" }
            let sessions = entry["sessions"]?.arrayValue?.count ?? -1
            let wantedSessions = m.guests[c.name] != nil ? 1 : 0
            if sessions != wantedSessions { return "\(c.name): \(sessions) sessions, model \(wantedSessions)" }
        }
        return nil
    }

    /// Ops each on its own connection at once: the mutation (at most one)
    /// is judged against the model, the queries for their shape and codes.
    private func runParallel(_ ops: [RPCFuzzOp]) -> [RPCFuzzProblem] {
        let mutation = ops.firstIndex { !$0.isQuery }
        let expected = mutation.map { model.expect(ops[$0], cpumask: cpumask) }
        let firstID = reserveIDs(2 * ops.count)
        let box = ParallelAnswers(count: ops.count)
        let socket = daemon.rpcSocket, files = self.files
        DispatchQueue.concurrentPerform(iterations: ops.count) { i in
            box.set(i, Self.exchange([ops[i]], socket: socket, files: files, firstID: firstID + 2 * Int64(i)))
        }
        var problems: [RPCFuzzProblem] = []
        var applied = model
        for (i, op) in ops.enumerated() {
            switch box.get(i) {
            case .failure(let p)?:
                problems.append(RPCFuzzProblem(text: "parallel \(op): \(p.text)"))
            case .success(let answers)?:
                guard let answer = answers.first else { continue }
                if RPCFuzzTests.verbose { print("    parallel \(op) -> \(answer.short)") }
                if i == mutation, let expected {
                    problems += judge(op, answer, expected: expected, model: model)
                    if case .success(let apply) = expected, case .result = answer { apply(&applied) }
                    if case .deleteController(let c, true) = op, case .result = answer { problems += frontendWasDisconnected(c) }
                } else {
                    // A query's outcome does not depend on the concurrent mutation: no name filter.
                    switch (model.expect(op, cpumask: cpumask), answer) {
                    case (.error(let codes), .error(let code, _)) where codes.contains(code): break
                    case (.query, .result), (.success, .result): break
                    default: problems.append(RPCFuzzProblem(text: "parallel \(op): unexpected \(answer.short)"))
                    }
                }
            case nil:
                problems.append(RPCFuzzProblem(text: "parallel \(op): no outcome"))
            }
        }
        adopt(applied, problems)
        return problems
    }

    /// A uring create pipelined with bdev_get_bdevs {name, timeout 2000}:
    /// documented to wait for the bdev to appear.
    private func createThenWait(name: String, file: Int) -> [RPCFuzzProblem] {
        let create = RPCFuzzOp.fileCreate(.uring, name: name, path: .file(file), blockSize: 512, readOnly: false)
        guard case .success(let apply) = model.expect(create, cpumask: cpumask) else { return [] }  // only when it should work
        let query = RPCFuzzOp.getBdevs(name: name, timeout: 2000)
        let answers: [RPCFuzzAnswer]
        switch exchange([create, query]) {
        case .failure(let p): return [p]
        case .success(let a): answers = a
        }
        if RPCFuzzTests.verbose { print("    \(create) -> \(answers[0].short)\n    \(query) -> \(answers[1].short)") }
        var problems: [RPCFuzzProblem] = []
        guard case .result = answers[0] else { return [RPCFuzzProblem(text: "\(create): \(answers[0].short)")] }
        apply(&model)
        switch answers[1] {
        case .result(let r):
            if let why = Self.compareBdevs(r, model.bdevs.filter { $0.name == name }, model) {
                problems.append(RPCFuzzProblem(text: "\(query): \(why)"))
            }
        case .error(let code, let message):
            problems.append(RPCFuzzProblem(text: "\(query) pipelined after its create: error \(code) \(message) instead of the bdev"))
        }
        return problems
    }

    // MARK: Frontends

    private func connect(_ c: String) -> [RPCFuzzProblem] {
        guard frontends[c] == nil else { return [] }  // a second frontend is refused: SessionFuzzTests covers it
        let memory: FrontendMemory
        do { memory = try FrontendMemory(size: 8 << 20) } catch { return [RPCFuzzProblem(text: "memory: \(error)")] }
        guard let ctrl = model.controller(c) else {
            // No controller, no socket.
            if let f = try? DataPathTests.attach(daemon, c, memory: memory, queues: 1) {
                f.close()
                memory.close()
                return [RPCFuzzProblem(text: "a frontend connected to \(c), which does not exist")]
            }
            memory.close()
            return []
        }
        do {
            let f = try DataPathTests.attach(daemon, c, memory: memory, queues: 1)
            frontends[c] = (f, memory)
            model.guests[c] = model.guestBlockSize(ctrl)
        } catch {
            memory.close()
            return [RPCFuzzProblem(text: "frontend on \(c) (bdev \(ctrl.bdev ?? "none")): \(error)")]
        }
        return []
    }

    private func disconnect(_ c: String) -> [RPCFuzzProblem] {
        guard let fe = frontends.removeValue(forKey: c) else { return [] }
        fe.f.close()
        fe.memory.close()
        model.guests[c] = nil
        return waitForNoSession(c)
    }

    /// The daemon drops the session of a closed frontend within 2 s.
    private func waitForNoSession(_ c: String) -> [RPCFuzzProblem] {
        let deadline = ContinuousClock.now + .seconds(2)
        var last: JSON = .null
        while ContinuousClock.now < deadline {
            guard let client = try? RPCClient(path: daemon.rpcSocket, timeout: .seconds(2)),
                  let r = try? client.call("vhost_get_controllers", params: ["name": .string(c)]) else { return [] }
            last = r
            if r.arrayValue?.first?["sessions"]?.arrayValue?.isEmpty == true { return [] }
            usleep(10_000)
        }
        return [RPCFuzzProblem(text: "\(c) still has a session 2 s after its frontend closed: \(last)")]
    }

    /// After a forced delete the daemon hangs up on the frontend within 2 s.
    private func frontendWasDisconnected(_ c: String) -> [RPCFuzzProblem] {
        guard let fe = frontends.removeValue(forKey: c) else { return [] }
        defer {
            fe.f.close()
            fe.memory.close()
        }
        return fe.f.channel.waitForClose(timeout: .seconds(2))
            ? [] : [RPCFuzzProblem(text: "forced delete of \(c) left its frontend connected")]
    }

    /// A write and a read back on the frontend on `c`: verified when the
    /// model says the controller serves a writable bdev, IOERR writes when
    /// it is read-only, IOERR both ways with no bdev.
    private func frontendIO(_ c: String) -> [RPCFuzzProblem] {
        guard let fe = frontends[c], let ctrl = model.controller(c) else { return [] }
        ioChecks += 1
        ioSalt += 1
        let f = fe.f
        func problem(_ text: String) -> [RPCFuzzProblem] { [RPCFuzzProblem(text: "frontend I/O on \(c) (bdev \(ctrl.bdev ?? "none")): \(text)")] }
        do {
            guard let name = ctrl.bdev, let b = model.bdev(name) else {
                let w = try f.write(sector: 0, data: [UInt8](repeating: 7, count: 512))
                let r = try f.read(sector: 0, count: 1)
                return w.status == BlkWire.statusIOErr && r.status == BlkWire.statusIOErr
                    ? [] : problem("no bdev: write status \(w.status), read status \(r.status), expected IOERR")
            }
            let length = Int(b.blockSize)
            let span = min(b.bytes, 1 << 20)
            guard span >= UInt64(length) else { return [] }
            let slots = span / UInt64(length)
            let sector = UInt64(ioSalt * 7919) % slots * UInt64(length / 512)
            let data = DataPathTests.pattern(length, seed: ioSalt &+ Int(seed))
            let writable = !ctrl.readOnly && !b.readOnly
            let w = try f.write(sector: sector, data: data)
            let r = try f.read(sector: sector, count: length / 512)
            if writable {
                guard w.status == BlkWire.statusOK else { return problem("write at \(sector) status \(w.status)") }
                guard r.status == BlkWire.statusOK else { return problem("read at \(sector) status \(r.status)") }
                if b.driver != .null && r.data != data { return problem("read back different data at sector \(sector)") }
            } else {
                guard w.status == BlkWire.statusIOErr else { return problem("read-only: write status \(w.status)") }
                guard r.status == BlkWire.statusOK else { return problem("read-only: read status \(r.status)") }
            }
        } catch {
            return problem("\(error)")
        }
        return []
    }

    /// Every connected frontend does its I/O check.
    func frontendsDoVerifiedIO(round: Int) -> [RPCFuzzProblem] {
        frontends.keys.sorted().flatMap { frontendIO($0) }
    }

    // MARK: Invariants

    /// After every step: alive, spdk_get_version within 2 s, listings match the model.
    func checkAfterStep() -> [RPCFuzzProblem] {
        guard daemon.isRunning else { return [RPCFuzzProblem(text: "the daemon process exited")] }
        let start = ContinuousClock.now
        let answers: [RPCFuzzAnswer]
        switch exchange([.version, .getBdevs(name: nil, timeout: nil), .getControllers(name: nil)]) {
        case .failure(let p): return [p]
        case .success(let a): answers = a
        }
        var problems: [RPCFuzzProblem] = []
        if ContinuousClock.now - start > .seconds(2) { problems.append(RPCFuzzProblem(text: "health check took \(ContinuousClock.now - start)")) }
        guard case .result(let version) = answers[0], version["version"] != nil else {
            return [RPCFuzzProblem(text: "spdk_get_version: \(answers[0].short)")]
        }
        if case .result(let r) = answers[1], let why = Self.compareBdevs(r, model.bdevs, model) {
            problems.append(RPCFuzzProblem(text: "bdev_get_bdevs disagrees with the model: \(why)"))
        }
        if case .result(let r) = answers[2], let why = Self.compareControllers(r, model.controllers, model) {
            problems.append(RPCFuzzProblem(text: "vhost_get_controllers disagrees with the model: \(why)"))
        }
        return problems
    }

    // MARK: Restart and teardown

    /// Saves framework_get_config (both subsystems), closes the frontends,
    /// SIGTERM (exit 0), starts a daemon with `--config` on the file in the
    /// same folder: its listings equal those before.
    private func saveConfigAndRestart() -> [RPCFuzzProblem] {
        var problems: [RPCFuzzProblem] = []
        for c in frontends.keys.sorted() { problems += disconnect(c) }
        let before: [JSON]
        let config: JSON
        do {
            before = [try daemon.call("bdev_get_bdevs"), try daemon.call("vhost_get_controllers")]
            config = try ConfigPersistenceTests.savedConfig(daemon)
        } catch {
            return problems + [RPCFuzzProblem(text: "saving the config: \(error)")]
        }
        let path = daemon.directory.appendingPathComponent("saved-\(restarts).json").path
        do { try ConfigPersistenceTests.write(config, to: path) } catch { return problems + [RPCFuzzProblem(text: "write: \(error)")] }
        let status = daemon.stop()
        if status != 0 { problems.append(RPCFuzzProblem(text: "SIGTERM before the restart: exit status \(status)")) }
        do {
            daemon = try DaemonProcess(cpumask: cpumask, extraArguments: extraArguments + ["--config", path, "--strict-config"],
                                   directory: daemon.directory)  // strict: an entry that fails to replay is a finding
        } catch {
            return problems + [RPCFuzzProblem(text: "restart with --config \(config.encoded().prefix(2000)): \(error)")]
        }
        restarts += 1
        // A restarted daemon knows only the bdevs attached now.
        for i in model.controllers.indices where model.controllers[i].bdev == nil { model.controllers[i].lastBlockSize = 512 }
        do {
            let after = [try daemon.call("bdev_get_bdevs"), try daemon.call("vhost_get_controllers")]
            // A file bdev is opened again at its file's current size (a truncate
            // or a resize through another bdev on the file shows now); everything
            // else listed must be the same.
            for i in model.bdevs.indices {
                if let f = model.bdevs[i].file { model.bdevs[i].numBlocks = model.fileSizes[f] / model.bdevs[i].blockSize }
            }
            func sized(_ list: JSON) -> JSON {
                .array((list.arrayValue ?? []).map { entry in
                    guard case .object(var o) = entry, let name = entry["name"]?.stringValue, let b = model.bdev(name) else { return entry }
                    o["num_blocks"] = .int(Int64(b.numBlocks))
                    return .object(o)
                })
            }
            if after[1] != before[1] {
                problems.append(RPCFuzzProblem(text: "vhost_get_controllers differs after the restart:\nbefore \(before[1])\nafter  \(after[1])"))
            }
            if after[0] != sized(before[0]) {
                problems.append(RPCFuzzProblem(text: "bdev_get_bdevs differs after the restart:\nbefore \(sized(before[0]))\nafter  \(after[0])"))
            }
        } catch {
            problems.append(RPCFuzzProblem(text: "listings after the restart: \(error)"))
        }
        return problems
    }

    /// Closes the frontends, force-deletes every controller, deletes every bdev (each must answer true).
    func deleteEverything() -> [RPCFuzzProblem] {
        var problems: [RPCFuzzProblem] = []
        for c in frontends.keys.sorted() { problems += disconnect(c) }
        var ops: [RPCFuzzOp] = model.controllers.map { .deleteController(name: $0.name, force: true) }
        ops += model.bdevs.map { .delete($0.driver, name: $0.name) }
        for op in ops { problems += runSequential([op]) }
        problems += checkAfterStep()
        if !model.bdevs.isEmpty || !model.controllers.isEmpty {
            problems.append(RPCFuzzProblem(text: "left after deleting everything: \(model.bdevs.map(\.name)) \(model.controllers.map(\.name))"))
        }
        return problems
    }
}

extension RPCFuzzOp {
    var isMalformed: Bool {
        if case .malformed = self { return true }
        return false
    }

    var malformedCodes: [Int] {
        if case .malformed(_, _, let codes) = self { return codes }
        return []
    }
}

/// Answers collected from parallel connections.
final class ParallelAnswers: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var answers: [Result<[RPCFuzzAnswer], RPCFuzzProblem>?]

    init(count: Int) { answers = Array(repeating: nil, count: count) }

    func set(_ i: Int, _ value: Result<[RPCFuzzAnswer], RPCFuzzProblem>) {
        lock.lock()
        answers[i] = value
        lock.unlock()
    }

    func get(_ i: Int) -> Result<[RPCFuzzAnswer], RPCFuzzProblem>? {
        lock.lock()
        defer { lock.unlock() }
        return answers[i]
    }
}

extension RPCFuzzProblem: Error {}
