import Glibc
import JSONRPC
import Logging
import Posix
import Synchronization

/// The daemon's one log threshold, read by every `Logger` (whatever thread
/// it logs from) through `DaemonLogHandler`, and changed at runtime by
/// `log_set_level`/`log_set_print_level` (LogMethods.swift): a change holds
/// for the next message on every thread, with no restart.
public final class LogControl: Sendable {
    /// The level's rank, trace (0) ... critical (6).
    private let rank: Atomic<UInt8>

    public init(level: Logger.Level) {
        rank = Atomic(Self.rank(of: level))
    }

    /// The current threshold: messages below it are not built or written.
    /// Read on every log call: one relaxed load, no allocation.
    public var level: Logger.Level {
        switch rank.load(ordering: .relaxed) {
        case 0: .trace
        case 1: .debug
        case 2: .info
        case 3: .notice
        case 4: .warning
        case 5: .error
        default: .critical
        }
    }

    public func set(_ level: Logger.Level) {
        rank.store(Self.rank(of: level), ordering: .relaxed)
    }

    private static func rank(of level: Logger.Level) -> UInt8 {
        switch level {
        case .trace: 0
        case .debug: 1
        case .info: 2
        case .notice: 3
        case .warning: 4
        case .error: 5
        case .critical: 6
        }
    }
}

/// How log lines look on standard error (`--log-format`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// swift-log's `StreamLogHandler` line: `TIME LEVEL LABEL: KEY=VALUE... [SOURCE] MESSAGE`.
    case text
    /// One JSON object per line: `timestamp` (RFC 3339, UTC, microseconds),
    /// `level`, `label`, `source` (the logging module), `message`, and
    /// `metadata` (an object, only when there is some).
    case json
}

/// The daemon's `LogHandler`: its level is `LogControl`'s (one for every
/// logger, so a copy cannot hold a stale one), its lines go whole to
/// standard error in `format`.
public struct DaemonLogHandler: LogHandler {
    public let label: String
    public let format: LogFormat
    public let control: LogControl
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String, format: LogFormat, control: LogControl, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.format = format
        self.control = control
        self.metadataProvider = metadataProvider
    }

    /// Reads and sets the shared threshold: setting it on one logger sets it
    /// for all (swift-log allows such a global override; LogHandler.swift).
    public var logLevel: Logger.Level {
        get { control.level }
        set { control.set(newValue) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty {
            all.merge(provided, uniquingKeysWith: { _, new in new })
        }
        if let explicit = event.metadata, !explicit.isEmpty {
            all.merge(explicit, uniquingKeysWith: { _, new in new })
        }
        if let error = event.error {  // as StreamLogHandler reports it
            all["error.message"] = "\(error)"
            all["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        let text: String
        switch format {
        case .text:
            let pretty = all.isEmpty ? "" : " " + all.sorted(by: { $0.key < $1.key }).map { "\($0)=\($1)" }.joined(separator: " ")
            text = "\(LogClock.localTimestamp()) \(event.level)\(label.isEmpty ? "" : " ")\(label):\(pretty) [\(event.source)] \(event.message)\n"
        case .json:
            var object: JSONObject = [
                "timestamp": .string(LogClock.utcTimestamp()), "level": .string(event.level.rawValue),
                "label": .string(label), "source": .string(event.source), "message": .string(event.message.description),
            ]
            if !all.isEmpty { object["metadata"] = Self.json(.dictionary(all)) }
            text = JSON.object(object).encoded() + "\n"
        }
        LogSink.standardError.write(text)
    }

    /// A metadata value as JSON: strings stay strings, dictionaries and arrays nest.
    static func json(_ value: Logger.MetadataValue) -> JSON {
        switch value {
        case .string(let string): return .string(string)
        case .stringConvertible(let convertible): return .string(convertible.description)
        case .array(let values): return .array(values.map(json))
        case .dictionary(let entries):
            var object = JSONObject()
            for (key, entry) in entries.sorted(by: { $0.key < $1.key }) { object[key] = json(entry) }
            return .object(object)
        }
    }
}

/// Standard error, one whole line at a time whatever thread logs.
final class LogSink: Sendable {
    static let standardError = LogSink(FileDescriptor(STDERR_FILENO))

    private let fd: FileDescriptor
    private let lock = Mutex(())

    private init(_ fd: FileDescriptor) { self.fd = fd }

    func write(_ text: String) {
        let bytes = Array(text.utf8)
        lock.withLock { _ in _ = try? fd.writeAll(bytes) }  // a closed stderr drops the line
    }
}

/// Timestamps for log lines.
enum LogClock {
    /// `2026-12-07T05:16:36+0000`, local time (swift-log's `StreamLogHandler` format).
    static func localTimestamp() -> String {
        var now = time(nil)
        var parts = tm()
        guard localtime_r(&now, &parts) != nil else { return "<unknown>" }
        return format(&parts, "%Y-%m-%dT%H:%M:%S%z")
    }

    /// `2026-12-07T05:16:36.123456Z` (RFC 3339, UTC).
    static func utcTimestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        guard gmtime_r(&seconds, &parts) != nil else { return "<unknown>" }
        let micros = String(now.tv_nsec / 1000)
        return format(&parts, "%Y-%m-%dT%H:%M:%S") + "." + String(repeating: "0", count: max(0, 6 - micros.count)) + micros + "Z"
    }

    private static func format(_ parts: inout tm, _ pattern: String) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, pattern, &parts)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
