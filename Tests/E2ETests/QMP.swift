import Foundation
import Posix
#if canImport(Glibc)
import Glibc
#endif

/// A minimal QMP client (QEMU Machine Protocol over a unix socket): greeting,
/// `qmp_capabilities`, then commands one at a time. Events that arrive in
/// between are kept in `events` (e.g. `RESET`, `MIGRATION`, `SHUTDOWN`).
///
///     let qmp = try QMPClient(socketPath: vm.qmpSocketPath ?? "")
///     _ = try qmp.execute("system_reset")
///     _ = try qmp.execute("migrate", arguments: ["uri": "unix:/tmp/x.sock"])
///     let event = try qmp.waitForEvent("MIGRATION", timeout: .seconds(60)) { ($0["status"] as? String) == "completed" }
final class QMPClient {
    private let fd: Int32
    private var buffer: [UInt8] = []
    /// Events received and not yet consumed by `waitForEvent`, oldest first:
    /// each is the message's `data` object plus `"event": name`.
    private(set) var events: [[String: Any]] = []

    /// Connects (retrying while QEMU creates the socket, up to `timeout`)
    /// and negotiates capabilities.
    init(socketPath: String, timeout: Duration = .seconds(20)) throws {
        let deadline = ContinuousClock.now + timeout
        var connected: Int32 = -1
        while connected < 0 {
            connected = try Self.connect(socketPath)
            if connected >= 0 { break }
            if ContinuousClock.now >= deadline { throw E2EError.timeout("QMP connect to \(socketPath)") }
            usleep(50_000)
        }
        fd = connected
        // No close here when the handshake throws: every stored property is set, so the
        // failed init runs deinit, which closes `fd` (closing it twice could close a
        // descriptor another test's thread has just been given the number of).
        let greeting = try readMessage(timeout: timeout)
        guard greeting["QMP"] != nil else { throw E2EError.failed("QMP: unexpected greeting \(greeting)") }
        _ = try execute("qmp_capabilities", timeout: timeout)
    }

    deinit { Glibc.close(fd) }

    /// Runs `command` and returns its `return` value; throws on an `error` reply.
    @discardableResult
    func execute(_ command: String, arguments: [String: Any]? = nil, timeout: Duration = .seconds(30)) throws -> Any {
        var message: [String: Any] = ["execute": command]
        if let arguments { message["arguments"] = arguments }
        var data = try JSONSerialization.data(withJSONObject: message)
        data.append(contentsOf: Array("\r\n".utf8))
        try send(data)
        let deadline = ContinuousClock.now + timeout
        while true {
            let reply = try readMessage(timeout: deadline - ContinuousClock.now)
            if let value = reply["return"] { return value }
            if let error = reply["error"] as? [String: Any] {
                let cls = error["class"] as? String ?? "?"
                let desc = error["desc"] as? String ?? "?"
                throw E2EError.failed("QMP \(command) failed: \(cls): \(desc)")
            }
            // Anything else is an event, already queued by readMessage.
        }
    }

    /// Waits for an event called `name` (that also satisfies `matching`),
    /// consuming it and any earlier events of the same name that did not match.
    @discardableResult
    func waitForEvent(
        _ name: String, timeout: Duration, matching: ([String: Any]) -> Bool = { _ in true }
    ) throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            while let index = events.firstIndex(where: { ($0["event"] as? String) == name }) {
                let event = events.remove(at: index)
                if matching(event) { return event }
            }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw E2EError.timeout("QMP event \(name)") }
            _ = try readMessage(timeout: left)
        }
    }

    // MARK: - Wire

    /// The next non-event message; events are queued on the way.
    private func readMessage(timeout: Duration) throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                let trimmed = line.filter { $0 != UInt8(ascii: "\r") }
                if trimmed.isEmpty { continue }
                guard let object = try JSONSerialization.jsonObject(with: Data(trimmed)) as? [String: Any] else {
                    throw E2EError.failed("QMP: not an object: \(String(decoding: trimmed, as: UTF8.self))")
                }
                if let event = object["event"] as? String {
                    var entry = object["data"] as? [String: Any] ?? [:]
                    entry["event"] = event
                    events.append(entry)
                    continue
                }
                return object
            }
            try receive(deadline: deadline)
        }
    }

    private func receive(deadline: ContinuousClock.Instant) throws {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { throw E2EError.timeout("QMP reply") }
        let ms = max(1, Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, ms)
        if ready < 0 {
            if errno == EINTR { return }
            throw E2EError.system("poll", errno)
        }
        if ready == 0 { return }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR || errno == EAGAIN { return }
            throw E2EError.system("read", errno)
        }
        if count == 0 { throw E2EError.failed("QMP: connection closed") }
        buffer.append(contentsOf: chunk[..<count])
    }

    private func send(_ data: Data) throws {
        var bytes = [UInt8](data)
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw E2EError.system("send", errno)
            }
            bytes.removeFirst(sent)
        }
    }

    /// A connected socket, -1 if nobody listens yet, or throws on other errors.
    private static func connect(_ path: String) throws -> Int32 {
        do {
            return try UnixSocket.connect(path: path).rawValue
        } catch let error {
            if error.rawValue == ENOENT || error.rawValue == ECONNREFUSED { return -1 }
            throw E2EError.system("connect \(path)", error.rawValue)
        }
    }
}
