import Glibc
import JSONRPC
import Logging
import Posix

/// The JSON-RPC socket (docs/PROTOCOL-NOTES.md, "Framing"): requests are JSON
/// values back to back with no framing; each gets one response line, in
/// order. Runs on the control loop; a client that sends garbage, too much, or
/// never reads is dropped.
///
/// A method may answer later (one that waits for queues to drain): its
/// client's next requests wait, unread, until it has; other clients are
/// served meanwhile.
final class RPCServer: ReservedListener {
    /// Serves `request`; calls `respond` exactly once, now or later, on the control loop.
    typealias Handler = (_ request: RPCRequest, _ respond: @escaping (Result<JSON, RPCError>) -> Void) -> Void

    /// A client's unread responses may not exceed this; then it is dropped.
    static let maxPendingOutput = 16 << 20
    /// Most connected clients; a connection beyond this is closed at once.
    static let maxClients = 1024
    /// Connections accepted per turn of the control loop. The listener is
    /// level-triggered, so the rest wait for the next turn, and the clients
    /// already accepted, closed ones included, get theirs in between:
    /// draining a backlog of 2,000 connections at once, on a busy machine,
    /// filled the table with connections whose peers had gone and refused a
    /// live client at the limit.
    static let acceptsPerTurn = 64

    private let path: String
    let listener: FileDescriptor
    private(set) var listenToken: EventLoop.Token?
    private let loop: EventLoop
    let logger: Logger
    private let handler: Handler
    private var clients: [FileDescriptor: Client] = [:]
    /// accept(2) out of descriptors: the daemon's shared reserve takes the
    /// waiting connection off the queue, so the level-triggered listener does not spin.
    private let reserve: ListenerReserve
    let peerKind = "RPC client"

    /// One connection's buffers.
    private final class Client {
        let fd: FileDescriptor
        var token: EventLoop.Token?
        var decoder = JSONStreamDecoder()
        var output: [UInt8] = []
        var outputOffset = 0
        /// Close once the output is written (after a parse error or an oversized request).
        var closeAfterFlush = false
        /// A request is being served; later ones wait in the socket.
        var awaitingReply = false
        /// The client shut down its writing side (`nc -N`, `socat`): it is
        /// answered what it sent, then closed.
        var inputClosed = false
        var hasPendingOutput: Bool { outputOffset < output.count }
        /// Whether its next requests are read now.
        var readsInput: Bool { !awaitingReply && !closeAfterFlush && !inputClosed }
        init(fd: FileDescriptor) { self.fd = fd }
    }

    /// Whether a request's answer came before its handler returned.
    private final class Answer {
        var given = false
        var deferred = false
    }

    /// Listens on `path` with permission bits `mode` and, when given, group `group`.
    init(path: String, mode: mode_t = 0o600, group: gid_t? = nil, loop: EventLoop, logger: Logger,
         reserve: ListenerReserve, handler: @escaping Handler) throws(TargetStartError) {
        self.path = path
        self.loop = loop
        self.logger = logger
        self.reserve = reserve
        self.handler = handler
        do {
            listener = try UnixSocket.listen(path: path, mode: mode)
        } catch {
            throw TargetStartError("cannot listen on \(path): \(error)")
        }
        if let group {
            do {
                try SocketAccess.setGroup(path: path, gid: group)
            } catch {
                listener.close()
                FileSystem.removeFile(path)
                throw TargetStartError("cannot give \(path) to group \(group): \(error)")
            }
        }
        do {
            listenToken = try loop.register(listener, events: .readable) { [unowned self] _ in acceptClients() }
        } catch {
            listener.close()
            throw TargetStartError("cannot watch \(path): \(error)")
        }
    }

    /// Stops accepting, drops every client and removes the socket file.
    func close() {
        if let listenToken { loop.unregister(listenToken) }
        listenToken = nil
        for client in clients.values { drop(client) }
        listener.close()
        FileSystem.removeFile(path)
    }

    private func acceptClients() {
        for _ in 0..<Self.acceptsPerTurn {
            let fd: FileDescriptor?
            do { fd = try UnixSocket.accept(listener) } catch {
                if reserve.acceptFailed(self, error) { continue }
                return
            }
            guard let fd else { return }
            guard clients.count < Self.maxClients else {
                logger.warning("RPC client limit (\(Self.maxClients)) reached; closing a new connection")
                fd.close()
                continue
            }
            do {
                try fd.setNonBlocking()
                let client = Client(fd: fd)
                client.token = try loop.register(fd, events: .readable) { [unowned self, weak client] events in
                    // flush or read may drop (and free) the client: look again after each.
                    guard let client else { return }
                    if events.contains(.writable) { flush(client) }
                    guard clients[client.fd] === client else { return }
                    if !events.isDisjoint(with: [.closed, .error]) {
                        drop(client)  // nothing can reach it any more
                    } else if client.readsInput && !events.isDisjoint(with: [.readable, .hangup]) {
                        read(client)
                    }
                }
                clients[fd] = client
            } catch {
                fd.close()
            }
        }
    }

    private func read(_ client: Client) {
        guard clients[client.fd] === client else { return }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n: Int
        do {
            n = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> Int in try client.fd.read(into: raw) }
            }.get()
        } catch {
            if error != .EAGAIN { drop(client) }
            return
        }
        if n == 0 {
            // End of input: every request it sent has been decoded; once
            // their answers are written it is closed.
            client.inputClosed = true
            flush(client)
            return
        }
        guard n > 0 else { return }
        if client.closeAfterFlush { return }  // ignore input after a fatal error
        buffer.withUnsafeBytes { client.decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        decode(client)
        flush(client)
    }

    private func decode(_ client: Client) {
        while !client.closeAfterFlush && !client.awaitingReply {
            switch client.decoder.next() {
            case .needMoreInput:
                return
            case .parseError(let why):
                logger.info("RPC client sent malformed JSON (\(why)); closing it")
                send(RPCResponse.error(id: nil, RPCError(code: -32700, message: "Parse error: \(why)")), to: client)
                client.closeAfterFlush = true
            case .tooLarge:
                logger.info("RPC request exceeds \(JSONStreamDecoder.defaultMaxBytes) bytes; closing the client")
                send(RPCResponse.error(id: nil, RPCError(code: -32600, message: "Request exceeds \(JSONStreamDecoder.defaultMaxBytes) bytes")), to: client)
                client.closeAfterFlush = true
            case .value(let json):
                let request: RPCRequest
                do {
                    request = try RPCRequest(json)
                } catch {
                    send(RPCResponse.error(id: RPCRequest.responseID(for: json), error), to: client)
                    continue
                }
                serve(request, from: client)
            }
        }
    }

    /// Runs the handler; an answer that comes later is sent then, and the
    /// client's next requests are read after it.
    private func serve(_ request: RPCRequest, from client: Client) {
        let answer = Answer()
        handler(request) { [weak self, weak client] result in
            guard !answer.given else { return }
            answer.given = true
            guard let self, let client, clients[client.fd] === client else { return }
            if !request.isNotification {
                switch result {
                case .success(let value): send(RPCResponse.result(id: request.id, value), to: client)
                case .failure(let error): send(RPCResponse.error(id: request.id, error), to: client)
                }
            }
            guard answer.deferred else { return }
            client.awaitingReply = false
            decode(client)
            flush(client)  // watches for input again, unless another answer is awaited
        }
        if !answer.given {
            answer.deferred = true
            client.awaitingReply = true
        }
    }

    private func send(_ text: String, to client: Client) {
        client.output.append(contentsOf: Array(text.utf8))
        if client.output.count - client.outputOffset > Self.maxPendingOutput {
            logger.warning("RPC client does not read its responses; dropping it")
            client.closeAfterFlush = true  // stops the decode loop
            drop(client)
        }
    }

    private func flush(_ client: Client) {
        guard clients[client.fd] === client else { return }
        while client.outputOffset < client.output.count {
            let n: Int
            do {
                n = try client.output.withUnsafeBytes { raw in
                    Result { () throws(Errno) -> Int in
                        try client.fd.send(UnsafeRawBufferPointer(rebasing: raw[client.outputOffset...]), flags: Int32(MSG_NOSIGNAL))
                    }
                }.get()
            } catch {
                if error == .EAGAIN { break }
                drop(client)
                return
            }
            client.outputOffset += n
        }
        if !client.hasPendingOutput {
            client.output.removeAll(keepingCapacity: true)
            client.outputOffset = 0
            if client.closeAfterFlush || (client.inputClosed && !client.awaitingReply) {
                drop(client)
                return
            }
        }
        watch(client)
    }

    /// Watches for what the client can do next: input only when its requests
    /// are read (none awaits an answer, none failed, its input is open), and
    /// room in the socket while output is pending. A half-close is reported
    /// only then too: else it would be reported again and again.
    private func watch(_ client: Client) {
        guard let token = client.token else { return }
        let output: EventLoop.Events = client.hasPendingOutput ? .writable : []
        if client.readsInput {
            loop.modify(token, events: output.union(.readable))
        } else {
            loop.modify(token, events: output, reportHalfClose: false)
        }
    }

    private func drop(_ client: Client) {
        guard clients.removeValue(forKey: client.fd) != nil else { return }
        if let token = client.token { loop.unregister(token) }
        client.fd.close()
    }
}
