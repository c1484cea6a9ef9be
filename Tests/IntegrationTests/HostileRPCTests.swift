import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing

/// Hostile JSON-RPC clients against the real daemon (issue 5 part 4;
/// docs/PROTOCOL-NOTES.md, "The JSON-RPC socket"): every one gets a bounded
/// answer or is dropped, and another client is still served correctly and
/// quickly afterwards.
@Suite("Hostile RPC clients against the running daemon")
struct HostileRPCTests {
    // MARK: Helpers

    /// A daemon with one bdev, so health checks can compare a real answer.
    static func start() throws -> DaemonProcess {
        let daemon = try DaemonProcess()
        try daemon.call("bdev_null_create", ["name": "Null0", "num_blocks": 64, "block_size": 512])
        return daemon
    }

    /// The daemon is alive and a fresh client gets correct answers within a second.
    static func expectHealthy(_ daemon: DaemonProcess, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(daemon.isRunning, "daemon died; log:\n\(daemon.log.suffix(3000))", sourceLocation: sourceLocation)
        let start = ContinuousClock.now
        do {
            let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(5))
            let version = try client.call("spdk_get_version", params: nil)
            #expect(version["version"]?.stringValue?.hasPrefix("vhost-blkd") == true, sourceLocation: sourceLocation)
            let bdevs = try client.call("bdev_get_bdevs", params: nil)
            #expect(bdevs.arrayValue?.compactMap { $0["name"]?.stringValue } == ["Null0"], sourceLocation: sourceLocation)
        } catch {
            Issue.record("healthy client failed: \(error); log:\n\(daemon.log.suffix(3000))", sourceLocation: sourceLocation)
        }
        #expect(ContinuousClock.now - start < .seconds(1), "health check was slow", sourceLocation: sourceLocation)
    }

    /// Open descriptors of `pid` (/proc/PID/fd).
    static func fdCount(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// Waits up to 5 s for the daemon's fd count to come back to `baseline`.
    static func expectFDsBack(to baseline: Int, _ daemon: DaemonProcess, sourceLocation: SourceLocation = #_sourceLocation) {
        let deadline = ContinuousClock.now + .seconds(5)
        var count = fdCount(daemon.pid)
        while count > baseline && ContinuousClock.now < deadline {
            usleep(20_000)
            count = fdCount(daemon.pid)
        }
        #expect(count <= baseline, "daemon holds \(count) fds, baseline \(baseline)", sourceLocation: sourceLocation)
    }

    /// Sends `text` on a fresh connection and reads one response.
    static func exchange(_ daemon: DaemonProcess, _ bytes: [UInt8]) throws -> (JSON, RPCClient) {
        let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(10))
        try client.sendRaw(bytes)
        return (try client.readResponse(), client)
    }

    /// After a fatal error reply, the daemon closes the connection.
    static func expectClosed(_ client: RPCClient, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let extra = try client.readResponse()
            Issue.record("expected the connection to close, got \(extra)", sourceLocation: sourceLocation)
        } catch RPCClientError.closed {
        } catch RPCClientError.io(_, let code) where code == ECONNRESET {
        } catch {
            Issue.record("expected a close, got \(error)", sourceLocation: sourceLocation)
        }
    }

    static func request(_ method: String, id: JSON = 1, params: String? = nil) -> String {
        var text = "{\"jsonrpc\":\"2.0\",\"id\":\(id.encoded()),\"method\":\"\(method)\""
        if let params { text += ",\"params\":\(params)" }
        return text + "}"
    }

    // MARK: 1. Malformed and deeply nested JSON

    /// Malformed or too deeply nested inputs, by name (the texts are too big to print as test arguments).
    static let malformed: [String: String] = [
        "trailing comma": "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"spdk_get_version\",}",
        "bad literal": "{\"jsonrpc\":\"2.0\",\"id\":tru}",
        "stray close": "}",
        "binary garbage": "\u{01}\u{02}\u{7f}",
        "bad unicode escape": "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\\uZZZZ\"}",
        "mismatched brackets": "[1, 2}",
        "100000 nested arrays": String(repeating: "[", count: 100_000),
        "100000 nested objects": String(repeating: "{\"a\":", count: 100_000),
        "100000 nested, balanced": String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000),
        "100000 nested params": request("spdk_get_version", params: String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)),
    ]

    @Test(arguments: malformed.keys.sorted())
    func malformedJSONGetsParseErrorAndClose(label: String) throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(10))
        try? client.sendRaw(Array((Self.malformed[label] ?? "").utf8))  // the daemon may hang up before all is sent
        let response = try client.readResponse()
        #expect(response["error"]?["code"] == .int(-32700), "\(label): \(response)")
        #expect(response["id"] == .null, "\(label)")
        Self.expectClosed(client)
        #expect(daemon.log.contains("malformed JSON"), "\(label)")
        Self.expectHealthy(daemon)
    }

    @Test func nestingAtTheLimitIsParsed() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        // The envelope is level 1; params nest 62 more: 63 < 64 allowed.
        let params = String(repeating: "[", count: 62) + String(repeating: "]", count: 62)
        let (response, client) = try Self.exchange(daemon, Array(Self.request("spdk_get_version", id: 7, params: params).utf8))
        #expect(response["id"] == .int(7))
        #expect(response["error"]?["code"]?.intValue != -32700)
        // The connection stays usable.
        try client.sendRaw(Array(Self.request("spdk_get_version", id: 8).utf8))
        #expect(try client.readResponse()["result"]?["version"] != nil)
        Self.expectHealthy(daemon)
    }

    // MARK: 2. Huge strings

    @Test func stringJustUnderTheLimitIsAnswered() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        let envelope = Self.request("bdev_get_bdevs", params: "{\"name\":\"\"}")
        let filler = String(repeating: "x", count: JSONStreamDecoder.defaultMaxBytes - envelope.utf8.count - 16)
        let text = Self.request("bdev_get_bdevs", params: "{\"name\":\"\(filler)\"}")
        #expect(text.utf8.count < JSONStreamDecoder.defaultMaxBytes)
        let start = ContinuousClock.now
        let (response, client) = try Self.exchange(daemon, Array(text.utf8))
        #expect(response["id"] == .int(1))
        #expect(response["error"]?["code"]?.intValue != nil, "no bdev has that name")
        #expect(ContinuousClock.now - start < .seconds(5))
        // A method name just under the limit: -32601, the connection stays open.
        let longName = String(repeating: "m", count: JSONStreamDecoder.defaultMaxBytes - 100)
        try client.sendRaw(Array(Self.request(longName, id: 2).utf8))
        let unknown = try client.readResponse()
        #expect(unknown["error"]?["code"] == .int(-32601))
        #expect(unknown["id"] == .int(2))
        try client.sendRaw(Array(Self.request("spdk_get_version", id: 3).utf8))
        #expect(try client.readResponse()["id"] == .int(3))
        Self.expectHealthy(daemon)
    }

    static let oversized: [String: String] = [
        "string over the limit": "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"" + String(repeating: "s", count: (1 << 20) + 10) + "\"}",
        "unterminated string": "\"" + String(repeating: "u", count: 3 << 20),
        "whitespace flood": String(repeating: " ", count: 3 << 20),
        "array of many numbers": "[" + String(repeating: "1,", count: 700_000) + "1]",
    ]

    @Test(arguments: oversized.keys.sorted())
    func valueOverTheLimitIsRefusedAndClosed(label: String) throws {
        let text = Self.oversized[label] ?? ""
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(10))
        try? client.sendRaw(Array(text.utf8))  // the daemon may close before all is sent
        if label == "whitespace flood" {
            // Whitespace between values is not part of one: it is dropped, the
            // connection stays and a request after it is answered.
            try client.sendRaw(Array(Self.request("spdk_get_version", id: 4).utf8))
            #expect(try client.readResponse()["id"] == .int(4))
        } else {
            let response = try client.readResponse()
            #expect(response["error"]?["code"] == .int(-32600), "\(label): \(response)")
            Self.expectClosed(client)
        }
        Self.expectHealthy(daemon)
    }

    // MARK: 3. Wrong envelopes, types, methods and params

    @Test func wrongTypesUnknownMethodsAndParamsAreAnswered() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(10))
        let cases: [(String, Int, JSON)] = [
            // Envelope (-32600), with the id echoed when it is usable.
            ("[]", -32600, .null),
            ("[" + Self.request("spdk_get_version") + "," + Self.request("bdev_get_bdevs", id: 2) + "]", -32600, .null),
            ("42", -32600, .null),
            ("\"spdk_get_version\"", -32600, .null),
            ("null", -32600, .null),
            ("{\"jsonrpc\":\"1.0\",\"id\":5,\"method\":\"spdk_get_version\"}", -32600, .int(5)),
            ("{\"id\":6,\"method\":\"spdk_get_version\"}", -32600, .int(6)),
            ("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":[\"spdk_get_version\"]}", -32600, .int(7)),
            ("{\"jsonrpc\":\"2.0\",\"id\":{\"x\":1},\"method\":\"spdk_get_version\"}", -32600, .null),
            ("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"spdk_get_version\",\"params\":\"x\"}", -32600, .int(8)),
            ("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"spdk_get_version\",\"extra\":1}", -32600, .int(9)),
            // Methods (-32601).
            (Self.request("no_such_method", id: 10), -32601, .int(10)),
            (Self.request("", id: "eleven"), -32601, .string("eleven")),
            // Params (-32602).
            (Self.request("bdev_null_create", id: 13, params: "{\"name\":\"N1\",\"num_blocks\":\"eight\",\"block_size\":512}"), -32602, .int(13)),
            (Self.request("bdev_null_create", id: 14, params: "{\"name\":7,\"num_blocks\":8,\"block_size\":512}"), -32602, .int(14)),
            (Self.request("bdev_null_create", id: 15, params: "{\"name\":\"N1\",\"num_blocks\":-8,\"block_size\":512}"), -32602, .int(15)),
            (Self.request("bdev_null_create", id: 16, params: "{\"name\":\"N1\",\"num_blocks\":1.5,\"block_size\":512}"), -32602, .int(16)),
            (Self.request("bdev_null_create", id: 17, params: "{\"name\":\"N1\",\"num_blocks\":8,\"block_size\":512,\"bogus\":true}"), -32602, .int(17)),
            (Self.request("bdev_malloc_create", id: 18, params: "[2048, 512]"), -32602, .int(18)),
            (Self.request("bdev_malloc_create", id: 19, params: "{\"num_blocks\":null,\"block_size\":512}"), -32602, .int(19)),
            (Self.request("vhost_create_blk_controller", id: 20, params: "{\"ctrlr\":{\"a\":1},\"dev_name\":\"Null0\"}"), -32602, .int(20)),
            (Self.request("bdev_get_bdevs", id: 21, params: "{\"name\":[\"Null0\"]}"), -32602, .int(21)),
        ]
        for (text, code, id) in cases {
            try client.sendRaw(Array((text + "\n").utf8))  // a bare number ends only at the next byte
            let response = try client.readResponse()
            #expect(response["error"]?["code"] == .int(Int64(code)), "\(text.prefix(120)): \(response)")
            #expect(response["id"] == id, "\(text.prefix(120)): \(response)")
        }
        // Huge and odd numbers: answered, never fatal.
        for value in ["9223372036854775807", "1e300", "-0", "18446744073709551616"] {
            try client.sendRaw(Array(Self.request("bdev_null_create", id: 30, params: "{\"name\":\"N2\",\"num_blocks\":\(value),\"block_size\":512}").utf8))
            let response = try client.readResponse()
            if response["error"]?["code"] == .int(-32700) {
                // jansson refuses integers beyond 64 bits: a parse error ends the connection.
                Self.expectClosed(client)
                break
            }
            #expect(response["id"] == .int(30), "\(value): \(response)")
            #expect(response["error"] != nil, "\(value): \(response)")
        }
        #expect(try daemon.call("bdev_get_bdevs").arrayValue?.count == 1, "no bad request created a bdev")
        Self.expectHealthy(daemon)
    }

    // MARK: 4. Connection storms

    @Test func thousandsOfConnectionsOpenedAndDropped() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        Self.expectHealthy(daemon)
        let baseline = Self.fdCount(daemon.pid)
        #expect(baseline > 0)
        let half = Array(Self.request("spdk_get_version").utf8.prefix(20))
        let full = Array(Self.request("spdk_get_version").utf8)
        for i in 0..<2000 {
            let fd = try UnixSocket.connect(path: daemon.rpcSocket)
            switch i % 4 {
            case 1: try? UnixSocket.sendAll(fd, half)  // half a request, then gone
            case 2: try? UnixSocket.sendAll(fd, full)  // a request whose answer nobody reads
            case 3:
                // Reset instead of an orderly close.
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(fd.rawValue, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            default: break
            }
            fd.close()
        }
        Self.expectHealthy(daemon)
        Self.expectFDsBack(to: baseline, daemon)
    }

    @Test func manyConcurrentIdleConnections() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        Self.expectHealthy(daemon)
        let baseline = Self.fdCount(daemon.pid)
        var idle: [FileDescriptor] = []
        defer { idle.forEach { $0.close() } }
        for _ in 0..<500 { idle.append(try UnixSocket.connect(path: daemon.rpcSocket)) }
        // Some idle ones hold a partial request.
        for fd in idle.prefix(100) { try UnixSocket.sendAll(fd, Array("{\"jsonrpc\":\"2.0\",".utf8)) }
        Self.expectHealthy(daemon)
        // An idle one may finish its request late and still be answered.
        let late = idle[0]
        try UnixSocket.sendAll(late, Array("\"id\":99,\"method\":\"spdk_get_version\"}".utf8))
        var buffer = [UInt8](repeating: 0, count: 4096)
        var pfd = pollfd(fd: late.rawValue, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 5000) == 1)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(late.rawValue, $0.baseAddress, $0.count) }
        let reply = n > 0 ? (try? JSON.parse(Array(buffer.prefix(n)))) : nil
        #expect(reply?["id"] == .int(99))
        #expect(Self.fdCount(daemon.pid) >= baseline + 490)

        // Past the daemon's client limit (1024) new connections are closed at once.
        for _ in 0..<600 { idle.append(try UnixSocket.connect(path: daemon.rpcSocket)) }
        usleep(500_000)
        var closedByDaemon = 0
        for fd in idle {
            var p = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 0) == 1, p.revents & Int16(POLLHUP) != 0 { closedByDaemon += 1 }
        }
        #expect((1100 - 1024)...(1100 - 1024 + 2) ~= closedByDaemon, "\(closedByDaemon) connections closed")
        #expect(daemon.log.contains("client limit"))
        #expect(daemon.isRunning)
        idle.forEach { $0.close() }
        idle = []
        Self.expectFDsBack(to: baseline, daemon)
        Self.expectHealthy(daemon)
    }

    // MARK: 5. Slow and greedy clients

    /// A client may send its requests, shut down its writing side (as
    /// `nc -N` and `socat` do) and read: it gets every answer, in order,
    /// then end of file, also when the first answer waits for a queue to
    /// drain (a forced delete of a controller with a frontend).
    @Test func halfClosedClientGetsEveryAnswerThenEOF() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        let f = try HostileFrontendTests.startedFrontend(daemon.socketDirectory + "/vhost.0")
        defer { f.close(); f.memory.close() }
        #expect(try HostileFrontendTests.roundTrip(f))

        let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(10))
        let text = Self.request("vhost_delete_controller", id: 1, params: #"{"ctrlr":"vhost.0","force":true}"#)
            + Self.request("spdk_get_version", id: 2) + Self.request("vhost_get_controllers", id: 3)
        try client.sendRaw(Array(text.utf8))
        client.shutdownWrite()
        let answers = try (1...3).map { _ in try client.readResponse() }
        #expect(answers.map { $0["id"] } == [1, 2, 3])
        #expect(answers[0]["result"] == true, "\(answers[0])")
        #expect(answers[1]["result"]?["version"] != nil)
        #expect(answers[2]["result"] == .array([]))
        Self.expectClosed(client)  // the daemon closed it once answered
        try daemon.call("bdev_malloc_delete", ["name": "M0"])  // released by the deleted controller
        Self.expectHealthy(daemon)
    }

    @Test func clientThatNeverReadsIsDroppedAndOthersAreServed() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        Self.expectHealthy(daemon)
        let baseline = Self.fdCount(daemon.pid)
        let fd = try UnixSocket.connect(path: daemon.rpcSocket)
        // Closed once: on the way out, or below before the fds are counted (a second
        // close could hit a descriptor another test has been given since).
        var fdOpen = true
        defer { if fdOpen { fd.close() } }
        try fd.setNonBlocking()
        // Many requests whose (larger) answers are never read.
        let batch = Array(String(repeating: Self.request("rpc_get_methods"), count: 256).utf8)
        var sent = 0
        var dropped = false
        var checkedWhileFlooding = false
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(60) {
            let n = batch.withUnsafeBytes { Glibc.send(fd.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
                if !checkedWhileFlooding && sent > (1 << 20) {
                    // Another client is served while the flood goes on.
                    checkedWhileFlooding = true
                    let t = ContinuousClock.now
                    #expect(try daemon.call("spdk_get_version")["version"] != nil)
                    #expect(ContinuousClock.now - t < .seconds(2))
                }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLOUT), revents: 0)
                _ = poll(&pfd, 1, 100)
                continue
            }
            dropped = true  // EPIPE / ECONNRESET: the daemon hung up
            break
        }
        #expect(dropped, "the daemon kept a client that never reads after \(sent) bytes")
        #expect(sent < 256 << 20)
        #expect(daemon.log.contains("does not read its responses"))
        fd.close()
        fdOpen = false
        Self.expectHealthy(daemon)
        Self.expectFDsBack(to: baseline, daemon)
    }

    @Test func oneByteAtATimeIsAnsweredAndDoesNotBlockOthers() throws {
        let daemon = try Self.start()
        defer { daemon.stop(); daemon.cleanUp() }
        let slow = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(10))
        let text = Array((Self.request("bdev_get_bdevs", id: 77, params: "{\"name\":\"Null0\"}") + "  ").utf8)
        for (i, byte) in text.enumerated() {
            try slow.sendRaw([byte])
            usleep(1000)
            if i == text.count / 2 {
                // Half way through, another client is answered at once.
                let t = ContinuousClock.now
                #expect(try daemon.call("spdk_get_version")["version"] != nil)
                #expect(ContinuousClock.now - t < .milliseconds(500))
            }
        }
        let response = try slow.readResponse()
        #expect(response["id"] == .int(77))
        #expect(response["result"]?.arrayValue?.first?["name"] == .string("Null0"))
        Self.expectHealthy(daemon)
    }
}
