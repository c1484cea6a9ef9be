public import JSONRPC
import CBuildInfo

/// The version of this build: what `--version` prints and `spdk_get_version`
/// answers. The text comes from $VHOST_BLKD_VERSION at build time
/// (Package.swift; scripts/build-deb.sh sets it from `git describe --tags`),
/// e.g. "1.2.0", "1.2.0-4-g1a2b3c4-dirty" (4 commits past tag v1.2.0, with
/// local changes), "0.0.0-57-g0de46e9" before the first tag, or
/// "0.0.0-unknown" from a plain `swift build`.
public struct BuildVersion: Sendable, Equatable {
    /// The whole version text, without a leading "v".
    public let text: String
    public let major: Int
    public let minor: Int
    public let patch: Int
    /// Whatever follows MAJOR.MINOR.PATCH, as SPDK's `fields.suffix` ("-pre",
    /// "-4-g1a2b3c4"); empty for a release.
    public let suffix: String

    /// This build's version.
    public static let current = BuildVersion(String(cString: vb_build_version()))

    /// Parses "MAJOR[.MINOR[.PATCH]][SUFFIX]" with an optional leading "v";
    /// missing or unparsable numbers read as 0, and text that does not start
    /// with a number is all suffix.
    public init(_ version: String) {
        var rest = Substring(version)
        if rest.first == "v", rest.dropFirst().first?.isASCII == true, rest.dropFirst().first?.isNumber == true {
            rest = rest.dropFirst()
        }
        text = String(rest)
        var numbers: [Int] = []
        while numbers.count < 3 {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let value = Int(digits) else { break }
            numbers.append(value)
            rest = rest.dropFirst(digits.count)
            // The next component only after a "." followed by a digit.
            guard numbers.count < 3, rest.first == ".", let next = rest.dropFirst().first, next.isASCII, next.isNumber
            else { break }
            rest = rest.dropFirst()
        }
        major = numbers.count > 0 ? numbers[0] : 0
        minor = numbers.count > 1 ? numbers[1] : 0
        patch = numbers.count > 2 ? numbers[2] : 0
        suffix = numbers.isEmpty ? text : String(rest)
    }

    /// `spdk_get_version`'s result: {"version": "vhost-blkd v1.2.0-4-g1a2b3c4",
    /// "fields": {"major", "minor", "patch", "suffix"}}, the shape of SPDK's
    /// reply (spdk/lib/rpc: rpc_spdk_get_version), which spdk-rpc clients parse.
    public var json: JSON {
        [
            "version": .string("vhost-blkd v\(text)"),
            "fields": ["major": .int(Int64(major)), "minor": .int(Int64(minor)),
                       "patch": .int(Int64(patch)), "suffix": .string(suffix)],
        ]
    }
}
