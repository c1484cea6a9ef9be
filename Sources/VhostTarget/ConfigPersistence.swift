import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// `--config FILE` and `--persist` (issue 5, "config persistence"): the
/// file is SPDK's `save_config` format. At start every entry is dispatched
/// through the same handlers as RPC, in order. An entry that fails is logged
/// and kept aside (`failedConfig`, ConfigReplay.swift) while the rest is
/// served; `--strict-config` makes the first failure stop the start instead
/// (docs/OPERATIONS.md, "Boot with a bad entry"). With `--persist`, every
/// successful request to a method registered with `mutatesConfig`
/// (`RPCMethod`), and a guest's write-cache change, rewrites the file
/// atomically, failed entries included.
extension VhostTarget {
    /// Replays `configuration.configFile` (before the RPC socket exists).
    /// A missing file with `--persist` is a first boot: the daemon starts
    /// empty and writes the file. A file that cannot be read or parsed stops
    /// the start (nothing in it could be kept); so does any failing entry
    /// with `--strict-config`. Errors name the subsystem, the entry index,
    /// the method and the reason.
    func loadConfigFile() throws(TargetStartError) {
        guard let path = configuration.configFile else { return }
        let bytes: [UInt8]
        do {
            bytes = try AtomicFile.read(path: path, limit: 64 << 20)
        } catch {
            if error == Errno.ENOENT, configuration.persistConfig {
                logger.notice("config file \(path) does not exist: first boot, starting empty")
                try persistAtStart(path)
                return
            }
            throw TargetStartError("cannot read config file \(path): \(error)")
        }
        let config: SavedConfig
        do {
            config = try SavedConfig(json: JSON.parse(bytes))
        } catch let error as JSONParseError {
            throw TargetStartError("config file \(path) is not valid JSON: \(error)")
        } catch {
            throw TargetStartError("config file \(path): \(error)")
        }
        var items: [ConfigReplay.Item] = []
        for subsystem in config.subsystems {
            for (index, entry) in subsystem.entries.enumerated() {
                items.append(ConfigReplay.Item(
                    subsystem: subsystem.name, entry: entry,
                    place: "config file \(path): subsystem \(subsystem.name) entry \(index) (\(entry.method))"))
            }
        }
        let replay = ConfigReplay(items: items, stopAtFirstFailure: configuration.strictConfig)
        var finished = false
        run(replay) { _ in finished = true }
        loop.run(until: { finished })
        for (item, error) in replay.failed {
            let text = error.code == -32601 ? "\(item.place): unknown method" : "\(item.place) failed: \(error.message) (code \(error.code))"
            if configuration.strictConfig { throw TargetStartError(text) }
            logger.error("\(text); serving the rest without it (framework_get_failed_config lists it, framework_retry_failed_config retries it)")
        }
        failedConfig = replay.failedEntries
        logger.info("config loaded", metadata: [
            "config.file": "\(path)", "entries": "\(replay.applied)", "failed": "\(failedConfig.count)",
        ])
        try persistAtStart(path)
    }

    /// With `--persist`, writes the file once at start, so an unwritable
    /// location is found now rather than after the first change. Through
    /// `configWriter`, like every write: a guest's change during the replay
    /// may already be under way, and the newest state must land last.
    private func persistAtStart(_ path: String) throws(TargetStartError) {
        guard configuration.persistConfig else { return }
        let text = persistedConfig().json.encoded(pretty: true) + "\n"
        var outcome: Errno??
        configWriter.write(Array(text.utf8), to: path) { outcome = $0 }
        loop.run(until: { outcome != nil })
        if case .some(.some(let error)) = outcome {
            throw TargetStartError("cannot write config file \(path): \(error)")
        }
    }

    /// The persistence hook, after `change` (a method that `mutatesConfig`,
    /// or a guest's SET_CONFIG) succeeded. The file is written off the
    /// control loop (`ConfigWriter`); `done` runs once it was (the RPC
    /// answers then, so a client that got its answer finds its change in the
    /// file). A failed write is logged; the change itself stands.
    func persistAfter(change: String, then done: @escaping () -> Void = {}) {
        // During shutdown the controllers are already gone from the tables: keep the file as it was.
        guard configuration.persistConfig, !shuttingDown, let path = configuration.configFile else {
            return done()
        }
        let text = persistedConfig().json.encoded(pretty: true) + "\n"
        configWriter.write(Array(text.utf8), to: path) { [logger] failure in
            if let failure {
                logger.error("\(change) succeeded but config file \(path) could not be rewritten: \(failure)")
            }
            done()
        }
    }

}

/// Whole-file reads and crash-safe replacement.
enum AtomicFile {
    /// Reads a regular file of at most `limit` bytes.
    static func read(path: String, limit: Int) throws(Errno) -> [UInt8] {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY)
        defer { fd.close() }
        let st = try fd.stat()
        guard st.st_mode & S_IFMT == S_IFREG else { throw Errno.EINVAL }
        guard st.st_size <= limit else { throw Errno(EFBIG) }
        return try fd.readToEnd(limit: limit)
    }

    /// Replaces `path` with `bytes`: writes `<path>.tmp.<pid>` in the same
    /// directory, fsyncs it, renames it over `path`, fsyncs the directory.
    /// Keeps an existing file's permission bits (new files get 0600). The
    /// temporary file never survives a failure.
    static func write(path: String, bytes: [UInt8]) throws(Errno) {
        let temp = "\(path).tmp.\(getpid())"
        var mode: mode_t = 0o600
        if let st = try? FileSystem.status(path) { mode = st.st_mode & 0o7777 }
        FileSystem.removeFile(temp)
        let fd = try FileDescriptor.open(temp, flags: O_WRONLY | O_CREAT | O_EXCL, mode: mode)
        var isOpen = true
        do throws(Errno) {
            try fd.setMode(mode)
            try fd.writeAll(bytes)
            try fd.sync()
            isOpen = false
            try fd.closeReportingError()  // never retried: the fd is gone either way
            try FileSystem.rename(temp, to: path)
        } catch {
            if isOpen { fd.close() }
            FileSystem.removeFile(temp)
            throw error
        }
        try syncDirectory(of: path)
    }

    private static func syncDirectory(of path: String) throws(Errno) {
        let dir: String
        if let slash = path.lastIndex(of: "/") {
            dir = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            dir = "."
        }
        try FileSystem.syncDirectory(dir)
    }
}
