import Posix

/// A frontend that shrinks memory it shared would make the daemon take SIGBUS
/// on its next access; `SharedMemoryGuard` turns that into zero pages and a
/// wake-up of the control loop, which ends that frontend's session here.
/// The other controllers keep running. A SIGBUS some process sent
/// (`kill -BUS`) is ignored by the guard and logged here.
extension VhostTarget {
    func guardSharedMemory() throws(TargetStartError) {
        do {
            let faults = try EventFD()
            try SharedMemoryGuard.install(notify: faults)
            var ignoredSoFar = SharedMemoryGuard.ignoredSignals.count
            _ = try loop.register(faults.fd, events: .readable) { [unowned self] _ in
                faults.drain()
                let ignored = SharedMemoryGuard.ignoredSignals
                if ignored.count != ignoredSoFar {
                    let sender = ignored.lastPID > 0 ? "pid \(ignored.lastPID), uid \(ignored.lastUID)" : "unknown"
                    logger.warning("ignored \(ignored.count &- ignoredSoFar) SIGBUS signal(s) sent by a process (last sender: \(sender)): only a memory fault is a SIGBUS the daemon acts on")
                    ignoredSoFar = ignored.count
                }
                endSessionsThatLostMemory()
            }
        } catch {
            throw TargetStartError("cannot guard frontend-shared memory against SIGBUS: \(error)")
        }
    }

    private func endSessionsThatLostMemory() {
        for name in controllerOrder {
            guard let session = controllers[name]?.session, !session.sharedMemoryIntact() else { continue }
            endSession(session)
        }
    }
}
