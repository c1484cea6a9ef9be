// swift-tools-version:6.0
import PackageDescription

/// Every target that imports liburing or jansson (directly or through a
/// header) needs _GNU_SOURCE, or a clean build fails while an incremental one
/// passes.
let gnuSource: [CSetting] = [.define("_GNU_SOURCE")]
let swiftGNU: [SwiftSetting] = [.define("_GNU_SOURCE")]

/// The data path's modules skip dynamic exclusivity checks in release builds:
/// under callgrind they were ~40 % of the instructions per request (every
/// access to a class's stored `var` calls swift_beginAccess/endAccess).
/// Static checks still run at compile time; debug builds (all tests) keep
/// the dynamic ones.
let dataPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

/// The version both binaries and `spdk_get_version` report: $VHOST_BLKD_VERSION
/// at build time (scripts/build-deb.sh and scripts/test.sh set it from
/// `git describe`); a plain `swift build` says "0.0.0-unknown". Only the
/// CBuildInfo target sees it, so a new version recompiles one C file. Characters
/// other than letters, digits and `.+-~_` are dropped: the value becomes a C
/// string literal.
let buildVersion: String = {
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+-~_")
    let raw = Context.environment["VHOST_BLKD_VERSION"] ?? ""
    let clean = String(raw.filter { allowed.contains($0) }.prefix(128))
    return clean.isEmpty ? "0.0.0-unknown" : clean
}()

let package = Package(
    name: "vhost-blkd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vhost-blkd", targets: ["vhost-blkd"]),
        .executable(name: "vhost-blkctl", targets: ["vhost-blkctl"]),
        .executable(name: "vhost-blk-bench", targets: ["vhost-blk-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // 1.12: LogHandler.log(event:) with the event's error (DaemonLogHandler).
        .package(url: "https://github.com/apple/swift-log", from: "1.12.0"),
    ],
    targets: [
        // C libraries and macro shims.
        .systemLibrary(
            name: "CLiburing", pkgConfig: "liburing",
            providers: [.apt(["liburing-dev"])]),
        .systemLibrary(
            name: "CJansson", pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]),
        // librbd and librados (Ceph 16): Debian ships no pkg-config file, the module map links them.
        .systemLibrary(name: "CRBD", providers: [.apt(["librbd-dev"])]),
        .target(name: "CShims", cSettings: gnuSource),
        .target(name: "CBuildInfo", cSettings: [.define("VHOST_BLKD_VERSION", to: "\"\(buildVersion)\"")]),
        // The SIGBUS guard for frontend-shared memory (signal context: C, no logic elsewhere).
        .target(name: "CFaultGuard", cSettings: gnuSource),

        // Layers, lowest first (see docs/ARCHITECTURE.md).
        .target(name: "Posix", dependencies: ["CShims", "CFaultGuard"], cSettings: gnuSource),
        .target(name: "Virtio", swiftSettings: dataPath),
        .target(
            name: "VhostUser", dependencies: ["Virtio", "Posix", "CShims"],
            cSettings: gnuSource, swiftSettings: dataPath),
        .target(
            name: "BlockIO",
            dependencies: ["CLiburing", "CRBD", "CShims", "Posix", .product(name: "Logging", package: "swift-log")],
            cSettings: gnuSource, swiftSettings: dataPath),
        .target(
            name: "Reactor",
            dependencies: ["BlockIO", "Posix", "CShims", .product(name: "Logging", package: "swift-log")],
            cSettings: gnuSource, swiftSettings: dataPath),
        .target(name: "JSONRPC", dependencies: ["CJansson", "Posix"], cSettings: gnuSource),
        .target(name: "VhostBlkAPI", dependencies: ["JSONRPC", "CBuildInfo"], cSettings: gnuSource),
        // The data path: virtqueue servers, the virtio-blk executor's backends,
        // per-queue stats and QoS; no control-plane type.
        .target(
            name: "BlkDevice",
            dependencies: [
                "Virtio", "VhostUser", "BlockIO", "Reactor", "Posix", "CShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            cSettings: gnuSource, swiftSettings: dataPath),
        // The control plane: RPC methods, the bdev and controller registry,
        // vhost-user sessions, persistence and metrics.
        .target(
            name: "VhostTarget",
            dependencies: [
                "BlkDevice", "Virtio", "VhostUser", "BlockIO", "Reactor", "JSONRPC", "VhostBlkAPI", "Posix", "CShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            cSettings: gnuSource, swiftSettings: dataPath),
        .target(
            name: "VhostUserFrontend", dependencies: ["Virtio", "VhostUser", "Posix", "CShims"],
            cSettings: gnuSource),

        // Test support: the real daemon as a child process (integration and e2e tests),
        // and the tools some tests need (missing ones fail the tests under CI=true).
        .target(name: "DaemonTestSupport", dependencies: ["JSONRPC"], cSettings: gnuSource),

        // Executables: thin.
        .executableTarget(
            name: "vhost-blkd",
            dependencies: [
                "VhostTarget", "VhostBlkAPI", "BlockIO", "Posix",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            cSettings: gnuSource),
        .executableTarget(
            name: "vhost-blkctl",
            dependencies: [
                "VhostBlkAPI", "JSONRPC", "Posix",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            cSettings: gnuSource),

        .executableTarget(
            name: "vhost-blk-bench",
            dependencies: [
                "VhostUserFrontend", "Virtio", "VhostUser", "Posix", "CShims", "VhostBlkAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            cSettings: gnuSource),

        // Tests: one folder per target, plus the process-level suites.
        .testTarget(name: "VirtioTests", dependencies: ["Virtio"]),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "VhostUserFrontend", "Virtio", "Posix"], cSettings: gnuSource),
        .testTarget(name: "BlockIOTests", dependencies: ["BlockIO", "Posix", "DaemonTestSupport"], cSettings: gnuSource),
        .testTarget(name: "JSONRPCTests", dependencies: ["JSONRPC", "VhostBlkAPI"], cSettings: gnuSource),
        .testTarget(
            name: "BlkDeviceTests",
            dependencies: ["BlkDevice", "Virtio", "Reactor", "BlockIO", "Posix", .product(name: "Logging", package: "swift-log")],
            cSettings: gnuSource),
        .testTarget(
            name: "VhostTargetTests",
            dependencies: ["VhostTarget", "VhostBlkAPI", "JSONRPC", "Posix", .product(name: "Logging", package: "swift-log")],
            cSettings: gnuSource),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["VhostUserFrontend", "Virtio", "VhostUser", "JSONRPC", "Posix", "DaemonTestSupport"],
            cSettings: gnuSource),
        .testTarget(
            name: "E2ETests", dependencies: ["JSONRPC", "Posix", "DaemonTestSupport", "VhostUserFrontend"], cSettings: gnuSource),
    ],
    swiftLanguageModes: [.v6]
)
