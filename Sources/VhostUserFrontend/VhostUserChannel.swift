import Glibc
import Posix
import VhostUser

/// A reply as read off the socket, checked only for framing.
public struct RawReply: Sendable {
    public var header: VhostUserHeader
    public var body: [UInt8]
    /// Descriptors that came with it; the caller owns them.
    public var fds: [FileDescriptor]
}

/// The front end's end of a vhost-user socket: sends requests (with any fds,
/// even malformed bytes) and reads replies with a deadline, strictly checking
/// that each reply has flags 0x5 and the request number it answers.
public final class VhostUserChannel: @unchecked Sendable {  // used by one thread at a time (the test driving it)
    public let socket: FileDescriptor
    public var timeout: Duration
    private var buffer: [UInt8] = []
    private var bufferedFDs: [FileDescriptor] = []
    private var closed = false

    /// Connects to the back end at `path`.
    public init(path: String, timeout: Duration = .seconds(5)) throws(FrontendError) {
        do {
            socket = try UnixSocket.connect(path: path)
        } catch {
            throw .system(error)
        }
        self.timeout = timeout
    }

    /// Wraps a connected socket (takes ownership).
    public init(socket: FileDescriptor, timeout: Duration = .seconds(5)) {
        self.socket = socket
        self.timeout = timeout
    }

    /// Closes the socket and any fds received and not yet taken. Once: a
    /// second call does nothing (closing the number again could close a
    /// descriptor another thread has been given since).
    public func close() {
        guard !closed else { return }
        closed = true
        bufferedFDs.closeAll()
        bufferedFDs = []
        socket.close()
    }

    /// Sends `message` (its fds ride with the header). The fds stay owned by the caller.
    public func send(_ message: VhostUserMessage) throws(FrontendError) {
        try sendRaw(message.encoded(), fds: message.fds)
    }

    /// Sends arbitrary bytes with arbitrary fds in one message (malformed-input tests).
    public func sendRaw(_ bytes: [UInt8], fds: [FileDescriptor] = []) throws(FrontendError) {
        do {
            try UnixSocket.sendAll(socket, bytes, fds: fds)
        } catch {
            if error == Errno(EPIPE) || error == Errno(ECONNRESET) { throw .peerClosed }
            throw .system(error)
        }
    }

    /// Reads the next reply and checks flags == 0x5, the request number and (if given) the size.
    public func receiveReply(
        to request: VhostUserRequest, expectedSize: Int? = nil, timeout: Duration? = nil
    ) throws(FrontendError) -> RawReply {
        let reply = try receiveAny(timeout: timeout ?? self.timeout)
        guard reply.header.flags == VhostUserHeader.replyFlags else {
            reply.fds.closeAll()
            throw .protocolViolation("\(request.name) reply has flags 0x\(String(reply.header.flags, radix: 16)), expected 0x5")
        }
        guard reply.header.request == request else {
            reply.fds.closeAll()
            throw .protocolViolation("expected a \(request.name) reply, got \(reply.header.request.name)")
        }
        if let expectedSize, reply.body.count != expectedSize {
            reply.fds.closeAll()
            throw .protocolViolation("\(request.name) reply is \(reply.body.count) bytes, expected \(expectedSize)")
        }
        return reply
    }

    /// Reads a u64 reply.
    public func receiveU64(to request: VhostUserRequest) throws(FrontendError) -> UInt64 {
        let reply = try receiveReply(to: request, expectedSize: 8)
        reply.fds.closeAll()
        return reply.body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    /// Sends a request without fds and returns its u64 reply.
    public func requestU64(_ request: VhostUserRequest) throws(FrontendError) -> UInt64 {
        try send(VhostUserMessage(request: request))
        return try receiveU64(to: request)
    }

    /// Sends `message`; with `ack` it sets NEED_REPLY and requires a zero u64 answer.
    public func send(_ message: VhostUserMessage, ack: Bool) throws(FrontendError) {
        var m = message
        if ack { m.header.flags |= VhostUserHeader.flagNeedReply }
        try send(m)
        guard ack else { return }
        let value = try receiveU64(to: m.request)
        guard value == 0 else { throw .nack(m.request, value) }
    }

    /// Whether the back end has closed the connection (EOF within `timeout`).
    public func waitForClose(timeout: Duration) -> Bool {
        let deadline = Deadline(timeout)
        while !deadline.expired {
            guard let ready = try? socket.poll(Int16(POLLIN), timeoutMilliseconds: deadline.remainingMilliseconds), ready != 0 else {
                continue
            }
            var byte: UInt8 = 0
            do {
                let n = try withUnsafeMutableBytes(of: &byte) { raw in
                    Result { () throws(Errno) -> Int in try socket.receive(into: raw, flags: Int32(MSG_DONTWAIT)) }
                }.get()
                if n == 0 { return true }
            } catch {
                if error != .EAGAIN { return true }
            }
        }
        return false
    }

    /// Reads one framed message (header + size bytes) before the deadline.
    public func receiveAny(timeout: Duration) throws(FrontendError) -> RawReply {
        let deadline = Deadline(timeout)
        while true {
            if let header = VhostUserHeader(parsing: buffer) {
                guard header.size <= UInt32(VhostUserMessageReader.maxPayloadSize) else {
                    throw .protocolViolation("reply payload of \(header.size) bytes")
                }
                let total = VhostUserHeader.byteSize + Int(header.size)
                if buffer.count >= total {
                    let body = Array(buffer[VhostUserHeader.byteSize..<total])
                    buffer.removeFirst(total)
                    let fds = bufferedFDs
                    bufferedFDs = []
                    return RawReply(header: header, body: body, fds: fds)
                }
            }
            if deadline.expired { throw .timeout("a vhost-user reply") }
            guard let ready = try? socket.poll(Int16(POLLIN), timeoutMilliseconds: deadline.remainingMilliseconds), ready != 0 else {
                continue
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let received: UnixSocket.Received
            do {
                received = try chunk.withUnsafeMutableBytes { raw in
                    Result { () throws(Errno) -> UnixSocket.Received in try UnixSocket.receive(socket, into: raw) }
                }.get()
            } catch {
                if error == Errno(ECONNRESET) { throw .peerClosed }
                throw .system(error)
            }
            guard received.count > 0 else {
                received.fds.closeAll()
                throw .peerClosed
            }
            buffer.append(contentsOf: chunk.prefix(received.count))
            bufferedFDs.append(contentsOf: received.fds)
        }
    }
}
