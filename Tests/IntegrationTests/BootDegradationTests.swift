import DaemonTestSupport
import Foundation
import JSONRPC
import Posix
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A boot that degrades, not fails (issue 24): a `--config` entry that fails
/// at start is reported and kept while the rest is served, a retry brings it
/// back once its cause is fixed, `--strict-config` keeps the old exit, and
/// systemd's notify socket hears READY=1 only once every socket exists.
@Suite("Boot with a bad config entry")
struct BootDegradationTests {
    /// A fresh folder under /tmp (short socket paths).
    static func makeDirectory() throws -> URL {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// A good malloc bdev and controller, then a uring bdev on `missingImage`
    /// with a QoS limit and a controller on it.
    static func mixedConfig(missingImage: String) -> JSON {
        ["subsystems": [
            ["subsystem": "bdev", "config": [
                ["method": "bdev_malloc_create", "params": ["name": "M0", "num_blocks": 2048, "block_size": 512]],
                ["method": "bdev_uring_create", "params": ["name": "U1", "filename": .string(missingImage)]],
                ["method": "bdev_set_qos_limit", "params": ["name": "U1", "rw_ios_per_sec": 10000]],
            ]],
            ["subsystem": "vhost_blk", "config": [
                ["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.0", "dev_name": "M0"]],
                ["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.1", "dev_name": "U1"]],
            ]],
        ]]
    }

    static func write(_ json: JSON, to path: String) throws {
        try Data(json.encoded(pretty: true).utf8).write(to: URL(fileURLWithPath: path))
    }

    static func readJSON(_ path: String) throws -> JSON {
        try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    /// The methods and object names of every entry of `config` (a save_config file).
    static func entries(_ config: JSON) -> [String] {
        (config["subsystems"]?.arrayValue ?? []).flatMap { subsystem in
            (subsystem["config"]?.arrayValue ?? []).map { entry in
                let name = entry["params"]?["ctrlr"]?.stringValue ?? entry["params"]?["name"]?.stringValue ?? "?"
                return "\(entry["method"]?.stringValue ?? "?") \(name)"
            }
        }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The bad entries (and those that need them) are reported while the
    /// good controller is served; the persisted file keeps them; once the
    /// image exists a retry serves them, in config order, and the report
    /// empties.
    @Test func servesTheRestReportsAndRetries() throws {
        let directory = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let mount = directory.appendingPathComponent("nfs")
        let image = mount.appendingPathComponent("vm1.img").path
        let configPath = directory.appendingPathComponent("config.json").path
        try Self.write(Self.mixedConfig(missingImage: image), to: configPath)
        let original = Self.entries(try Self.readJSON(configPath))

        let daemon = try DaemonProcess(extraArguments: ["--config", configPath, "--persist"], directory: directory)
        defer { daemon.stop() }
        #expect(Self.exists(daemon.socketDirectory + "/vhost.0"), "the good controller is served")
        #expect(!Self.exists(daemon.socketDirectory + "/vhost.1"))
        #expect(try daemon.call("vhost_get_controllers").arrayValue?.compactMap { $0["ctrlr"]?.stringValue } == ["vhost.0"])
        #expect(daemon.log.contains("subsystem bdev entry 1 (bdev_uring_create) failed"), "\(daemon.log)")

        let failed = try #require(try daemon.call("framework_get_failed_config").arrayValue)
        #expect(failed.compactMap { $0["method"]?.stringValue } ==
                ["bdev_uring_create", "bdev_set_qos_limit", "vhost_create_blk_controller"])
        #expect(failed.compactMap { $0["subsystem"]?.stringValue } == ["bdev", "bdev", "vhost_blk"])
        #expect(failed.first?["params"]?["filename"] == .string(image))
        #expect(failed.first?["error"]?["code"] == -2, "\(failed)")
        #expect(failed.first?["error"]?["message"]?.stringValue?.contains("No such file") == true, "\(failed)")
        #expect(failed.dropFirst().allSatisfy { $0["error"]?["message"] == "bdev U1 not available" }, "\(failed)")
        // framework_get_config is what is served; the persisted file keeps every entry.
        #expect(try daemon.call("framework_get_config", ["name": "bdev"]).arrayValue?.count == 1)
        #expect(Set(Self.entries(try Self.readJSON(configPath))) == Set(original))
        // A change rewrites the file: the failed entries stay in it.
        try daemon.call("bdev_null_create", ["name": "N0", "num_blocks": 64, "block_size": 512])
        #expect(Set(Self.entries(try Self.readJSON(configPath))) == Set(original + ["bdev_null_create N0"]))

        // Nothing fixed yet: the retry fails the same way.
        let early = try daemon.call("framework_retry_failed_config")
        #expect(early["recovered"] == 0)
        #expect(early["failed"]?.arrayValue?.count == 3)

        // The share is mounted: the retry serves the controller.
        try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, 8 << 20) == 0)
        let retried = try daemon.call("framework_retry_failed_config")
        #expect(retried == ["recovered": 3, "failed": []])
        #expect(Self.exists(daemon.socketDirectory + "/vhost.1"))
        #expect(try daemon.call("framework_get_failed_config") == [])
        let u1 = try daemon.call("bdev_get_bdevs", ["name": "U1"]).arrayValue?.first
        #expect(u1?["assigned_rate_limits"]?["rw_ios_per_sec"] == 10000, "the QoS entry ran after its bdev")
        #expect(try daemon.call("vhost_get_controllers", ["name": "vhost.1"]).arrayValue?.first?["backend_specific"]?["block"]?["bdev"] == "U1")
        let saved = Self.entries(try Self.readJSON(configPath))
        #expect(saved.filter { $0 == "bdev_uring_create U1" }.count == 1, "\(saved)")
        #expect(Set(saved) == Set(original + ["bdev_null_create N0"]))
        #expect(try daemon.call("framework_retry_failed_config") == ["recovered": 0, "failed": []])
        #expect(daemon.stop() == 0)
    }

    /// A failed entry is superseded by a bdev or controller of its name made
    /// by hand (with the QoS entry that followed that create; another
    /// bdev's stays); a controller saved with a CPU the daemon no longer has
    /// is reported, and the rest is served.
    @Test func handMadeReplacementAndMissingCPU() throws {
        let directory = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let configPath = directory.appendingPathComponent("config.json").path
        var config = Self.mixedConfig(missingImage: directory.appendingPathComponent("none/vm1.img").path)
        if case .object(var root) = config, case .array(var subsystems)? = root["subsystems"],
           case .object(var bdev) = subsystems[0], case .array(var bdevEntries)? = bdev["config"],
           case .object(var vhost) = subsystems[1], case .array(var entries)? = vhost["config"] {
            // A QoS entry of a bdev that is served, refused for a reason of its own.
            bdevEntries.append(["method": "bdev_set_qos_limit", "params": ["name": "M0", "bogus": 1]])
            bdev["config"] = .array(bdevEntries)
            entries.append(["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.cpu", "cpumask": "0x8000"]])
            vhost["config"] = .array(entries)
            subsystems[0] = .object(bdev)
            subsystems[1] = .object(vhost)
            root["subsystems"] = .array(subsystems)
            config = .object(root)
        }
        try Self.write(config, to: configPath)
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--config", configPath, "--persist"], directory: directory)
        defer { daemon.stop() }
        let failed = try daemon.call("framework_get_failed_config").arrayValue ?? []
        #expect(failed.count == 5)
        let cpu = failed.last
        #expect(cpu?["params"]?["ctrlr"] == "vhost.cpu")
        #expect(cpu?["error"]?["message"]?.stringValue?.contains("cpumask") == true, "\(failed)")
        #expect(Self.exists(daemon.socketDirectory + "/vhost.0"))

        // The operator makes U1 on another image by hand: its failed create and QoS entries go.
        let other = directory.appendingPathComponent("other.img").path
        #expect(FileManager.default.createFile(atPath: other, contents: nil))
        #expect(truncate(other, 4 << 20) == 0)
        try daemon.call("bdev_uring_create", ["name": "U1", "filename": .string(other)])
        let left = try daemon.call("framework_get_failed_config").arrayValue ?? []
        #expect(left.compactMap { $0["params"]?["ctrlr"]?.stringValue } == ["vhost.1", "vhost.cpu"])
        #expect(left.first?["params"]?["name"] == "M0", "another bdev's failed entry stays: \(left)")
        #expect(left.count == 3)
        let saved = Self.entries(try Self.readJSON(configPath))
        #expect(saved.filter { $0 == "bdev_uring_create U1" }.count == 1, "\(saved)")
        // The retry serves vhost.1 on it; vhost.cpu stays failed.
        let retried = try daemon.call("framework_retry_failed_config")
        #expect(retried["recovered"] == 1)
        #expect(retried["failed"]?.arrayValue?.compactMap { $0["params"]?["ctrlr"]?.stringValue } == ["vhost.cpu"])
        #expect(retried["failed"]?.arrayValue?.count == 2)
        #expect(Self.exists(daemon.socketDirectory + "/vhost.1"))
        #expect(daemon.stop() == 0)
    }

    /// `--strict-config` keeps the old behaviour: the first failing entry
    /// stops the start, exit status non-zero, no socket left.
    @Test func strictConfigExitsNonZero() throws {
        let directory = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let configPath = directory.appendingPathComponent("config.json").path
        try Self.write(Self.mixedConfig(missingImage: directory.appendingPathComponent("none/vm1.img").path), to: configPath)
        do {
            let daemon = try DaemonProcess(extraArguments: ["--config", configPath, "--persist", "--strict-config"], directory: directory)
            daemon.stop()
            Issue.record("the daemon started with --strict-config and a failing entry")
        } catch DaemonError.exited(let status, let log) {
            #expect(status == 1)
            #expect(log.contains("subsystem bdev entry 1 (bdev_uring_create) failed"), "\(log)")
        }
        #expect(!Self.exists(directory.appendingPathComponent("rpc.sock").path))
        #expect(!Self.exists(directory.appendingPathComponent("ctrl/vhost.0").path))
        #expect(Self.entries(try Self.readJSON(configPath)).count == 5, "the file is left as it was")
        let usage = try runCommand(DaemonProcess.daemonPath, ["-r", directory.path + "/r.sock", "--strict-config"])
        #expect(usage.status != 0 && usage.output.contains("--strict-config needs --config"))
    }

    /// systemd's `Type=notify`: a fake notify socket (a path, or an abstract
    /// name) gets READY=1 with a STATUS naming the failed entries, and at that
    /// moment the RPC socket and the restored controller's socket exist; then
    /// STOPPING=1 at shutdown. NOTIFY_SOCKET is not passed on.
    @Test(arguments: [false, true])
    func notifiesReadyOnceTheSocketsExist(abstract: Bool) throws {
        let directory = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let configPath = directory.appendingPathComponent("config.json").path
        try Self.write(Self.mixedConfig(missingImage: directory.appendingPathComponent("none/vm1.img").path), to: configPath)
        let address = abstract ? "@vbd-notify-\(UUID().uuidString.prefix(8))" : directory.appendingPathComponent("notify.sock").path
        let socket = try NotifySocket(address: address)
        let watched = [directory.appendingPathComponent("rpc.sock").path, directory.appendingPathComponent("ctrl/vhost.0").path]
        let listener = NotifyListener(socket: socket, watched: watched)
        listener.start()

        let daemon = try DaemonProcess(extraArguments: ["--config", configPath], environment: ["NOTIFY_SOCKET": address],
                                       directory: directory)
        defer { daemon.stop() }
        let ready = try #require(listener.wait { $0.text.contains("READY=1") }, "no READY=1: \(listener.messages)\n\(daemon.log)")
        #expect(ready.existing == watched, "READY=1 came before the sockets existed: \(ready)")
        #expect(ready.text.contains("STATUS=serving 1 controllers"), "\(ready.text)")
        #expect(ready.text.contains("3 config entries failed"), "\(ready.text)")
        #expect(listener.messages.first?.text.contains("READY=1") == true, "nothing before READY=1: \(listener.messages)")
        #expect(daemon.stop() == 0)
        #expect(listener.wait { $0.text.contains("STOPPING=1") } != nil, "\(listener.messages)")
        listener.stop()
    }
}

/// An AF_UNIX datagram socket bound where `$NOTIFY_SOCKET` points (sd_notify(3)).
final class NotifySocket: @unchecked Sendable {  // the fd is read by one listener thread
    let fd: FileDescriptor
    let address: String

    init(address: String) throws {
        self.address = address
        fd = FileDescriptor(try retryingEINTR { socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(address.utf8)
        let isAbstract = bytes.first == UInt8(ascii: "@")
        if isAbstract { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: sun.sun_path)
        try #require(bytes.count < capacity)
        withUnsafeMutableBytes(of: &sun.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (isAbstract ? 0 : 1))
        let fd = self.fd
        _ = try retryingEINTR {
            withUnsafePointer(to: &sun) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd.rawValue, __CONST_SOCKADDR_ARG(__sockaddr__: $0), length) } }
        }
    }

    deinit {
        fd.close()
        if !address.hasPrefix("@") { unlink(address) }
    }

    /// One datagram, or nil when none came within `milliseconds`.
    func receive(milliseconds: Int32) -> String? {
        var poller = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        guard (try? retryingEINTR { poll(&poller, 1, milliseconds) }) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = (try? retryingEINTR { buffer.withUnsafeMutableBytes { recv(fd.rawValue, $0.baseAddress, $0.count, 0) } }) ?? 0
        return String(decoding: buffer.prefix(max(0, n)), as: UTF8.self)
    }
}

/// Reads notifications on a thread of its own and, the moment each arrives,
/// notes which of `watched` exist.
final class NotifyListener: @unchecked Sendable {  // state behind `lock`
    struct Message: CustomStringConvertible {
        var text: String
        var existing: [String]
        var description: String { "\(text.debugDescription) with \(existing)" }
    }

    private let socket: NotifySocket
    private let watched: [String]
    private let lock = NSCondition()
    private var received: [Message] = []
    private var stopping = false

    init(socket: NotifySocket, watched: [String]) {
        self.socket = socket
        self.watched = watched
    }

    var messages: [Message] { lock.withLock { received } }

    func start() {
        let thread = Thread { [self] in
            while !lock.withLock({ stopping }) {
                guard let text = socket.receive(milliseconds: 100) else { continue }
                let existing = watched.filter { access($0, F_OK) == 0 }
                lock.withLock {
                    received.append(Message(text: text, existing: existing))
                    lock.broadcast()
                }
            }
        }
        thread.start()
    }

    func stop() { lock.withLock { stopping = true } }

    /// The first message that satisfies `predicate`, waiting up to 20 s.
    func wait(_ predicate: (Message) -> Bool) -> Message? {
        let deadline = Date().addingTimeInterval(20)
        return lock.withLock {
            while true {
                if let match = received.first(where: predicate) { return match }
                if !lock.wait(until: deadline) { return received.first(where: predicate) }
            }
        }
    }
}
