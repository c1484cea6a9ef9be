import CShims
import Glibc

/// Starts named (and optionally pinned) POSIX threads. Foundation's Thread is
/// avoided so the daemon controls stack, name and affinity directly.
public enum PosixThread {
    private final class Box: @unchecked Sendable {  // handed to exactly one new thread
        let name: String
        let cpu: Int?
        let body: @Sendable () -> Void
        init(name: String, cpu: Int?, body: @escaping @Sendable () -> Void) {
            self.name = name; self.cpu = cpu; self.body = body
        }
    }

    /// Starts a joinable thread named `name`, pinned to `cpu` when given.
    public static func start(name: String, cpu: Int? = nil, _ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
        let box = Unmanaged.passRetained(Box(name: name, cpu: cpu, body: body))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            guard let arg else { return nil }
            let box = Unmanaged<Box>.fromOpaque(arg).takeRetainedValue()
            vb_set_thread_name(box.name)
            if let cpu = box.cpu { _ = vb_pin_current_thread(Int32(cpu)) }
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

    /// The kernel thread id of the caller.
    public static var currentTID: Int32 { vb_gettid() }
}
