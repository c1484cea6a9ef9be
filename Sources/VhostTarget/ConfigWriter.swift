import Posix

/// Writes the saved config (`--persist`) off the control loop: `AtomicFile`
/// opens, writes, fsyncs and renames, each of which waits as long as the
/// config's storage does. One write at a time, newest state last: changes
/// made while a write is under way share the next one. Each caller's `done`
/// runs on the control loop once a write that includes its change finished.
///
/// Thread confinement: the control loop, but for the writes themselves
/// (checked in debug builds).
final class ConfigWriter {
    typealias Completion = (Errno?) -> Void

    private let loop: EventLoop
    private var writing: [Completion]?
    private var next: (path: String, bytes: [UInt8], waiters: [Completion])?

    init(loop: EventLoop) { self.loop = loop }

    /// Nothing being written or waiting to be.
    var isIdle: Bool { writing == nil && next == nil }

    /// Writes `bytes` to `path` after the write under way, if any; `done`
    /// gets nil or why it failed.
    func write(_ bytes: [UInt8], to path: String, then done: @escaping Completion) {
        loop.preconditionInLoop()
        if writing != nil {
            next = (path, bytes, (next?.waiters ?? []) + [done])
        } else {
            start(path, bytes, waiters: [done])
        }
    }

    private func start(_ path: String, _ bytes: [UInt8], waiters: [Completion]) {
        writing = waiters
        let writer = LoopBound(self), loop = self.loop
        do {
            try PosixThread.startDetached(name: "vb-config") {
                let failure = Self.write(bytes, to: path)
                loop.execute { writer.object.finished(failure) }
            }
        } catch {
            // No thread to be had: write here rather than not at all.
            finished(Self.write(bytes, to: path))
        }
    }

    private static func write(_ bytes: [UInt8], to path: String) -> Errno? {
        do throws(Errno) {
            try AtomicFile.write(path: path, bytes: bytes)
            return nil
        } catch {
            return error
        }
    }

    private func finished(_ failure: Errno?) {
        loop.preconditionInLoop()
        let waiters = writing ?? []
        writing = nil
        if let next {
            self.next = nil
            start(next.path, next.bytes, waiters: next.waiters)
        }
        for waiter in waiters { waiter(failure) }
    }
}
