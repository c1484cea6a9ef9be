import CShims
import Glibc
import Synchronization

/// A single-threaded epoll loop for the control plane (RPC clients and
/// vhost-user sockets). Everything registered runs on the loop's thread;
/// `execute` and `stop` are the only calls allowed from other threads.
///
/// The loop's thread is the one that created it until `run` is called, then
/// the one that runs it (the daemon's main thread, for both). Debug builds
/// check confined calls (`preconditionInLoop`).
public final class EventLoop: @unchecked Sendable {  // handlers/timers: confined to the loop thread
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: EPOLLIN.rawValue)
        public static let writable = Events(rawValue: EPOLLOUT.rawValue)
        /// Either: the peer closed (HUP), or it shut down its writing side (RDHUP).
        public static let hangup = Events(rawValue: EPOLLHUP.rawValue | EPOLLRDHUP.rawValue)
        /// The peer closed the connection entirely; reported whatever was asked for.
        public static let closed = Events(rawValue: EPOLLHUP.rawValue)
        public static let error = Events(rawValue: EPOLLERR.rawValue)
    }
    public typealias Handler = (Events) -> Void
    public struct Token: Hashable, Sendable { let value: UInt64 }

    private let epoll: FileDescriptor
    private let wakeup: EventFD
    private var handlers: [UInt64: (fd: Int32, handler: Handler)] = [:]
    private var nextToken: UInt64 = 1
    private let pending = Mutex<[@Sendable () -> Void]>([])
    private let stopping = Atomic<Bool>(false)
    private var timers: [(deadline: UInt64, work: () -> Void)] = []
    /// The loop thread's `pthread_self()` (no system call to compare).
    @usableFromInline let owner = Atomic<pthread_t>(pthread_self())

    public init() throws(Errno) {
        epoll = FileDescriptor(try retryingEINTR { epoll_create1(Int32(EPOLL_CLOEXEC)) })
        wakeup = try EventFD()
        _ = try checkNegErrno(vb_epoll_ctl(epoll.rawValue, EPOLL_CTL_ADD, wakeup.fd.rawValue, EPOLLIN.rawValue, 0))
    }

    deinit {
        wakeup.close()
        epoll.close()
    }

    /// Whether the caller runs on this loop's thread.
    @inlinable public var inLoop: Bool { owner.load(ordering: .relaxed) == pthread_self() }

    /// Debug builds stop here unless the caller runs on the loop's thread
    /// (SwiftNIO's `preconditionInEventLoop`); release builds compile it out.
    /// Control-plane objects call it at their entry points.
    @inlinable
    public func preconditionInLoop(file: StaticString = #fileID, line: UInt = #line) {
        assert(inLoop, "control-plane state touched off the control loop's thread", file: file, line: line)
    }

    /// Watches `fd`; `handler` runs on the loop thread with the ready events.
    public func register(_ fd: FileDescriptor, events: Events, handler: @escaping Handler) throws(Errno) -> Token {
        preconditionInLoop()
        let token = nextToken
        nextToken &+= 1
        _ = try checkNegErrno(vb_epoll_ctl(epoll.rawValue, EPOLL_CTL_ADD, fd.rawValue, events.rawValue | EPOLLRDHUP.rawValue, token))
        handlers[token] = (fd.rawValue, handler)
        return Token(value: token)
    }

    /// Changes what `token`'s fd is watched for. A peer that shuts down its
    /// writing side (RDHUP) is reported unless `reportHalfClose` is false,
    /// for a caller that still has something to send it; a full close always is.
    public func modify(_ token: Token, events: Events, reportHalfClose: Bool = true) {
        preconditionInLoop()
        guard let entry = handlers[token.value] else { return }
        let halfClose = reportHalfClose ? EPOLLRDHUP.rawValue : 0
        _ = vb_epoll_ctl(epoll.rawValue, EPOLL_CTL_MOD, entry.fd, events.rawValue | halfClose, token.value)
    }

    /// Stops watching; safe to call from inside the handler itself.
    public func unregister(_ token: Token) {
        preconditionInLoop()
        guard let entry = handlers.removeValue(forKey: token.value) else { return }
        _ = vb_epoll_ctl(epoll.rawValue, EPOLL_CTL_DEL, entry.fd, 0, 0)
    }

    /// Runs `work` on the loop thread (callable from any thread).
    public func execute(_ work: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(work) }
        wakeup.signal()
    }

    /// Runs `work` on the loop thread after `milliseconds` (loop thread only).
    public func after(milliseconds: UInt64, _ work: @escaping () -> Void) {
        preconditionInLoop()
        timers.append((Self.nowMilliseconds() &+ milliseconds, work))
    }

    /// Makes `run()` return after the current iteration (callable from any thread).
    public func stop() {
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
    }

    /// Runs until `stop()`.
    public func run() {
        run(until: { stopping.load(ordering: .acquiring) })
        runPending()
    }

    /// Serves events, posted work and timers until `done()` holds (checked
    /// before every wait): shutdown uses it to let sessions finish draining.
    public func run(until done: () -> Bool) {
        owner.store(pthread_self(), ordering: .relaxed)
        var events = [UInt32](repeating: 0, count: 64)
        var datas = [UInt64](repeating: 0, count: 64)
        while !done() {
            let timeout = nextTimeout()
            let n = events.withUnsafeMutableBufferPointer { e in
                datas.withUnsafeMutableBufferPointer { d in
                    vb_epoll_wait(epoll.rawValue, e.baseAddress, d.baseAddress, 64, timeout)
                }
            }
            if n > 0 {
                for i in 0..<Int(n) {
                    if datas[i] == 0 {
                        wakeup.drain()
                        continue
                    }
                    // A handler may unregister others: look each one up as it is due.
                    if let entry = handlers[datas[i]] { entry.handler(Events(rawValue: events[i])) }
                }
            }
            runPending()
            runTimers()
        }
    }

    private func runPending() {
        let work = pending.withLock { queue -> [@Sendable () -> Void] in
            let taken = queue
            queue.removeAll()
            return taken
        }
        for item in work { item() }
    }

    private func runTimers() {
        guard !timers.isEmpty else { return }
        let now = Self.nowMilliseconds()
        let due = timers.filter { $0.deadline <= now }
        timers.removeAll { $0.deadline <= now }
        for timer in due { timer.work() }
    }

    private func nextTimeout() -> Int32 {
        guard let earliest = timers.map(\.deadline).min() else { return -1 }
        let now = Self.nowMilliseconds()
        return earliest <= now ? 0 : Int32(clamping: earliest - now)
    }

    public static func nowMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1000 &+ UInt64(ts.tv_nsec) / 1_000_000
    }
}
