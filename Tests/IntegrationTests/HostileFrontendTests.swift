import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing

/// Raw vhost-user bytes from a frontend that does not play by the rules.
@Suite("Hostile frontends against the running daemon")
struct HostileFrontendTests {
    /// A 12-byte vhost-user header (request, flags = version 1, size), little endian.
    static func header(request: UInt32, size: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        for value in [request, 1, size] { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        return bytes
    }

    static func startWithController() throws -> DaemonProcess {
        let daemon = try DaemonProcess()
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        return daemon
    }

    /// Reads up to `count` bytes, waiting at most `seconds`; returns what arrived (empty on close).
    static func read(_ fd: FileDescriptor, count: Int, seconds: Int32 = 5) -> [UInt8] {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, seconds * 1000) == 1 else { return [] }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd.rawValue, $0.baseAddress, count) }
        return n > 0 ? Array(buffer.prefix(n)) : []
    }

    @Test func dribbledHeaderDoesNotHoldTheControlLoop() throws {
        let daemon = try Self.startWithController()
        defer { daemon.stop(); daemon.cleanUp() }
        let fd = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        defer { fd.close() }
        let getFeatures = Self.header(request: 1, size: 0)
        try UnixSocket.sendAll(fd, Array(getFeatures.prefix(5)))
        // Half a message is pending: RPC must still answer at once.
        let start = ContinuousClock.now
        #expect(try daemon.call("spdk_get_version")["version"] != nil)
        #expect(ContinuousClock.now - start < .milliseconds(500))
        try UnixSocket.sendAll(fd, Array(getFeatures.dropFirst(5)))
        let reply = Self.read(fd, count: 20)
        #expect(reply.count == 20)
        #expect(Array(reply.prefix(4)) == [1, 0, 0, 0])   // GET_FEATURES
        #expect(Array(reply[4..<8]) == [5, 0, 0, 0])      // flags: version | REPLY
        #expect(Array(reply[8..<12]) == [8, 0, 0, 0])     // a u64 payload
    }

    @Test(arguments: [
        ("oversized payload", header(request: 5, size: 1 << 20)),
        ("wrong payload size", header(request: 8, size: 3) + [0, 0, 0]),
        ("queue index beyond the controller", header(request: 8, size: 8) + [0xff, 0, 0, 0, 128, 0, 0, 0]),
        ("bad version", [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]),
    ])
    func protocolErrorsDisconnectOnlyThatFrontend(label: String, bytes: [UInt8]) throws {
        let daemon = try Self.startWithController()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M1"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.1", "dev_name": "M1"])
        let bystander = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.1")
        defer { bystander.close() }

        let fd = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        defer { fd.close() }
        try UnixSocket.sendAll(fd, bytes)
        #expect(Self.read(fd, count: 64).isEmpty, "\(label): the daemon should close the connection")
        #expect(daemon.log.contains("disconnecting frontend"), "\(label)")
        #expect(daemon.isRunning)
        // The other controller's frontend is still served.
        try UnixSocket.sendAll(bystander, Self.header(request: 1, size: 0))
        #expect(Self.read(bystander, count: 20).count == 20)
        // And a new frontend may connect to the controller that dropped the bad one.
        let again = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        defer { again.close() }
        try UnixSocket.sendAll(again, Self.header(request: 17, size: 0))  // GET_QUEUE_NUM
        #expect(Self.read(again, count: 20).count == 20)
    }
}
