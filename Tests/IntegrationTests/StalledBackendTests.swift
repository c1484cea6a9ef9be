import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Synchronization
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// A write that cannot finish (its file lives on a frozen ext4, `fsfreeze -f`)
/// keeps a queue draining. Whatever waits for that drain (GET_VRING_BASE,
/// `vhost_delete_controller` with force, `vhost_blk_detach`) gets its answer
/// only after the thaw, but the daemon's control thread goes on serving
/// every other RPC client and frontend meanwhile.
///
/// Needs root (loop device, mkfs.ext4, mount, fsfreeze): without them each
/// test fails under CI=true and is skipped elsewhere (`TestPrerequisites`).
@Suite("A stalled backend holds up only what waits for it")
struct StalledBackendTests {
    typealias D = DataPathTests

    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        /// `bdev_uring_create`: the write waits in an io_uring worker.
        case uring
        /// `bdev_aio_create`: the write waits in a thread-pool thread.
        case aio
        /// `bdev_uring_create` on a daemon without io_uring (`--engine
        /// thread-pool`, as under a seccomp filter): the reactor's engine is
        /// the thread pool, kicks included.
        case uringWithoutIOURing = "uring on the thread-pool engine"
        var createMethod: String { self == .aio ? "bdev_aio_create" : "bdev_uring_create" }
        var deleteMethod: String { self == .aio ? "bdev_aio_delete" : "bdev_uring_delete" }
        var rescanMethod: String { self == .aio ? "bdev_aio_rescan" : "bdev_uring_rescan" }
        var daemonArguments: [String] { self == .uringWithoutIOURing ? ["--engine", "thread-pool"] : [] }
        var testDescription: String { rawValue }
    }

    /// How long an RPC or a frontend request unrelated to the stuck queue may
    /// take while it drains (a liveness bound: a blocked control thread never
    /// answers before the thaw).
    static let liveness: Duration = .seconds(5)
    /// How long the calls that do wait for the drain (and frontend A) wait for
    /// an answer before giving up.
    static let stallTimeout: Duration = .seconds(25)
    /// How long those calls are given to be sent and reach the daemon before
    /// the checks start.
    static let settle: useconds_t = 500_000
    static let ctrlrA = "vhost.A"
    static let bdevA = "F0"
    /// Where the stuck write goes (a 4 KiB write at sector 8).
    static let stuckSector: UInt64 = 8

    // MARK: 1. GET_VRING_BASE

    /// Frontend A asks for queue 0's base while its write is stuck: no answer
    /// until the thaw, and meanwhile RPC answers and a second controller is
    /// created, connected, used and stopped. After the thaw the base counts
    /// every request popped (3: a round trip before the freeze, then the
    /// stuck write) and the write's used entry says OK.
    @Test(arguments: Backend.allCases)
    func getVringBaseWaitsWhileOthersAreServed(backend: Backend) throws {
        try Self.withStuckWrite(backend) { daemon, fs, a, q, write in
            let base = BackgroundCall("GET_VRING_BASE on \(Self.ctrlrA)") { try a.getVringBase(0) }
            defer { Self.finish(base, fs: fs, daemon: daemon) }
            usleep(Self.settle)
            #expect(base.result == nil, "GET_VRING_BASE answered while a write is stuck: \(String(describing: base.result))")

            // The control thread answers RPC.
            let controllers = try Self.promptly(daemon, "vhost_get_controllers")
            #expect(controllers.arrayValue?.compactMap { $0["ctrlr"]?.stringValue } == [Self.ctrlrA])
            let bdevs = try Self.promptly(daemon, "bdev_get_bdevs", ["name": .string(Self.bdevA)])
            #expect(bdevs.arrayValue?.first?["name"] == .string(Self.bdevA))

            // And serves a whole second controller's life.
            try Self.promptly(daemon, "bdev_malloc_create", ["num_blocks": 4096, "block_size": 512, "name": "M1"])
            try Self.promptly(daemon, "vhost_create_blk_controller", ["ctrlr": "vhost.B", "dev_name": "M1"])
            let memoryB = try FrontendMemory(size: 8 << 20)
            defer { memoryB.close() }
            let start = ContinuousClock.now
            // Every reply to B within its frontend's 5 s timeout.
            let b = try D.attach(daemon, "vhost.B", memory: memoryB, queues: 1)
            defer { b.close() }
            let data = D.pattern(4096, seed: 11)
            #expect(try b.write(sector: 0, data: data).status == BlkWire.statusOK)
            let readBack = try b.read(sector: 0, count: 8)
            #expect(readBack.status == BlkWire.statusOK && readBack.data == data)
            #expect(try b.stop() == [2])
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < Self.liveness * 2, "controller B's session took \(elapsed) while A drained")

            // All that while, A's write stayed stuck and its GET_VRING_BASE unanswered.
            #expect(base.result == nil, "GET_VRING_BASE answered while a write is stuck: \(String(describing: base.result))")
            #expect(q.usedIdx == q.lastUsedIdx, "the stuck write completed before the thaw")

            if backend == .uring {
                // The operator hears about it every 5 s, with the time it has
                // taken so far: the drain began over 0.5 s ago (settle).
                let deadline = ContinuousClock.now + .seconds(11)
                while !daemon.log.contains("still draining after 10 s") && ContinuousClock.now < deadline { usleep(100_000) }
                let log = daemon.log
                #expect(log.contains("queue 0 still draining after 5 s") && log.contains("queue 0 still draining after 10 s"))
                #expect(!log.contains("still draining after 15 s"))
            }

            if let value = Self.answerAfterThaw(base, fs: fs) {
                // Every request A made available was popped: the round trip's two and the stuck write.
                #expect(value == q.publishedAvailIdx, "GET_VRING_BASE after \(q.publishedAvailIdx) popped requests")
                #expect(value == 3)
            }
            try Self.expectCompleted(write, on: q, fs: fs)
            #expect(daemon.isRunning)
        }
    }

    // MARK: 2. vhost_delete_controller with force

    /// A forced delete of the controller whose write is stuck answers only after
    /// the thaw (it drains the queue first); other RPC clients are answered
    /// meanwhile. Then the bdev is free to delete.
    @Test(arguments: Backend.allCases)
    func forcedDeleteWaitsWhileOthersAreServed(backend: Backend) throws {
        try Self.withStuckWrite(backend) { daemon, fs, a, q, write in
            let delete = Self.backgroundRPC(daemon, "vhost_delete_controller", ["ctrlr": .string(Self.ctrlrA), "force": true])
            defer { Self.finish(delete, fs: fs, daemon: daemon) }
            try Self.expectOthersServedWhile(delete, daemon: daemon, stuck: q)

            if let value = Self.answerAfterThaw(delete, fs: fs) { #expect(value == .bool(true)) }
            // The drained write was completed into the ring before the session ended.
            try Self.expectCompleted(write, on: q, fs: fs)
            #expect(a.channel.waitForClose(timeout: .seconds(5)), "the deleted controller kept its frontend")
            #expect(try Self.promptly(daemon, "vhost_get_controllers").arrayValue?.isEmpty == true)
            #expect(try Self.promptly(daemon, backend.deleteMethod, ["name": .string(Self.bdevA)]) == .bool(true))
            #expect(daemon.isRunning)
        }
    }

    /// A force-deleted controller keeps its bdev claimed until its queues
    /// drained, even when a new controller takes its name meanwhile: a rescan
    /// of the bdev waits for the old controller's stuck write, and the new
    /// controller's frontend hears nothing of it.
    @Test func claimStaysWithTheDrainingControllerWhenItsNameIsReused() throws {
        let backend = Backend.uring
        try Self.withStuckWrite(backend) { daemon, fs, a, q, write in
            let delete = Self.backgroundRPC(daemon, "vhost_delete_controller", ["ctrlr": .string(Self.ctrlrA), "force": true])
            defer { Self.finish(delete, fs: fs, daemon: daemon) }
            usleep(Self.settle)
            #expect(delete.result == nil, "the forced delete answered while a write is stuck")

            // A new controller of the same name, on another bdev, with a frontend.
            try Self.promptly(daemon, "bdev_malloc_create", ["num_blocks": 4096, "block_size": 512, "name": "M1"])
            try Self.promptly(daemon, "vhost_create_blk_controller", ["ctrlr": .string(Self.ctrlrA), "dev_name": "M1"])
            let memoryB = try FrontendMemory(size: 8 << 20)
            defer { memoryB.close() }
            let b = try D.attach(daemon, Self.ctrlrA, memory: memoryB, queues: 1)
            defer { b.close() }
            #expect(try D.roundTrip(b, sector: 0, seed: 5))

            // F0 is still the old controller's: it cannot be deleted, and its rescan waits for the old queue.
            #expect(throws: (any Error).self) { try Self.promptly(daemon, backend.deleteMethod, ["name": .string(Self.bdevA)]) }
            let rescan = Self.backgroundRPC(daemon, backend.rescanMethod, ["name": .string(Self.bdevA)])
            defer { Self.finish(rescan, fs: fs, daemon: daemon) }
            usleep(Self.settle)
            #expect(rescan.result == nil, "the rescan answered while the old controller's write is stuck")
            #expect(throws: FrontendError.self, "the new controller's frontend was told of the other bdev's config") {
                _ = try b.receiveBackendRequest(timeout: .milliseconds(300))
            }
            #expect(q.usedIdx == q.lastUsedIdx, "the stuck write completed before the thaw")

            if let value = Self.answerAfterThaw(delete, fs: fs) { #expect(value == .bool(true)) }
            if let value = Self.answerAfterThaw(rescan, fs: fs) { #expect(value == .bool(true)) }
            try Self.expectCompleted(write, on: q, fs: fs)
            #expect(try D.roundTrip(b, sector: 8, seed: 6))
            #expect(try Self.promptly(daemon, backend.deleteMethod, ["name": .string(Self.bdevA)]) == .bool(true))
            #expect(daemon.isRunning)
        }
    }

    // MARK: 3. vhost_blk_detach

    /// Detaching the bdev under a stuck write answers only after the thaw (the
    /// bdev is released once nothing dispatched on it is in flight); other
    /// RPC clients are answered meanwhile, and the request the detaching
    /// client sent right behind it is answered after it, in order. Then the
    /// write's used entry arrives and the bdev is free to delete.
    @Test(arguments: Backend.allCases)
    func detachWaitsWhileOthersAreServed(backend: Backend) throws {
        try Self.withStuckWrite(backend) { daemon, fs, a, q, write in
            // Two requests back to back on one connection: the second waits behind the first.
            let path = daemon.rpcSocket
            let pipelined = Array((HostileRPCTests.request("vhost_blk_detach", id: 1, params: "{\"ctrlr\":\"\(Self.ctrlrA)\"}")
                + HostileRPCTests.request("spdk_get_version", id: 2)).utf8)
            let detach = BackgroundCall("vhost_blk_detach then spdk_get_version") { () throws -> [JSON] in
                let client = try RPCClient(path: path, timeout: Self.stallTimeout)
                try client.sendRaw(pipelined)
                return [try client.readResponse(), try client.readResponse()]
            }
            defer { Self.finish(detach, fs: fs, daemon: daemon) }
            try Self.expectOthersServedWhile(detach, daemon: daemon, stuck: q)

            if let responses = Self.answerAfterThaw(detach, fs: fs) {
                #expect(responses.map { $0["id"] } == [.int(1), .int(2)], "answers in request order: \(responses)")
                #expect(responses.first?["result"] == .bool(true), "\(responses)")
                #expect(responses.last?["result"]?["version"]?.stringValue?.hasPrefix("vhost-blkd") == true, "\(responses)")
            }
            // The queue still runs: the write's used entry arrives. Its data is
            // on the old bdev; its status may be IOERR, as the daemon checks a
            // completed request against the capacity of the backend it has now
            // (none, after the detach).
            try Self.waitForUsed(q, timeout: .seconds(5))
            try Self.expectCompleted(write, on: q, fs: fs, statuses: [BlkWire.statusOK, BlkWire.statusIOErr])
            let listed = try Self.promptly(daemon, "vhost_get_controllers", ["name": .string(Self.ctrlrA)])
            #expect(listed.arrayValue?.first?["backend_specific"]?["block"]?["bdev"] == .null)
            #expect(try Self.promptly(daemon, backend.deleteMethod, ["name": .string(Self.bdevA)]) == .bool(true))
            // New requests on the detached controller fail, and are answered.
            #expect(try a.read(sector: 0, count: 1).status == BlkWire.statusIOErr)
            #expect(daemon.isRunning)
        }
    }

    // MARK: 3b. Storage calls of the control plane

    /// Growing a bdev whose file is on a frozen filesystem: `ftruncate` waits
    /// for the thaw, off the control loop. Meanwhile other RPC clients are
    /// answered, and a second resize and a rescan are refused (EBUSY). After the thaw the resize answers, the bdev and the guest have
    /// the new size, and the stuck write completes.
    @Test(arguments: [Backend.uring, .aio])
    func resizeOnFrozenStorageWaitsOffTheControlLoop(backend: Backend) throws {
        try Self.withStuckWrite(backend) { daemon, fs, a, q, write in
            let resize = Self.backgroundRPC(daemon, "bdev_resize", ["name": .string(Self.bdevA), "new_size_mib": 16])
            defer { Self.finish(resize, fs: fs, daemon: daemon) }
            try Self.expectOthersServedWhile(resize, daemon: daemon, stuck: q)
            for (method, params) in [("bdev_resize", ["name": JSON.string(Self.bdevA), "new_size_mib": 12]),
                                     (backend.rescanMethod, ["name": .string(Self.bdevA)])] {
                do {
                    let answer = try Self.promptly(daemon, method, .object(JSONObject(params)))
                    Issue.record("\(method) during the resize answered \(answer)")
                } catch let RPCClientError.rpc(error) {
                    #expect(error.code == -Int(EBUSY) && error.message.contains("being resized"), "\(method): \(error)")
                }
            }
            #expect(try Self.numBlocks(daemon, Self.bdevA) == 16384, "the size before the resize answered")

            if let value = Self.answerAfterThaw(resize, fs: fs) { #expect(value == .bool(true)) }
            #expect(try Self.numBlocks(daemon, Self.bdevA) == 32768)
            try LifecycleTests.expectConfigChange(a)
            #expect(try LifecycleTests.capacity(a) == 32768, "the capacity the guest reads")
            try Self.expectCompleted(write, on: q, fs: fs)
            #expect(daemon.isRunning)
        }
    }

    /// Sixteen resizes wait on frozen storage at once; the seventeenth is
    /// refused (EAGAIN) rather than start one more thread, and every other
    /// call is answered; the log names the waiting calls after 5 s. After the
    /// thaw all sixteen answer, and the seventeenth goes through.
    @Test func storageCallsWaitingAreBounded() throws {
        let fs = try FreezableFilesystem.make()
        defer { fs.remove() }
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let names = (0..<17).map { "F\($0)" }
            for name in names {
                let path = fs.mountPoint + "/\(name).img"
                #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20)))
                try daemon.call("bdev_aio_create", ["filename": .string(path), "name": .string(name), "block_size": 512])
            }
            // And one on storage that answers, to shrink while the sixteen wait.
            let other = daemon.directory.appendingPathComponent("other.img").path
            #expect(FileManager.default.createFile(atPath: other, contents: Data(count: 8 << 20)))
            try daemon.call("bdev_aio_create", ["filename": .string(other), "name": "G0", "block_size": 512])
            try fs.freeze()
            defer { fs.thaw() }
            let resizes = names.prefix(16).map { name in
                Self.backgroundRPC(daemon, "bdev_resize", ["name": .string(name), "new_size_mib": 2])
            }
            defer { for call in resizes { Self.finish(call, fs: fs, daemon: daemon) } }
            usleep(Self.settle)
            #expect(resizes.allSatisfy { $0.result == nil }, "a resize answered while its filesystem is frozen")
            do {
                let answer = try Self.promptly(daemon, "bdev_resize", ["name": .string(names[16]), "new_size_mib": 2])
                Issue.record("a 17th waiting resize answered \(answer)")
            } catch let RPCClientError.rpc(error) {
                #expect(error.code == -Int(EAGAIN) && error.message.contains("16 file operations"), "\(error)")
            }
            // A shrink is refused before it changes anything: the bdev keeps its size.
            do {
                let answer = try Self.promptly(daemon, "bdev_resize", ["name": "G0", "new_size_mib": 4])
                Issue.record("a shrink with 16 storage calls waiting answered \(answer)")
            } catch let RPCClientError.rpc(error) {
                #expect(error.code == -Int(EAGAIN), "\(error)")
            }
            #expect(try Self.numBlocks(daemon, "G0") == 16384)
            #expect(try Self.promptly(daemon, "bdev_get_bdevs").arrayValue?.count == 18)
            // The operator hears of each every 5 s, and of its end.
            let deadline = ContinuousClock.now + .seconds(8)
            while !daemon.log.contains("F15.img still waits for its storage after 5 s") && ContinuousClock.now < deadline {
                usleep(100_000)
            }
            #expect(daemon.log.contains("resize of \(fs.mountPoint)/F0.img still waits for its storage after 5 s"))
            fs.thaw()
            for call in resizes {
                if let value = Self.answerAfterThaw(call, fs: fs) { #expect(value == .bool(true)) }
            }
            #expect(try Self.promptly(daemon, "bdev_resize", ["name": .string(names[16]), "new_size_mib": 2]) == .bool(true))
            for name in names { #expect(try Self.numBlocks(daemon, name) == 4096, "\(name)") }
            #expect(daemon.log.contains("resize of \(fs.mountPoint)/F0.img completed after 5 s"))
            #expect(try Self.promptly(daemon, "bdev_resize", ["name": "G0", "new_size_mib": 4]) == .bool(true))
            #expect(try Self.numBlocks(daemon, "G0") == 8192)
        }
    }

    /// `--persist` with the config file on a frozen filesystem: a change is
    /// made at once but answered only once the file holds it (after the
    /// thaw); meanwhile other clients are answered.
    @Test func savedConfigOnFrozenStorageWaitsOffTheControlLoop() throws {
        let fs = try FreezableFilesystem.make()
        defer { fs.remove() }
        let configPath = fs.mountPoint + "/vhost-blkd.json"
        let daemon = try DaemonProcess(extraArguments: ["--config", configPath, "--persist"])
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try daemon.call("bdev_aio_create", ["filename": .string(fs.diskPath), "name": "F0", "block_size": 512])
            try fs.freeze()
            defer { fs.thaw() }
            let create = Self.backgroundRPC(daemon, "bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
            defer { Self.finish(create, fs: fs, daemon: daemon) }
            usleep(Self.settle)
            #expect(create.result == nil, "the create answered before the config file could hold it")
            #expect(try Self.promptly(daemon, "spdk_get_version")["version"] != nil)
            #expect(try Self.promptly(daemon, "bdev_get_bdevs").arrayValue?.count == 2, "the change itself is made at once")
            if let value = Self.answerAfterThaw(create, fs: fs) { #expect(value == .string("M0")) }
            let saved = try String(contentsOfFile: configPath, encoding: .utf8)
            #expect(saved.contains("\"M0\"") && saved.contains("\"F0\""), "\(saved)")
        }
    }

    // MARK: 4. Other files on the same reactor

    /// Eight writes stuck on one file (more than the thread pool has workers
    /// per file) hold up only that file: controller B, on another file on the
    /// same reactor, serves verified I/O meanwhile. After the thaw all eight
    /// complete OK.
    @Test(arguments: Backend.allCases)
    func otherFilesOnTheReactorKeepServing(backend: Backend) throws {
        try Self.withStuckWrite(backend) { daemon, fs, a, q, first in
            var writes = [first]
            for k in 1..<8 {
                writes.append(try Self.pushStuckWrite(a, daemon, sector: first.sector + UInt64(k) * 8, inFlight: Int64(k + 1)))
            }
            // B on a file that is not frozen; one CPU, so the same reactor (and pool) as A.
            let image = daemon.directory.appendingPathComponent("other.img").path
            #expect(FileManager.default.createFile(atPath: image, contents: Data(count: 4 << 20)))
            try Self.promptly(daemon, backend.createMethod, ["filename": .string(image), "name": "G0", "block_size": 512])
            try Self.promptly(daemon, "vhost_create_blk_controller", ["ctrlr": "vhost.B", "dev_name": "G0"])
            let memoryB = try FrontendMemory(size: 8 << 20)
            defer { memoryB.close() }
            let b = try D.attach(daemon, "vhost.B", memory: memoryB, queues: 1)  // every reply within 5 s
            defer { b.close() }
            for seed in 0..<4 {
                #expect(try D.roundTrip(b, sector: UInt64(seed) * 8, seed: 50 + seed), "I/O on B while A's file hangs")
            }
            #expect(q.usedIdx == q.lastUsedIdx, "a stuck write completed before the thaw")

            fs.thaw()
            try Self.expectAllCompleted(writes, on: q, fs: fs)
        }
    }

    // MARK: 5. Shutdown

    /// SIGTERM while a write is stuck: the daemon waits for it rather than
    /// leave the guest's request without a used entry, then exits 0 once the
    /// filesystem thaws.
    @Test(arguments: Backend.allCases)
    func shutdownWaitsForTheStuckWrite(backend: Backend) throws {
        try Self.withStuckWrite(backend) { daemon, fs, a, q, write in
            #expect(kill(daemon.pid, SIGTERM) == 0)
            usleep(Self.settle)
            #expect(daemon.isRunning, "the daemon exited with a write in flight")
            #expect(q.usedIdx == q.lastUsedIdx, "the stuck write completed before the thaw")
            fs.thaw()
            #expect(daemon.stop() == 0)
            try Self.expectCompleted(write, on: q, fs: fs)
        }
    }

    // MARK: Helpers

    /// Runs `body` with frontend A's write stuck on the frozen file (queue 0,
    /// `q`), then thaws and cleans up whatever `body` did or threw.
    static func withStuckWrite(
        _ backend: Backend,
        _ body: (DaemonProcess, FreezableFilesystem, VhostUserFrontend, DriverQueue, StuckWrite) throws -> Void
    ) throws {
        let fs = try FreezableFilesystem.make()
        defer { fs.remove() }
        let daemon = try DaemonProcess(extraArguments: backend.daemonArguments)
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let memory = try FrontendMemory(size: 8 << 20)
            defer { memory.close() }
            let a = try frontendA(daemon, backend, fs, memory: memory)
            defer { a.close() }
            try fs.freeze()
            defer { fs.thaw() }
            let write = try pushStuckWrite(a, daemon)
            try body(daemon, fs, a, try a.driverQueue(0), write)
        }
    }

    /// While `call` waits for the stuck write, other RPC clients get answers
    /// and `call` stays unanswered, as does the write.
    static func expectOthersServedWhile<T>(
        _ call: BackgroundCall<T>, daemon: DaemonProcess, stuck q: DriverQueue, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        usleep(settle)
        #expect(call.result == nil, "\(call.name) answered while a write is stuck", sourceLocation: sourceLocation)
        for method in ["vhost_get_controllers", "bdev_get_bdevs", "spdk_get_version"] {
            try promptly(daemon, method, sourceLocation: sourceLocation)
        }
        #expect(call.result == nil, "\(call.name) answered while a write is stuck", sourceLocation: sourceLocation)
        #expect(q.usedIdx == q.lastUsedIdx, "the stuck write completed before the thaw", sourceLocation: sourceLocation)
    }

    /// Thaws, then waits up to 10 s for `call`'s answer; records an issue
    /// and returns nil when it failed or never came.
    static func answerAfterThaw<T>(
        _ call: BackgroundCall<T>, fs: FreezableFilesystem, sourceLocation: SourceLocation = #_sourceLocation
    ) -> T? {
        fs.thaw()
        switch call.join(timeout: .seconds(10)) {
        case .success(let value):
            return value
        case .failure(let error):
            Issue.record("\(call.name) failed after the thaw: \(error)", sourceLocation: sourceLocation)
        case nil:
            Issue.record("\(call.name) still unanswered 10 s after the thaw", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// Bdev `F0` (`backend`) on the file in `fs`, controller `vhost.A` on it,
    /// and frontend A connected with queue 0 started, after one round trip.
    /// A's replies may take `stallTimeout` (its GET_VRING_BASE waits for the thaw).
    static func frontendA(
        _ daemon: DaemonProcess, _ backend: Backend, _ fs: FreezableFilesystem, memory: FrontendMemory
    ) throws -> VhostUserFrontend {
        try daemon.call(backend.createMethod, ["filename": .string(fs.diskPath), "name": .string(bdevA), "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": .string(ctrlrA), "dev_name": .string(bdevA)])
        var options = VhostUserFrontend.Options()
        options.timeout = stallTimeout
        let a = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/" + ctrlrA, memory: memory, options: options)
        do {
            try a.connect()
            try a.start(queueCount: 1, queueSize: 128)
            #expect(try D.roundTrip(a, sector: 0, seed: 1), "I/O on \(ctrlrA) before the freeze")
        } catch {
            a.close()
            throw error
        }
        return a
    }

    /// A write put on queue 0 by hand, so its used entry can be checked later.
    struct StuckWrite {
        let sector: UInt64
        let head: UInt16
        let status: GuestBuffer
        let data: [UInt8]
    }

    /// Pushes a 4 KiB write at `sector` on A's queue 0, kicks, and waits
    /// until the daemon reports `inFlight` requests (this one popped and
    /// waiting on the frozen file, with those before it).
    static func pushStuckWrite(
        _ a: VhostUserFrontend, _ daemon: DaemonProcess, sector: UInt64 = stuckSector, inFlight expected: Int64 = 1
    ) throws -> StuckWrite {
        let q = try a.driverQueue(0)
        let write = try addWrite(on: q, memory: a.memory, sector: sector)
        q.publishAndKick(force: true)
        try waitUntilInFlight(expected, daemon, q)
        return write
    }

    /// Adds a 4 KiB write at `sector` to `q` (split or packed), unpublished.
    static func addWrite(on q: DriverQueue, memory: FrontendMemory, sector: UInt64) throws -> StuckWrite {
        let data = D.pattern(4096, seed: 42 &+ Int(sector))
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeOut, sector: sector))
        let buffer = try memory.allocate(4096, alignment: 4096)
        buffer.write(data)
        let status = try memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        let head = try q.addChain(
            [ChainBuffer(header, writable: false), ChainBuffer(buffer, writable: false), ChainBuffer(status, writable: true)],
            owning: [header, buffer, status])
        return StuckWrite(sector: sector, head: head, status: status, data: data)
    }

    /// Waits until the daemon reports `expected` requests in flight on
    /// `ctrlrA`'s queue 0, expecting none to complete on `q` meanwhile.
    static func waitUntilInFlight(_ expected: Int64, _ daemon: DaemonProcess, _ q: DriverQueue) throws {
        let deadline = ContinuousClock.now + liveness
        var inFlight: Int64 = -1
        while ContinuousClock.now < deadline {
            let listed = try daemon.call("vhost_get_controllers", ["name": .string(ctrlrA)])
            let queue = listed.arrayValue?.first?["sessions"]?.arrayValue?.first?["queues"]?.arrayValue?.first
            inFlight = queue?["in_flight"]?.intValue ?? -1
            if inFlight == expected { break }
            #expect(q.peekUsedID() == nil, "a write completed on a frozen filesystem")
            usleep(20_000)
        }
        try #require(inFlight == expected, "the writes on the frozen file never showed as in flight (in_flight \(inFlight))")
    }

    /// Waits until queue `q` has a used entry to collect (does not collect it).
    static func waitForUsed(_ q: DriverQueue, timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while q.usedIdx == q.lastUsedIdx {
            try #require(ContinuousClock.now < deadline, "no used entry on queue \(q.index) within \(timeout)")
            usleep(5_000)
        }
    }

    /// The stuck write's used entry is the next on `q`, with a status in
    /// `statuses` (OK unless told), and its data is in the file.
    static func expectCompleted(
        _ write: StuckWrite, on q: DriverQueue, fs: FreezableFilesystem, statuses: Set<UInt8> = [BlkWire.statusOK],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        try #require(q.usedIdx != q.lastUsedIdx, "no used entry for the stuck write", sourceLocation: sourceLocation)
        // Read the status before popUsed gives its buffer back to the allocator.
        let status = write.status.pointer.load(as: UInt8.self)
        let used = q.popUsed()
        #expect(used?.id == UInt32(write.head), "used entry \(String(describing: used)), head \(write.head)", sourceLocation: sourceLocation)
        #expect(statuses.contains(status), "status \(status) of the stuck write, expected one of \(statuses.sorted())", sourceLocation: sourceLocation)
        try expectOnDisk(write, fs: fs, sourceLocation: sourceLocation)
    }

    /// Every write in `writes` gets its used entry on `q` (in any order), with status OK.
    static func expectAllCompleted(
        _ writes: [StuckWrite], on q: DriverQueue, fs: FreezableFilesystem, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var pending = Dictionary(writes.map { (UInt32($0.head), $0) }, uniquingKeysWith: { first, _ in first })
        let deadline = ContinuousClock.now + .seconds(10)
        while !pending.isEmpty, ContinuousClock.now < deadline {
            guard q.usedIdx != q.lastUsedIdx else {
                usleep(5_000)
                continue
            }
            guard let id = q.peekUsedID(), let write = pending.removeValue(forKey: id) else {
                Issue.record("unexpected used entry \(String(describing: q.popUsed()))", sourceLocation: sourceLocation)
                continue
            }
            let status = write.status.pointer.load(as: UInt8.self)
            _ = q.popUsed()
            #expect(status == BlkWire.statusOK, "status \(status) of the write at sector \(write.sector)", sourceLocation: sourceLocation)
            try expectOnDisk(write, fs: fs, sourceLocation: sourceLocation)
        }
        #expect(pending.isEmpty, "writes at sectors \(pending.values.map(\.sector).sorted()) never completed", sourceLocation: sourceLocation)
    }

    static func expectOnDisk(_ write: StuckWrite, fs: FreezableFilesystem, sourceLocation: SourceLocation) throws {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: fs.diskPath))
        defer { try? file.close() }
        try file.seek(toOffset: write.sector * 512)
        let onDisk = try file.read(upToCount: write.data.count).map { [UInt8]($0) }
        #expect(onDisk == write.data, "the stuck write's data at sector \(write.sector) in the file", sourceLocation: sourceLocation)
    }

    /// The control thread is not serving: a call got no answer in time.
    struct ControlThreadStalled: Error, CustomStringConvertible {
        let description: String
    }

    /// Calls `method` on a fresh connection that waits at most `liveness` for
    /// the answer; a timeout throws `ControlThreadStalled` (the test ends there).
    @discardableResult
    static func promptly(
        _ daemon: DaemonProcess, _ method: String, _ params: JSON? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> JSON {
        let start = ContinuousClock.now
        do {
            let client = try RPCClient(path: daemon.rpcSocket, timeout: liveness)
            return try client.call(method, params: params)
        } catch RPCClientError.timeout {
            throw ControlThreadStalled(
                description: "\(method) got no answer within \(ContinuousClock.now - start) while a queue drains: "
                    + "the control thread is blocked")
        }
    }

    /// `method` called on its own connection from a background thread (waits up to `stallTimeout`).
    static func numBlocks(_ daemon: DaemonProcess, _ bdev: String) throws -> Int64? {
        try promptly(daemon, "bdev_get_bdevs", ["name": .string(bdev)]).arrayValue?.first?["num_blocks"]?.intValue
    }

    static func backgroundRPC(_ daemon: DaemonProcess, _ method: String, _ params: JSON) -> BackgroundCall<JSON> {
        let path = daemon.rpcSocket
        return BackgroundCall(method) {
            let client = try RPCClient(path: path, timeout: stallTimeout)
            return try client.call(method, params: params)
        }
    }

    /// On every way out: thaws, then waits for `call`. If it is still waiting
    /// 10 s after the thaw, stops the daemon (its sockets close, so the call
    /// ends) before the caller closes what the call uses.
    static func finish<T>(_ call: BackgroundCall<T>, fs: FreezableFilesystem, daemon: DaemonProcess) {
        fs.thaw()
        guard call.join(timeout: .seconds(10)) == nil else { return }
        Issue.record("\(call.name) still unanswered 10 s after the thaw; stopping the daemon")
        daemon.stop()
        if call.join(timeout: stallTimeout + .seconds(5)) == nil {
            Issue.record("\(call.name) did not end after the daemon stopped")
        }
    }
}

/// A blocking call run on its own thread; its result is read from the test's thread.
final class BackgroundCall<T: Sendable>: Sendable {
    let name: String
    private let state = Mutex<Result<T, any Error>?>(nil)

    init(_ name: String, _ body: @escaping @Sendable () throws -> T) {
        self.name = name
        let thread = Thread { [self] in
            let outcome = Result { try body() }
            state.withLock { $0 = outcome }
        }
        thread.name = name
        thread.start()
    }

    /// The outcome, or nil while the call still waits.
    var result: Result<T, any Error>? { state.withLock { $0 } }

    /// Waits up to `timeout` for the outcome; nil if the call still waits.
    func join(timeout: Duration) -> Result<T, any Error>? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let outcome = result { return outcome }
            if ContinuousClock.now >= deadline { return nil }
            usleep(10_000)
        }
    }
}

/// A 64 MiB ext4 on a loop device, mounted under /tmp, holding an 8 MiB
/// `disk.img`. `freeze()` (fsfreeze -f) makes every write to it wait in the
/// kernel until `thaw()`; reads go on. `remove()` thaws, unmounts, detaches
/// the loop device and deletes the image. Used from one test's thread.
final class FreezableFilesystem: @unchecked Sendable {
    let image: String
    let mountPoint: String
    let device: String
    private var frozen = false
    private var mounted = true

    var diskPath: String { mountPoint + "/disk.img" }

    private init(image: String, mountPoint: String, device: String) {
        self.image = image
        self.mountPoint = mountPoint
        self.device = device
    }

    /// The tool's path in the usual system folders (a test's PATH may lack /sbin).
    static func tool(_ name: String) -> String { TestPrerequisites.tool(name) ?? "/usr/sbin/\(name)" }

    /// Runs `name arguments`; returns the output on failure (nil on success).
    @discardableResult
    static func run(_ name: String, _ arguments: [String]) -> String? {
        do {
            let (status, output) = try runCommand(tool(name), arguments)
            return status == 0 ? nil : "\(name) \(arguments.joined(separator: " ")): exit \(status): \(output)"
        } catch {
            return "\(name): \(error)"
        }
    }

    /// Sets it up and checks that it freezes and thaws. Where that is not
    /// possible (a tool missing, not root, no loop devices) the test fails
    /// under CI=true and is skipped elsewhere (`TestPrerequisites.unavailable`).
    static func make() throws -> FreezableFilesystem {
        try TestPrerequisites.requireTools(["losetup", "mkfs.ext4", "mount", "umount", "fsfreeze"])
        let base = "/tmp/vbd-frz-\(UUID().uuidString.prefix(8))"
        let image = base + ".img"
        let fm = FileManager.default
        guard fm.createFile(atPath: image, contents: nil),
              let handle = FileHandle(forWritingAtPath: image),
              (try? handle.truncate(atOffset: 64 << 20)) != nil
        else {
            try? fm.removeItem(atPath: image)
            try TestPrerequisites.unavailable("cannot create \(image)")
        }
        try? handle.close()
        let (status, output) = (try? runCommand(tool("losetup"), ["-f", "--show", image])) ?? (-1, "losetup did not run")
        guard status == 0 else {
            try? fm.removeItem(atPath: image)
            try TestPrerequisites.unavailable("losetup (a loop device needs root): \(output)")
        }
        let device = output.trimmingCharacters(in: .whitespacesAndNewlines)
        let fs = FreezableFilesystem(image: image, mountPoint: base, device: device)
        fs.mounted = false
        func give(up why: String) throws -> Never {
            fs.remove()
            try TestPrerequisites.unavailable(why)
        }
        if let why = run("mkfs.ext4", ["-q", "-F", device]) { try give(up: why) }
        do {
            try fm.createDirectory(atPath: base, withIntermediateDirectories: true)
        } catch {
            try give(up: "mkdir \(base): \(error)")
        }
        if let why = run("mount", [device, base]) { try give(up: why) }
        fs.mounted = true
        guard fm.createFile(atPath: fs.diskPath, contents: Data(count: 8 << 20)) else {
            try give(up: "cannot create \(fs.diskPath)")
        }
        // Freezing works here (a later failure is then a real one).
        if let why = run("fsfreeze", ["-f", base]) { try give(up: why) }
        fs.frozen = true
        fs.thaw()
        return fs
    }

    /// fsfreeze -f; `make()` showed it works, so a failure here fails the test.
    func freeze() throws {
        if let why = Self.run("fsfreeze", ["-f", mountPoint]) { throw FreezeError(description: why) }
        frozen = true
    }

    struct FreezeError: Error, CustomStringConvertible {
        let description: String
    }

    /// fsfreeze -u, if frozen (any number of times).
    func thaw() {
        guard frozen else { return }
        for attempt in 1...5 {
            guard let why = Self.run("fsfreeze", ["-u", mountPoint]) else {
                frozen = false
                return
            }
            Issue.record("thaw attempt \(attempt) failed: \(why)")
            usleep(200_000)
        }
    }

    /// Thaws, unmounts, detaches the loop device, deletes the image and mount point.
    func remove() {
        thaw()
        if mounted {
            var why: String? = nil
            for _ in 0..<25 {
                why = Self.run("umount", [mountPoint])
                if why == nil { break }
                usleep(200_000)  // a daemon just stopped may still hold the file
            }
            if let why {
                Issue.record("\(why); unmounting lazily")
                Self.run("umount", ["-l", mountPoint])
            }
            mounted = false
        }
        if let why = Self.run("losetup", ["-d", device]) { Issue.record("\(why)") }
        try? FileManager.default.removeItem(atPath: mountPoint)
        try? FileManager.default.removeItem(atPath: image)
    }
}
