import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Where the end-to-end tests find QEMU and the guest image, and whether they
/// can run here (docs/PROTOCOL-NOTES.md, "Test guests").
///
/// The e2e suites use `.enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment)`
/// and start with `try E2EEnvironment.requireReady()`: on a developer machine
/// without the guest image they are skipped; in CI (`CI=true`) or with
/// `VHOST_BLKD_E2E=1` they run, and a missing prerequisite fails them.
enum E2EEnvironment {
    /// The package root, found from this file's path (Tests/E2ETests/<file>).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The process environment.
    static var variables: [String: String] { ProcessInfo.processInfo.environment }

    /// `$VHOST_BLKD_GUEST_DIR`, else `<repo>/.guest` (what scripts/build-guest.sh writes).
    static var guestDirectory: URL {
        if let dir = variables["VHOST_BLKD_GUEST_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir)
        }
        return repoRoot.appendingPathComponent(".guest")
    }

    /// The guest kernel.
    static var kernel: URL { guestDirectory.appendingPathComponent("vmlinuz") }

    /// The base initramfs; each test appends its `/test.sh` to it.
    static var baseInitrd: URL { guestDirectory.appendingPathComponent("initramfs.cpio.gz") }

    /// `qemu-system-x86_64` from `PATH`.
    static var qemu: URL? { executable(named: "qemu-system-x86_64") }

    /// `qemu-storage-daemon` from `PATH` (a reference vhost-user-blk server).
    static var storageDaemon: URL? { executable(named: "qemu-storage-daemon") }

    /// True in CI or when `VHOST_BLKD_E2E=1`: missing prerequisites then fail the tests.
    static var isRequired: Bool {
        variables["CI"] == "true" || variables["VHOST_BLKD_E2E"] == "1"
    }

    /// What is missing for the e2e tests to run; empty when they can.
    static var missingPrerequisites: [String] {
        var missing: [String] = []
        if qemu == nil { missing.append("qemu-system-x86_64 not in PATH (apt-get install qemu-system-x86)") }
        let files = FileManager.default
        for file in [kernel, baseInitrd] where !files.isReadableFile(atPath: file.path) {
            missing.append("\(file.path) missing (run scripts/build-guest.sh)")
        }
        return missing
    }

    /// Whether QEMU and the guest image are present.
    static var isReady: Bool { missingPrerequisites.isEmpty }

    /// Whether e2e tests should run at all (ready, or required so that absence fails).
    static var isEnabled: Bool { isReady || isRequired }

    /// Why e2e tests are skipped when `isEnabled` is false.
    static var skipComment: Comment {
        Comment(rawValue: "e2e skipped: \(missingPrerequisites.joined(separator: "; ")); set VHOST_BLKD_E2E=1 to require")
    }

    /// Throws when a prerequisite is missing (call first in every e2e test).
    static func requireReady() throws {
        let missing = missingPrerequisites
        if !missing.isEmpty { throw E2EError.missingPrerequisites(missing) }
    }

    /// The first executable called `name` in `PATH`.
    static func executable(named name: String) -> URL? {
        let path = variables["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(dir)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// A product built next to the running test binary (e.g. `vhost-blkd` in
    /// `.build-x/debug/`), or nil if it is not there.
    static func builtProduct(_ name: String) -> URL? {
        var dirs: [URL] = []
        if let main = Bundle.main.executableURL { dirs.append(main.deletingLastPathComponent()) }
        if let argv0 = CommandLine.arguments.first {
            dirs.append(URL(fileURLWithPath: argv0).deletingLastPathComponent())
        }
        for dir in dirs {
            // The test binary may sit inside an .xctest bundle directory.
            for base in [dir, dir.deletingLastPathComponent()] {
                let candidate = base.appendingPathComponent(name)
                if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            }
        }
        return nil
    }

    /// A fresh private directory under /tmp, short enough for unix socket
    /// paths (108 bytes). The caller removes it (`removeWorkDirectory`).
    static func makeWorkDirectory(_ label: String) throws -> URL {
        let safe = String(label.filter { $0.isLetter || $0.isNumber || $0 == "-" }.prefix(16))
        var template = Array("/tmp/vhb-\(safe)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> Bool in
            guard let base = buffer.baseAddress else { return false }
            return mkdtemp(base) != nil
        }
        guard made else { throw E2EError.system("mkdtemp", errno) }
        let path = template.withUnsafeBufferPointer { buffer in
            String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return URL(fileURLWithPath: path, isDirectory: true)
    }

    /// Removes a directory made by `makeWorkDirectory`, unless
    /// `VHOST_BLKD_E2E_KEEP=1` (to inspect consoles and logs).
    static func removeWorkDirectory(_ dir: URL) {
        guard variables["VHOST_BLKD_E2E_KEEP"] != "1" else { return }
        try? FileManager.default.removeItem(at: dir)
    }
}

/// Failures of the e2e harness itself.
enum E2EError: Error, CustomStringConvertible {
    case missingPrerequisites([String])
    case system(String, Int32)
    case timeout(String)
    case failed(String)

    var description: String {
        switch self {
        case .missingPrerequisites(let items):
            return "e2e prerequisites missing: " + items.joined(separator: "; ")
        case .system(let call, let code):
            return "\(call) failed: \(String(cString: strerror(code)))"
        case .timeout(let what): return "timed out: \(what)"
        case .failed(let what): return what
        }
    }
}
