import BlockIO
import Dispatch
import Glibc
import Logging
import Posix
import Reactor
import Testing
import Virtio
@testable import BlkDevice

/// Reactor-owned state is touched on its reactor: the debug-build checks
/// (`Reactor.preconditionOnReactor`) let the reactor in and stop anyone else.
@Suite struct ThreadConfinementTests {
    /// A started null-backed queue of 8 descriptors over 64 KiB of zeroed
    /// fake guest RAM, on a running reactor.
    final class QueueRig {
        let reactor: Reactor
        let server: VirtqueueServer
        private let ram: UnsafeMutableRawPointer
        private let kick: EventFD
        private let call: EventFD

        init() throws {
            ram = .allocate(byteCount: 0x10000, alignment: 4096)
            memset(ram, 0, 0x10000)
            let memory = try GuestMemory(regions: [
                GuestMemoryRegion(guestPhysAddr: 0, size: 0x10000, userAddr: 0x7f00_0000_0000, host: ram),
            ])
            let ring = try SplitQueue(size: 8, desc: ram + 0x1000, avail: ram + 0x2000, used: ram + 0x3000, eventIdx: false)
            kick = try EventFD()
            call = try EventFD()
            let logger = Logger(label: "confinement-test")
            reactor = try Reactor(index: 0, cpu: 0, useURing: URingEngine.probe() == nil, logger: logger)
            try reactor.start()
            let backend = DeviceBackend(storage: .null, capacitySectors: 8, readOnly: false, blockSize: 512, serial: [])
            server = VirtqueueServer(
                queueIndex: 0, ring: ring, memory: memory, kickFD: kick.fd, callFD: call.fd,
                backend: backend, reactor: reactor, logger: logger)
            let server = self.server
            reactor.postAndWait { server.start() }
        }

        /// Stops the queue on its reactor, then the reactor.
        func close() {
            let stopped = DispatchSemaphore(value: 0)
            let server = self.server
            reactor.post { server.stop { _ in stopped.signal() } }
            stopped.wait()
            reactor.stop()
            kick.close()
            call.close()
            ram.deallocate()
        }
    }

    @Test func aQueueServesItsReactor() throws {
        let rig = try QueueRig()
        defer { rig.close() }
        let server = rig.server, reactor = rig.reactor
        let stats = reactor.postAndWait {
            reactor.preconditionOnReactor()
            return server.statsSnapshot()
        }
        #expect(stats.size == 8)
        #expect(reactor.postAndWait { reactor.isOnReactor })
        #expect(!reactor.isOnReactor)
    }

    @Test(.enabled(if: _isDebugAssertConfiguration(), "release builds compile the check out"))
    func aQueueTouchedOffItsReactorStopsADebugBuild() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let rig = try QueueRig()
            _ = rig.server.statsSnapshot()  // from the test's thread, not reactor_0
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("reactor-confined state touched off reactor_0's thread"), "\(stderr)")
        #expect(stderr.contains("VirtqueueServer.swift"), "\(stderr)")
    }
}
