import JSONRPC
import Testing
import VhostBlkAPI

/// `BuildVersion`: `git describe` text -> `spdk_get_version`'s fields.
@Suite struct BuildVersionTests {
    @Test(arguments: [
        ("1.2.3", "1.2.3", 1, 2, 3, ""),
        ("v1.2.3", "1.2.3", 1, 2, 3, ""),
        ("1.2.0-4-g1a2b3c4-dirty", "1.2.0-4-g1a2b3c4-dirty", 1, 2, 0, "-4-g1a2b3c4-dirty"),
        ("v24.01-pre", "24.01-pre", 24, 1, 0, "-pre"),
        ("0.0.0-57-g0de46e9", "0.0.0-57-g0de46e9", 0, 0, 0, "-57-g0de46e9"),
        ("0.0.0-unknown", "0.0.0-unknown", 0, 0, 0, "-unknown"),
        ("2", "2", 2, 0, 0, ""),
        ("1.2.3.4", "1.2.3.4", 1, 2, 3, ".4"),
        ("1.x", "1.x", 1, 0, 0, ".x"),
        ("0de46e9", "0de46e9", 0, 0, 0, "de46e9"),
        ("g0de46e9", "g0de46e9", 0, 0, 0, "g0de46e9"),
        ("vx", "vx", 0, 0, 0, "vx"),
        ("", "", 0, 0, 0, ""),
        ("99999999999999999999999.1", "99999999999999999999999.1", 0, 0, 0, "99999999999999999999999.1"),
    ])
    func parses(text: String, shown: String, major: Int, minor: Int, patch: Int, suffix: String) {
        let version = BuildVersion(text)
        #expect(version.text == shown)
        #expect([version.major, version.minor, version.patch] == [major, minor, patch])
        #expect(version.suffix == suffix)
    }

    /// The reply keeps SPDK's shape: spdk-rpc clients read `version` and `fields`.
    @Test func spdkReplyShape() {
        let json = BuildVersion("1.2.0-4-g1a2b3c4").json
        #expect(json["version"] == .string("vhost-blkd v1.2.0-4-g1a2b3c4"))
        #expect(json["fields"]?["major"] == .int(1))
        #expect(json["fields"]?["minor"] == .int(2))
        #expect(json["fields"]?["patch"] == .int(0))
        #expect(json["fields"]?["suffix"] == .string("-4-g1a2b3c4"))
        #expect(json.objectValue?.count == 2 && json["fields"]?.objectValue?.count == 4)
    }

    /// This build's version is whatever the build set, never empty.
    @Test func currentIsSet() {
        #expect(!BuildVersion.current.text.isEmpty)
        #expect(BuildVersion.current == BuildVersion(BuildVersion.current.text))
    }
}
