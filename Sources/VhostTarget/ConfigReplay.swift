import Glibc
import JSONRPC
import VhostBlkAPI

/// One `--config` entry that failed at start (or on the last retry): kept,
/// reported by `framework_get_failed_config`, retried by
/// `framework_retry_failed_config`, and written back by `--persist`
/// (docs/OPERATIONS.md, "Boot with a bad entry").
struct FailedConfigEntry: Sendable {
    var subsystem: String
    var entry: SavedConfig.Entry
    var error: RPCError

    /// `framework_get_config`'s `{method, params}` with the subsystem and the error.
    var json: JSON {
        var object: JSONObject = ["subsystem": .string(subsystem), "method": .string(entry.method)]
        if let params = entry.params { object["params"] = params }
        object["error"] = ["code": .int(Int64(error.code)), "message": .string(error.message)]
        return .object(object)
    }

    /// The bdev this entry creates.
    var createdBdev: String? {
        ConfigReplay.bdevCreateMethods.contains(entry.method) ? entry.params?["name"]?.stringValue : nil
    }

    /// The controller this entry creates.
    var createdController: String? {
        entry.method == VhostCreateBlkControllerParams.method ? entry.params?["ctrlr"]?.stringValue : nil
    }

    /// The bdev the entry needs: a controller's `dev_name`, or the `name` of
    /// a bdev call that does not create one (QoS, resize).
    var neededBdev: String? {
        if let device = entry.params?["dev_name"]?.stringValue { return device }
        guard createdBdev == nil, entry.method.hasPrefix("bdev_") else { return nil }
        return entry.params?["name"]?.stringValue
    }

    /// The controller the entry needs (`vhost_blk_attach` and the like).
    var neededController: String? {
        guard createdController == nil, entry.method.hasPrefix("vhost_") else { return nil }
        return entry.params?["ctrlr"]?.stringValue
    }
}

/// A run of config entries through the RPC handlers, one after the other:
/// a deferred handler (a file opened off the loop) is waited for before the
/// next entry starts. An entry that needs a bdev or controller whose own
/// entry failed in this run fails too, without being called ("bdev X not
/// available"), so one missing image reports its controller and QoS
/// entries as well.
final class ConfigReplay {
    static let bdevCreateMethods: Set<String> = [
        BdevUringCreateParams.method, BdevAioCreateParams.method, BdevMallocCreateParams.method, BdevNullCreateParams.method,
    ]

    struct Item {
        var subsystem: String
        var entry: SavedConfig.Entry
        /// Where the entry is, for the log ("config file F: subsystem S entry I (M)").
        var place: String
    }

    let items: [Item]
    /// Stop at the first failure (`--strict-config`).
    let stopAtFirstFailure: Bool
    private(set) var position = 0
    private(set) var failed: [(item: Item, error: RPCError)] = []
    private(set) var applied = 0
    private var unavailableBdevs: Set<String> = []
    private var unavailableControllers: Set<String> = []
    private(set) var finished = false

    init(items: [Item], stopAtFirstFailure: Bool) {
        self.items = items
        self.stopAtFirstFailure = stopAtFirstFailure
    }

    var failedEntries: [FailedConfigEntry] {
        failed.map { FailedConfigEntry(subsystem: $0.item.subsystem, entry: $0.item.entry, error: $0.error) }
    }

    fileprivate func next() -> Item? {
        guard !finished, position < items.count, !(stopAtFirstFailure && !failed.isEmpty) else { return nil }
        defer { position += 1 }
        return items[position]
    }

    /// Why `item` cannot run in this run, if an entry it needs failed.
    fileprivate func missingDependency(_ item: Item) -> RPCError? {
        let probe = FailedConfigEntry(subsystem: item.subsystem, entry: item.entry, error: .internalError())
        if let bdev = probe.neededBdev, unavailableBdevs.contains(bdev) {
            return RPCError(code: -Int(ENODEV), message: "bdev \(bdev) not available")
        }
        if let controller = probe.neededController, unavailableControllers.contains(controller) {
            return RPCError(code: -Int(ENODEV), message: "controller \(controller) not available")
        }
        return nil
    }

    fileprivate func record(_ item: Item, _ result: Result<JSON, RPCError>) {
        switch result {
        case .success:
            applied += 1
        case .failure(let error):
            failed.append((item, error))
            let probe = FailedConfigEntry(subsystem: item.subsystem, entry: item.entry, error: error)
            if let bdev = probe.createdBdev { unavailableBdevs.insert(bdev) }
            if let controller = probe.createdController { unavailableControllers.insert(controller) }
        }
    }

    fileprivate func finish() -> Bool {
        guard !finished else { return false }
        finished = true
        return true
    }
}

extension VhostTarget {
    /// Runs `replay`'s entries in order, then `done` (once, on the loop).
    func run(_ replay: ConfigReplay, then done: @escaping (ConfigReplay) -> Void) {
        loop.preconditionInLoop()
        while let item = replay.next() {
            if let missing = replay.missingDependency(item) {
                replay.record(item, .failure(missing))
                continue
            }
            guard let method = Self.methodTable[item.entry.method] else {
                replay.record(item, .failure(RPCError(code: -32601, message: "unknown method")))
                continue
            }
            switch method.handler {
            case .immediate(let body):
                do throws(RPCError) {
                    replay.record(item, .success(try body(self, item.entry.params)))
                } catch {
                    replay.record(item, .failure(error))
                }
            case .deferred(let body):
                // The answer may come before `body` returns (a failed check) or later.
                var answer: Result<JSON, RPCError>?
                var suspended = false
                do throws(RPCError) {
                    try body(self, item.entry.params) { [unowned self] result in
                        if suspended {
                            replay.record(item, result)
                            run(replay, then: done)
                        } else {
                            answer = result
                        }
                    }
                } catch {
                    answer = .failure(error)
                }
                if let answer {
                    replay.record(item, answer)
                    continue
                }
                suspended = true
                return
            }
        }
        if replay.finish() { done(replay) }
    }
}

/// framework_get_failed_config and framework_retry_failed_config, and what a
/// persisted file holds besides the live state.
extension VhostTarget {
    /// What `--persist` writes: the live state (`currentConfig()`, what
    /// `framework_get_config` answers) with every failed entry after its
    /// subsystem's live ones, in config order: an operator's disk is never
    /// dropped from the file because its image was missing at one boot.
    func persistedConfig() -> SavedConfig {
        var config = currentConfig()
        for failed in failedConfig {
            if let index = config.subsystems.firstIndex(where: { $0.name == failed.subsystem }) {
                config.subsystems[index].entries.append(failed.entry)
            } else {
                config.subsystems.append(SavedConfig.Subsystem(name: failed.subsystem, entries: [failed.entry]))
            }
        }
        return config
    }

    /// After a successful change: a failed entry whose bdev or controller
    /// now exists (the operator created it by hand) is superseded by it, and
    /// so are the failed bdev entries (QoS) that were to follow that create.
    func pruneFailedConfig() {
        let bdevsMade = Set(failedConfig.compactMap(\.createdBdev).filter { bdevs[$0] != nil || bdevsBeingOpened.contains($0) })
        let controllersMade = Set(failedConfig.compactMap(\.createdController).filter { controllers[$0] != nil })
        guard !bdevsMade.isEmpty || !controllersMade.isEmpty else { return }
        failedConfig.removeAll { failed in
            if let name = failed.createdBdev { return bdevsMade.contains(name) }
            if let name = failed.createdController { return controllersMade.contains(name) }
            if failed.subsystem == "bdev", let name = failed.neededBdev { return bdevsMade.contains(name) }
            if let name = failed.neededController { return controllersMade.contains(name) }
            return false
        }
    }

    func frameworkGetFailedConfig() -> JSON {
        .array(failedConfig.map(\.json))
    }

    /// Replays the failed entries in config order; answers once all have run.
    func frameworkRetryFailedConfig(_ reply: @escaping RPCReply) throws(RPCError) {
        guard !retryingFailedConfig else { throw RPCError.errno(EBUSY) }
        let entries = failedConfig
        guard !entries.isEmpty else { return reply(.success(["recovered": 0, "failed": []])) }
        retryingFailedConfig = true
        let items = entries.map { failed in
            ConfigReplay.Item(subsystem: failed.subsystem, entry: failed.entry,
                              place: "failed config entry: subsystem \(failed.subsystem) (\(failed.entry.method))")
        }
        let replay = ConfigReplay(items: items, stopAtFirstFailure: false)
        run(replay) { [unowned self] replay in
            retryingFailedConfig = false
            failedConfig = replay.failedEntries
            pruneFailedConfig()
            for (item, error) in replay.failed {
                logger.warning("\(item.place) failed again: \(error.message) (code \(error.code))")
            }
            logger.notice("retried failed config entries", metadata: [
                "recovered": "\(replay.applied)", "failed": "\(failedConfig.count)",
            ])
            notifyStatus()
            reply(.success(["recovered": .int(Int64(replay.applied)), "failed": frameworkGetFailedConfig()]))
        }
    }
}
