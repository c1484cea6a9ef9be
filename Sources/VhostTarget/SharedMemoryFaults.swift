import Posix

/// A frontend that shrinks memory it shared would make the daemon take SIGBUS
/// on its next access; `SharedMemoryGuard` turns that into zero pages and a
/// wake-up of the control loop, which ends that frontend's session here.
/// The other controllers keep running.
extension VhostTarget {
    func guardSharedMemory() throws(TargetStartError) {
        do {
            let faults = try EventFD()
            try SharedMemoryGuard.install(notify: faults)
            _ = try loop.register(faults.fd, events: .readable) { [unowned self] _ in
                faults.drain()
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
