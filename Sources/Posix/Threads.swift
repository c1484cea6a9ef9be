import CShims
import Glibc

/// Starts named (and optionally pinned) POSIX threads. Foundation's Thread is
/// avoided so the daemon controls stack, name and affinity directly.
public enum PosixThread {
    private final class Box: @unchecked Sendable {  // handed to exactly one new thread
        let name: String
        let cpus: [Int]
        let body: @Sendable () -> Void
        init(name: String, cpus: [Int], body: @escaping @Sendable () -> Void) {
            self.name = name; self.cpus = cpus; self.body = body
        }
    }

    /// Starts a joinable thread named `name`, pinned to `cpu` when given.
    public static func start(name: String, cpu: Int? = nil, _ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
        try start(name: name, cpus: cpu.map { [$0] } ?? [], body)
    }

    /// Starts a joinable thread named `name` that runs only on `cpus` (empty:
    /// wherever its creator may run, which it inherits).
    public static func start(name: String, cpus: [Int], _ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
        let box = Unmanaged.passRetained(Box(name: name, cpus: cpus, body: body))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            guard let arg else { return nil }
            let box = Unmanaged<Box>.fromOpaque(arg).takeRetainedValue()
            vb_set_thread_name(box.name)
            if !box.cpus.isEmpty {
                let cpus = box.cpus.map { Int32(truncatingIfNeeded: $0) }
                _ = cpus.withUnsafeBufferPointer { vb_set_current_thread_cpus($0.baseAddress, Int32($0.count)) }
            }
            box.body()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw Errno(rc)
        }
        return thread
    }

    /// Starts a thread named `name` that nobody joins: it ends when `body` returns.
    public static func startDetached(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
        let thread = try start(name: name, body)
        pthread_detach(thread)
    }

    public static func join(_ thread: pthread_t) { pthread_join(thread, nil) }

    /// Lets the calling thread run only on `cpus` (threads it starts later inherit that).
    public static func pinCurrent(to cpus: CPUSet) throws(Errno) {
        let numbers = cpus.cpus.map { Int32(truncatingIfNeeded: $0) }
        let rc = numbers.withUnsafeBufferPointer { vb_set_current_thread_cpus($0.baseAddress, Int32($0.count)) }
        if rc != 0 { throw Errno(rc) }
    }

    /// The kernel thread id of the caller.
    public static var currentTID: Int32 { vb_gettid() }
}
