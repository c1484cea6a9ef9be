import Glibc
import Logging
import Posix

/// Where `--metrics` listens: a Unix socket path or an IPv4 loopback port.
public enum MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: UInt16)

    /// `unix:PATH` or `HOST:PORT` (an IPv4 literal, e.g. 127.0.0.1:9500).
    public init?(parsing text: String) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty, path.utf8.count <= UnixSocket.maxPathLength else { return nil }
            self = .unix(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port > 0 else { return nil }
        let host = String(text[..<colon])
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else { return nil }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port): return "\(host):\(port)"
        }
    }
}

/// A Prometheus scrape endpoint on the control loop (HTTP/1.0, one request
/// per connection). Off unless `--metrics` is given. The text is rendered by
/// `render` on the control loop from the same snapshots the RPCs use, so a
/// scrape costs the data path nothing but one reactor round trip.
final class MetricsEndpoint: ReservedListener {
    let listener: FileDescriptor
    private let address: MetricsAddress
    private let loop: EventLoop
    let logger: Logger
    private let render: () -> String
    private(set) var listenToken: EventLoop.Token?
    /// accept(2) failures: the daemon's shared reserve, so the listener never spins.
    private let reserve: ListenerReserve
    let peerKind = "metrics client"
    private var clients: [FileDescriptor: (socket: FileDescriptor, token: EventLoop.Token, request: [UInt8])] = [:]

    /// Largest request head read before answering anyway.
    static let maxRequestBytes = 8192

    init(address: MetricsAddress, loop: EventLoop, logger: Logger, reserve: ListenerReserve,
         render: @escaping () -> String) throws(Errno) {
        switch address {
        case .unix(let path): listener = try UnixSocket.listen(path: path, mode: 0o600)
        case .tcp(let host, let port): listener = try TCPListener.listen(host: host, port: port)
        }
        self.address = address
        self.reserve = reserve
        self.loop = loop
        self.logger = logger
        self.render = render
        do {
            listenToken = try loop.register(listener, events: .readable) { [unowned self] _ in acceptClients() }
        } catch {
            close()
            throw error
        }
        logger.info("metrics endpoint listening", metadata: ["metrics": "\(address)"])
    }

    func close() {
        for fd in Array(clients.keys) { drop(fd) }
        if let listenToken { loop.unregister(listenToken) }
        listenToken = nil
        listener.close()
        if case .unix(let path) = address { FileSystem.removeFile(path) }
    }

    private func acceptClients() {
        while true {
            let client: FileDescriptor?
            do {
                client = try UnixSocket.accept(listener)
            } catch {
                if reserve.acceptFailed(self, error) { continue }
                return
            }
            guard let client else { return }
            do {
                try client.setNonBlocking()
                let token = try loop.register(client, events: .readable) { [unowned self] _ in readRequest(client) }
                clients[client] = (client, token, [])
            } catch {
                client.close()
            }
        }
    }

    private func readRequest(_ fd: FileDescriptor) {
        guard var entry = clients[fd] else { return }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let count: Int
        do {
            count = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> Int in try entry.socket.read(into: raw) }
            }.get()
        } catch {
            if error != .EAGAIN { drop(fd) }
            return
        }
        if count == 0 { return drop(fd) }
        entry.request += buffer[0..<count]
        clients[fd] = entry
        let head = entry.request
        let complete = head.count >= Self.maxRequestBytes || Self.endsHead(head)
        guard complete else { return }
        answer(entry.socket, request: head)
        drop(fd)
    }

    private static func endsHead(_ bytes: [UInt8]) -> Bool {
        let crlf: [UInt8] = [13, 10, 13, 10], lf: [UInt8] = [10, 10]
        return bytes.count >= 4 && Array(bytes.suffix(4)) == crlf || bytes.count >= 2 && Array(bytes.suffix(2)) == lf
    }

    private func answer(_ socket: FileDescriptor, request: [UInt8]) {
        let firstLine = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = firstLine.split(separator: " ")
        let status: String, body: String
        if parts.count >= 2, parts[0] == "GET", parts[1] == "/metrics" || parts[1] == "/" {
            status = "200 OK"
            body = render()
        } else {
            status = "404 Not Found"
            body = "GET /metrics\n"
        }
        let bodyBytes = Array(body.utf8)
        let head = "HTTP/1.0 \(status)\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            + "Content-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n"
        // A blocking write bounded by a one-second send timeout: a scraper
        // that does not read cannot hold the control loop for longer.
        try? socket.setSendTimeout(timeval(tv_sec: 1, tv_usec: 0))
        try? socket.setBlocking()
        do {
            try socket.writeAll(Array(head.utf8) + bodyBytes)
        } catch {
            logger.debug("metrics response not sent: \(error)")
        }
    }

    private func drop(_ fd: FileDescriptor) {
        guard let entry = clients.removeValue(forKey: fd) else { return }
        loop.unregister(entry.token)
        entry.socket.close()
    }
}

/// A listening IPv4 TCP socket (the sockaddr handling stays here).
enum TCPListener {
    static func listen(host: String, port: UInt16, backlog: Int32 = 16) throws(Errno) -> FileDescriptor {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw Errno(EINVAL) }
        let fd = try FileDescriptor.socket(domain: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        do throws(Errno) {
            try? fd.setOption(level: SOL_SOCKET, SO_REUSEADDR, 1)
            try fd.bind(address)
            try fd.listen(backlog: backlog)
            try fd.setNonBlocking()
            return fd
        } catch {
            fd.close()
            throw error
        }
    }
}

extension VhostTarget {
    /// Opens the `--metrics` endpoint, if configured.
    func startMetrics() throws(TargetStartError) {
        guard let address = configuration.metricsAddress else { return }
        do {
            metricsEndpoint = try MetricsEndpoint(address: address, loop: loop, logger: logger, reserve: listenerReserve) { [unowned self] in metricsText() }
        } catch {
            throw TargetStartError("cannot serve metrics on \(address): \(error)")
        }
    }
}
