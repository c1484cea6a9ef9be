import Foundation
import Glibc
import Testing

@testable import JSONRPC

/// A one-connection Unix socket server on a background thread: for each
/// request it receives it calls `reply` and writes the bytes it returns,
/// one byte per write to exercise the client's reassembly.
private final class StubServer: @unchecked Sendable {  // fields set before the thread starts
    let path: String
    private let listener: Int32

    init(reply: @escaping @Sendable (JSON) -> [UInt8]?) throws {
        path = "/tmp/jsonrpc-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        unlink(path)
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, __CONST_SOCKADDR_ARG(__sockaddr__: $0), socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 1) == 0 else { throw RPCClientError.connect(path: path, errno: errno) }
        let fd = listener
        Thread.detachNewThread {
            let connection = accept(fd, __SOCKADDR_ARG(__sockaddr__: nil), nil)
            guard connection >= 0 else { return }
            defer { close(connection) }
            var decoder = JSONStreamDecoder()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                if count <= 0 { return }
                decoder.append(contentsOf: Array(buffer[0..<count]))
                while case .value(let request) = decoder.next() {
                    guard let response = reply(request) else { return }
                    for byte in response { _ = withUnsafeBytes(of: byte) { send(connection, $0.baseAddress, 1, 0) } }
                }
            }
        }
    }

    deinit {
        close(listener)
        unlink(path)
    }
}

@Suite struct RPCClientTests {
    @Test func callReturnsResultAndThrowsRPCErrors() throws {
        let server = try StubServer { request in
            let id = request["id"] ?? nil
            switch request["method"]?.stringValue {
            case "ok": return Array(RPCResponse.result(id: id, ["echo": request["params"] ?? nil]).utf8)
            case "fail": return Array(RPCResponse.error(id: id, .errno(19)).utf8)
            default: return nil
            }
        }
        let client = try RPCClient(path: server.path, timeout: .seconds(5))
        #expect(try client.call("ok", params: ["a": 1]) == ["echo": ["a": 1]])
        #expect(try client.call("ok") == ["echo": nil])
        #expect(throws: RPCClientError.rpc(.errno(19))) { try client.call("fail") }
        #expect(try client.call("ok", params: [:]) == ["echo": nil])
        #expect(throws: RPCClientError.closed(partial: 0)) { try client.call("close") }
    }

    @Test func rawBytesAndResponses() throws {
        let server = try StubServer { request in Array((request.encoded(pretty: true)).utf8) }
        let client = try RPCClient(path: server.path, timeout: .seconds(5))
        try client.sendRaw(Array(#"{"x": [1, 2]}{"y""#.utf8))
        #expect(try client.readResponse() == ["x": [1, 2]])
        try client.sendRaw(Array(#":true}"#.utf8))
        #expect(try client.readResponse() == ["y": true])
    }

    @Test func timeoutWhenNoReply() throws {
        let server = try StubServer { _ in [] }
        let client = try RPCClient(path: server.path, timeout: .milliseconds(200))
        #expect(throws: RPCClientError.timeout) { try client.call("anything") }
    }

    @Test func connectFailure() {
        #expect(throws: RPCClientError.connect(path: "/nonexistent/sock", errno: ENOENT)) {
            try RPCClient(path: "/nonexistent/sock", timeout: .seconds(1))
        }
        let long = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: RPCClientError.connect(path: long, errno: ENAMETOOLONG)) {
            try RPCClient(path: long, timeout: .seconds(1))
        }
    }
}
