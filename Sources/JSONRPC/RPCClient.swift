import Glibc

/// A blocking JSON-RPC client over a Unix stream socket, for the CLI and
/// tests. One request at a time; responses are read with
/// `JSONStreamDecoder` (docs/PROTOCOL-NOTES.md, "Framing"). Not thread-safe:
/// use from one thread.
public final class RPCClient {
    /// The socket path connected to.
    public let path: String
    /// How long `readResponse` waits for a complete value; nil waits forever.
    public let timeout: Duration?

    private let descriptor: Int32
    private var decoder = JSONStreamDecoder(maxBytes: 256 << 20, maxDepth: 256)
    private var nextID: Int64 = 1

    /// Connects to the Unix socket at `path`.
    public init(path: String, timeout: Duration? = .seconds(60)) throws(RPCClientError) {
        self.path = path
        self.timeout = timeout
        let socketType = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(AF_UNIX, socketType, 0)
        guard fd >= 0 else { throw .connect(path: path, errno: Glibc.errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let fits = withUnsafeMutableBytes(of: &address.sun_path) { raw -> Bool in
            guard pathBytes.count < raw.count, !pathBytes.isEmpty else { return false }
            raw.copyBytes(from: pathBytes)
            return true
        }
        guard fits else {
            close(fd)
            throw .connect(path: path, errno: ENAMETOOLONG)
        }
        let status = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                connect(fd, __CONST_SOCKADDR_ARG(__sockaddr__: generic), socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard status == 0 else {
            let code = Glibc.errno
            close(fd)
            throw .connect(path: path, errno: code)
        }
        descriptor = fd
        if let timeout { Self.setSendTimeout(fd, timeout) }
    }

    deinit {
        close(descriptor)
    }

    /// Calls `method` and returns its result; an error response throws
    /// `.rpc`. `params` nil (or an empty object) sends no params member, as
    /// rpc.py does.
    public func call(_ method: String, params: JSON? = nil) throws(RPCClientError) -> JSON {
        let id = JSON.int(nextID)
        nextID &+= 1
        var sent = params
        if let members = params?.objectValue, members.isEmpty { sent = nil }
        let request = RPCRequest(id: id, method: method, params: sent)
        try sendRaw(Array(request.json.encoded().utf8))
        let response = try readResponse()
        guard case .object(let object) = response else {
            throw .protocolError("response is not an object")
        }
        guard object["id"] == id else {
            throw .protocolError("response id \(object["id"]?.encoded() ?? "missing") does not match \(id.encoded())")
        }
        if let error = object["error"] {
            guard let decoded = RPCError(json: error) else {
                throw .protocolError("malformed error member \(error.encoded())")
            }
            throw .rpc(decoded)
        }
        guard let result = object["result"] else {
            throw .protocolError("response has neither result nor error")
        }
        return result
    }

    /// Sends a notification (no id); no response is read.
    public func notify(_ method: String, params: JSON? = nil) throws(RPCClientError) {
        try sendRaw(Array(RPCRequest(id: nil, method: method, params: params).json.encoded().utf8))
    }

    /// Writes `bytes` as they are (for tests that speak raw protocol).
    public func sendRaw(_ bytes: [UInt8]) throws(RPCClientError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw in
                send(descriptor, raw.baseAddress.map { $0 + offset }, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                let code = Glibc.errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { throw .timeout }
                throw .io(operation: "send", errno: code)
            }
            offset += written
        }
    }

    /// Reads until one complete JSON value has arrived and returns it
    /// (whatever it is). Bytes after it stay buffered for the next call.
    public func readResponse() throws(RPCClientError) -> JSON {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            switch decoder.next() {
            case .value(let value):
                return value
            case .parseError(let message):
                throw .protocolError(message)
            case .tooLarge:
                throw .protocolError("response too large")
            case .needMoreInput:
                break
            }
            try waitReadable(deadline: deadline)
            let count = chunk.withUnsafeMutableBytes { raw in recv(descriptor, raw.baseAddress, raw.count, 0) }
            if count < 0 {
                let code = Glibc.errno
                if code == EINTR || code == EAGAIN { continue }
                throw .io(operation: "recv", errno: code)
            }
            if count == 0 { throw .closed(partial: decoder.bufferedByteCount) }
            chunk.withUnsafeBytes { raw in decoder.append(UnsafeRawBufferPointer(rebasing: raw[0..<count])) }
        }
    }

    /// Stops sending (SHUT_WR); the server sees end of input.
    public func shutdownWrite() {
        _ = shutdown(descriptor, Int32(SHUT_WR))
    }

    private func waitReadable(deadline: ContinuousClock.Instant?) throws(RPCClientError) {
        while true {
            var waitMs: Int32 = -1
            if let deadline {
                let left = deadline - ContinuousClock.now
                if left <= .zero { throw .timeout }
                waitMs = Self.milliseconds(left)
            }
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, waitMs)
            if ready > 0 { return }
            if ready == 0 { throw .timeout }
            let code = Glibc.errno
            if code != EINTR { throw .io(operation: "poll", errno: code) }
        }
    }

    /// `duration` in whole milliseconds, rounded up, capped to Int32.
    private static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        let millis = seconds.multipliedReportingOverflow(by: 1000)
        guard !millis.overflow else { return Int32.max }
        let total = millis.partialValue.addingReportingOverflow(attoseconds / 1_000_000_000_000_000 + 1)
        guard !total.overflow else { return Int32.max }
        return Int32(clamping: max(total.partialValue, 1))
    }

    private static func setSendTimeout(_ fd: Int32, _ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        var value = timeval(tv_sec: Int(clamping: seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }
}
