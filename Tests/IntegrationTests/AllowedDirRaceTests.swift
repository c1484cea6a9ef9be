import DaemonTestSupport
import Foundation
import JSONRPC
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `--allowed-dir` against a tenant who can write in the allowed directory
/// (issue 19, item 6): a directory on the way to the image is swapped, again
/// and again, with a symlink that leads outside, while bdevs are created on
/// the image. No create may ever open the file outside.
@Suite("--allowed-dir against a symlink swap")
struct AllowedDirRaceTests {
    /// Swaps (renameat2(2) RENAME_EXCHANGE, so the path always exists).
    static let swaps = 10_000
    /// RPC clients creating bdevs at the same time.
    static let creators = 4

    /// What the creators saw.
    struct Tally: Sendable {
        var inside = 0
        var outside = 0
        var refused = 0
        /// Refused by the open itself (the check passed, then the swap came).
        var refusedAtOpen = 0
        var other: [String] = []
    }

    /// The swap loop's stop flag and the creators' tally.
    final class Shared: Sendable {
        let done = Atomic<Bool>(false)
        let tally = Mutex(Tally())
    }

    /// renameat2(2)'s RENAME_EXCHANGE (linux/fs.h): both names swap atomically.
    static let renameExchange: UInt32 = 1 << 1

    /// A fresh `base` with `base/images/dir/disk.img` (1 MiB, 2048 blocks)
    /// under the allowed directory, `base/secret/disk.img` (2 MiB) outside,
    /// and `images/swap`, a symlink to `secret` that the swapper exchanges
    /// with `images/dir`: same name, told apart by size.
    static func swapLayout() throws -> (base: String, allowed: String) {
        let base = "/tmp/vbd-\(UUID().uuidString.prefix(8))"
        let allowed = base + "/images"
        let outside = base + "/secret"
        let fm = FileManager.default
        try fm.createDirectory(atPath: allowed + "/dir", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try PermissionsTests.makeFile(allowed + "/dir/disk.img", size: 1 << 20)
        try PermissionsTests.makeFile(outside + "/disk.img", size: 2 << 20)
        try fm.createSymbolicLink(atPath: allowed + "/swap", withDestinationPath: outside)
        return (base, allowed)
    }

    @Test func swappedDirectoryNeverLeadsOutside() throws {
        let (base, allowed) = try Self.swapLayout()

        let daemon = try DaemonProcess(extraArguments: ["--allowed-dir", allowed], directory: URL(fileURLWithPath: base))
        defer { daemon.stop(); daemon.cleanUp() }

        let shared = Shared()
        let creators = (0..<Self.creators).map { index in
            Thread {
                let name = "R\(index)"
                guard let client = try? daemon.client() else {
                    shared.tally.withLock { $0.other.append("creator \(index): no RPC connection") }
                    return
                }
                while !shared.done.load(ordering: .acquiring) {
                    do {
                        _ = try client.call("bdev_uring_create", params: ["name": .string(name), "filename": .string(allowed + "/dir/disk.img")])
                    } catch RPCClientError.rpc(let error) {
                        shared.tally.withLock { t in
                            if error.code == -Int(EPERM) {
                                t.refused += 1
                                if error.message.contains("while it was being opened") { t.refusedAtOpen += 1 }
                            } else if t.other.count < 10 { t.other.append("\(error.code): \(error.message)") }
                        }
                        continue
                    } catch {
                        shared.tally.withLock { $0.other.append("creator \(index): \(error)") }
                        return
                    }
                    let blocks = (try? client.call("bdev_get_bdevs", params: ["name": .string(name)]))?.arrayValue?.first?["num_blocks"]
                    shared.tally.withLock { t in
                        if blocks == .int(2048) { t.inside += 1 } else if blocks == .int(4096) { t.outside += 1 } else { t.other.append("num_blocks \(String(describing: blocks))") }
                    }
                    _ = try? client.call("bdev_uring_delete", params: ["name": .string(name)])
                }
            }
        }
        for thread in creators { thread.start() }
        let start = ContinuousClock.now
        var failedSwaps = 0
        for _ in 0..<Self.swaps {
            if renameat2(AT_FDCWD, allowed + "/dir", AT_FDCWD, allowed + "/swap", Self.renameExchange) != 0 { failedSwaps += 1 }
            usleep(100)
        }
        shared.done.store(true, ordering: .releasing)
        while creators.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let elapsed = ContinuousClock.now - start
        let result = shared.tally.withLock { $0 }
        print("symlink swap: \(Self.swaps) swaps in \(elapsed): \(result.inside) opened inside, \(result.refused) refused (\(result.refusedAtOpen) of them by the open), \(result.outside) opened OUTSIDE")
        #expect(failedSwaps == 0)
        #expect(result.outside == 0, "a bdev was opened on the file outside the allowed directory")
        #expect(result.inside > 0, "no create succeeded: the race was not exercised")
        #expect(result.refused > 0, "no create was refused: the swap never showed")
        #expect(result.other.isEmpty, "\(result.other)")
        #expect(daemon.isRunning)
    }
}
