import Glibc
import Posix

/// A blocking JSON-RPC client over a Unix stream socket, for the CLI and
/// tests. One request at a time; responses are read with
/// `JSONStreamDecoder` (docs/PROTOCOL-NOTES.md, "Framing"). Not thread-safe:
/// use from one thread.
public final class RPCClient {
    /// The socket path connected to.
    public let path: String
    /// How long `readResponse` waits for a complete value; nil waits forever.
    public let timeout: Duration?

    private let descriptor: FileDescriptor
    private var decoder = JSONStreamDecoder(maxBytes: 256 << 20, maxDepth: 256)
    private var nextID: Int64 = 1

    /// Connects to the Unix socket at `path`.
    public init(path: String, timeout: Duration? = .seconds(60)) throws(RPCClientError) {
        self.path = path
        self.timeout = timeout
        guard !path.isEmpty, path.utf8.count <= UnixSocket.maxPathLength else {
            throw .connect(path: path, errno: ENAMETOOLONG)
        }
        do {
            descriptor = try UnixSocket.connect(path: path)
        } catch {
            throw .connect(path: path, errno: error.rawValue)
        }
        if let timeout { Self.setSendTimeout(descriptor, timeout) }
    }

    deinit {
        descriptor.close()
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
            let written: Int
            do {
                written = try bytes.withUnsafeBytes { raw in
                    Result { () throws(Errno) -> Int in
                        try descriptor.send(UnsafeRawBufferPointer(rebasing: raw[offset...]), flags: Int32(MSG_NOSIGNAL))
                    }
                }.get()
            } catch {
                if error == .EAGAIN || error.rawValue == EWOULDBLOCK { throw .timeout }
                throw .io(operation: "send", errno: error.rawValue)
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
            let count: Int
            do {
                count = try chunk.withUnsafeMutableBytes { raw in
                    Result { () throws(Errno) -> Int in try descriptor.receive(into: raw, flags: 0) }
                }.get()
            } catch {
                if error == .EAGAIN { continue }
                throw .io(operation: "recv", errno: error.rawValue)
            }
            if count == 0 { throw .closed(partial: decoder.bufferedByteCount) }
            chunk.withUnsafeBytes { raw in decoder.append(UnsafeRawBufferPointer(rebasing: raw[0..<count])) }
        }
    }

    /// Stops sending (SHUT_WR); the server sees end of input.
    public func shutdownWrite() {
        try? descriptor.shutdown(Int32(SHUT_WR))
    }

    private func waitReadable(deadline: ContinuousClock.Instant?) throws(RPCClientError) {
        var waitMs: Int32 = -1
        if let deadline {
            let left = deadline - ContinuousClock.now
            if left <= .zero { throw .timeout }
            waitMs = Self.milliseconds(left)
        }
        let ready: Int16
        do {
            ready = try descriptor.poll(Int16(POLLIN), timeoutMilliseconds: waitMs)  // EINTR polls again
        } catch {
            throw .io(operation: "poll", errno: error.rawValue)
        }
        if ready == 0 { throw .timeout }
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

    private static func setSendTimeout(_ fd: FileDescriptor, _ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        try? fd.setSendTimeout(timeval(tv_sec: Int(clamping: seconds), tv_usec: Int(attoseconds / 1_000_000_000_000)))
    }
}
