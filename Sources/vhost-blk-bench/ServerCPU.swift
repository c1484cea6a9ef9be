import Glibc
import Posix

/// CPU time a process has used, from `/proc/PID/stat` fields 14 and 15
/// (utime + stime, all threads, in clock ticks; proc(5)).
enum ServerCPU {
    /// Seconds of user + system time, or nil if the process is gone or the file is malformed.
    static func seconds(pid: Int32) -> Double? {
        guard let text = readFile("/proc/\(pid)/stat") else { return nil }
        // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After ')': field 3 (state) is fields[0], so field N is fields[N - 3].
        guard fields.count > 12, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]) else { return nil }
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        guard ticks > 0 else { return nil }
        return Double(utime &+ stime) / Double(ticks)
    }

    /// This process's own CPU time (all threads), from getrusage.
    static func selfSeconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return s(usage.ru_utime) + s(usage.ru_stime)
    }

    private static func readFile(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(path, flags: O_RDONLY) else { return nil }
        defer { fd.close() }
        guard let bytes = try? fd.readToEnd(limit: 1 << 20), !bytes.isEmpty else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
