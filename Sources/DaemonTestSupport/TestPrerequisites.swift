import Foundation
import Testing

/// System tools and privileges some tests need: loop devices (`losetup`),
/// `mkfs.ext4`, `mount`, `fsfreeze`. A test never passes by skipping: under
/// `CI=true` (or `VHOST_BLKD_E2E=1`) a missing prerequisite records an issue,
/// so the test fails; elsewhere the test is cancelled (`Test.cancel`,
/// reported as skipped with the reason, not as passed).
/// `scripts/install-deps.sh` installs the tools.
public enum TestPrerequisites {
    /// True in CI or with `VHOST_BLKD_E2E=1`: a missing prerequisite fails the test.
    public static var isRequired: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["CI"] == "true" || env["VHOST_BLKD_E2E"] == "1"
    }

    /// The Debian package of each tool (what `scripts/install-deps.sh` installs).
    public static let packages: [String: String] = [
        "losetup": "mount", "mount": "mount", "umount": "mount", "fsfreeze": "util-linux", "mkfs.ext4": "e2fsprogs",
    ]

    /// The tool's path in the system folders (a test's PATH may lack /sbin); nil when absent,
    /// or when named in `VHOST_BLKD_TEST_MISSING_TOOLS` (comma-separated: to check what a
    /// machine without it sees).
    public static func tool(_ name: String) -> String? {
        let hidden = ProcessInfo.processInfo.environment["VHOST_BLKD_TEST_MISSING_TOOLS"]?.split(separator: ",") ?? []
        if hidden.contains(where: { $0 == name }) { return nil }
        return ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The test cannot run here because `why`: records an issue, an error
    /// when required (the test fails), else a warning (shown, even for a
    /// parameterized test's case, whose cancellation the console does not
    /// show), then ends the test (cancelled). Never returns.
    public static func unavailable(_ why: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Never {
        if isRequired {
            Issue.record("missing test prerequisite (required under CI=true): \(why)", sourceLocation: sourceLocation)
        } else {
            Issue.record("not run, prerequisite missing: \(why)", severity: .warning, sourceLocation: sourceLocation)
        }
        try Test.cancel("skipped, prerequisite missing: \(why); CI=true makes this a failure", sourceLocation: sourceLocation)
    }

    /// The paths of `names`; `unavailable` naming the first one missing and its package.
    @discardableResult
    public static func requireTools(_ names: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
        try names.map { name in
            guard let path = tool(name) else {
                try unavailable("\(name) not found (apt-get install \(packages[name] ?? name), or run scripts/install-deps.sh)",
                                sourceLocation: sourceLocation)
            }
            return path
        }
    }
}
