import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// qemu-storage-daemon exporting one image file as a vhost-user-blk socket:
/// a reference backend for checking the harness and guest image.
final class QemuStorageDaemon {
    let socketPath: String
    let logURL: URL
    private let process = Process()

    /// Starts the daemon and waits (bounded) for its socket to appear.
    init(image: URL, socketPath: String, numQueues: Int = 1, writable: Bool = true,
         logURL: URL, timeout: Duration = .seconds(10)) throws {
        guard let binary = E2EEnvironment.storageDaemon else {
            throw E2EError.missingPrerequisites(["qemu-storage-daemon not in PATH (qemu-system-common)"])
        }
        self.socketPath = socketPath
        self.logURL = logURL
        guard FileManager.default.createFile(atPath: logURL.path, contents: nil) else {
            throw E2EError.failed("cannot create \(logURL.path)")
        }
        let log = try FileHandle(forWritingTo: logURL)
        process.executableURL = binary
        process.arguments = [
            "--blockdev", "driver=file,node-name=file0,filename=\(image.path)",
            "--export",
            "type=vhost-user-blk,id=export0,node-name=file0,addr.type=unix,addr.path=\(socketPath),"
                + "writable=\(writable ? "on" : "off"),num-queues=\(numQueues)",
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        let deadline = ContinuousClock.now + timeout
        var info = stat()
        while stat(socketPath, &info) != 0 || (info.st_mode & S_IFMT) != S_IFSOCK {
            guard process.isRunning, ContinuousClock.now < deadline else {
                stop()
                let text = String(decoding: FileManager.default.contents(atPath: logURL.path) ?? Data(), as: UTF8.self)
                throw E2EError.failed("qemu-storage-daemon did not create \(socketPath): \(text)")
            }
            usleep(20_000)
        }
    }

    deinit { stop() }

    /// Kills the daemon and reaps it.
    func stop() {
        guard process.isRunning else { return }
        _ = kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
