import BlkDevice
import Posix
import VhostUser
import Virtio

/// What the frontend sees of the device besides its queues: the config
/// space (virtio 1.2 §5.2.4), backend changes (resize, attach, detach) and
/// the backend channel that announces them (vhost-user spec, "Back-end
/// communication").
extension VhostUserSession {
    // MARK: Config space

    /// SET_CONFIG: only `writeback` is writable (CONFIG_WCE, virtio 1.2
    /// §5.2.5.1): 0 = write-through. False when refused (REPLY_ACK then
    /// fails it; the session goes on).
    func setConfig(offset: UInt32, size: UInt32, payload: [UInt8]) -> Bool {
        var config = controller.config
        guard features.contains(.configWCE), config.applyWrite(offset: Int(offset), bytes: payload) else {
            logger.warning("SET_CONFIG offset \(offset) size \(size) refused: only the writeback byte is writable")
            return false
        }
        let writeThrough = config.writeback == 0
        if writeThrough != controller.writeThrough {
            controller.writeThrough = writeThrough
            logger.notice("guest switched the write cache to \(writeThrough ? "write-through" : "write-back")")
            backendChanged(waitForPreviousRequests: false, notifyFrontend: false)
            controller.guestChangedSavedState?()
        }
        return true
    }

    // MARK: Backend channel

    /// SET_SLAVE_REQ_FD: `channel` replaces the backend channel. It is
    /// non-blocking: the control loop never waits on a frontend that does
    /// not read.
    func setBackendChannel(_ channel: FileDescriptor) {
        backendChannel?.close()
        try? channel.setNonBlocking()
        backendChannel = channel
    }

    /// Sends CONFIG_CHANGE_MSG on the backend channel (vhost-user spec,
    /// "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG") without asking for a reply:
    /// QEMU answers it only after a GET_CONFIG on the main socket, which
    /// this same thread serves.
    func notifyConfigChanged() {
        guard protocolFeatures.contains(.config), protocolFeatures.contains(.slaveReq), let channel = backendChannel else {
            logger.info("config changed; the front-end reads it on its next GET_CONFIG (no backend channel)")
            return
        }
        do {
            try UnixSocket.sendAll(channel, VhostUserBackendMessage.configChange())
            logger.info("config change sent to the front-end", metadata: ["capacity": "\(controller.config.capacity)"])
        } catch {
            logger.warning("cannot send the config change to the front-end: \(error)")
        }
    }

    // MARK: Backend changes (resize, attach, detach)

    /// Hands every running queue the controller's current backend and tells
    /// the front-end its config changed. With `waitForPreviousRequests`,
    /// `done` runs (on the control loop) once no request dispatched on the
    /// old backend is in flight (detach, shrink), so the old backend may be
    /// released or cut; the loop serves everything else meanwhile.
    func backendChanged(waitForPreviousRequests: Bool, notifyFrontend: Bool = true, then done: @escaping () -> Void = {}) {
        let backend = controller.deviceBackend()
        let servers = vrings.compactMap(\.server)
        guard waitForPreviousRequests, !servers.isEmpty else {
            // Applied before the RPC answers: a request the client sends after the
            // answer must see the new backend, even if the reactor polls the ring
            // before it reads its inbox.
            for server in servers { server.reactor.postAndWait { server.updateBackend(backend) } }
            if notifyFrontend { notifyConfigChanged() }
            done()
            return
        }
        let drain = BackendDrain(servers: servers.count, logger: logger) { [weak self] in
            if notifyFrontend { self?.notifyConfigChanged() }
            done()
        }
        drain.warnWhileWaiting(on: loop)
        let pending = LoopBound(drain), loop = self.loop
        for server in servers {
            server.reactor.post {
                server.updateBackend(backend) { loop.execute { pending.object.serverDrained() } }
            }
        }
    }
}
