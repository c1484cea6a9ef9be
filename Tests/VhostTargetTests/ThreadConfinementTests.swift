import Logging
import Posix
import Testing
@testable import VhostTarget

/// Control-plane state is touched on the control loop's thread: the
/// debug-build checks (`EventLoop.preconditionInLoop`) let the loop's
/// thread in and stop anyone else.
@Suite struct ControlLoopConfinementTests {
    @Test func theLoopsThreadPasses() throws {
        let loop = try EventLoop()  // this thread is the loop's until another runs it
        #expect(loop.inLoop)
        let calls = StorageCalls(loop: loop, logger: Logger(label: "confinement-test"))
        _ = try calls.reserve(for: "a file")
        #expect(calls.running == 1)
    }

    @Test(.enabled(if: _isDebugAssertConfiguration(), "release builds compile the check out"))
    func storageCallsOffTheLoopStopADebugBuild() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let loop = try EventLoop()
            let other = try PosixThread.start(name: "not-the-loop") {
                let calls = StorageCalls(loop: loop, logger: Logger(label: "confinement-test"))
                _ = try? calls.reserve(for: "a file")
            }
            PosixThread.join(other)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("control-plane state touched off the control loop's thread"), "\(stderr)")
        #expect(stderr.contains("StorageCalls.swift"), "\(stderr)")
    }
}
