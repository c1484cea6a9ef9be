import BlkDevice
import Glibc
import Logging
import Posix
import Reactor
import VhostUser
import Virtio

/// One frontend connection to a controller (SPDK's `spdk_vhost_session`):
/// negotiated features, the guest memory map and the queues.
///
/// Messages are decoded on the control loop; anything that touches a running
/// queue travels to that queue's reactor and completes there
/// (vhost-user spec, "Communication").
///
/// The layers, as rust-vmm's vhost-user-backend and SPDK split them:
/// - `SessionConnection`: the socket: bytes and descriptors in, replies out.
/// - `handle(_:)` (SessionMessages.swift): one message in, an `Outcome`
///   out: the payload for its request, `SessionMessageValidator`'s checks,
///   then the effect on the session and its queues.
/// - This file: runs the two (`readable`, `perform`) and ends the session.
/// - Queue start, stop and set-aside: SessionQueues.swift; shared memory,
///   dirty log and inflight region: SessionMemory.swift; config space and
///   backend changes: SessionBackend.swift.
///
/// The control loop never waits for a queue to drain: a message that needs
/// stopped queues (GET_VRING_BASE, SET_MEM_TABLE, ...) starts stopping them
/// and is set aside, with this frontend's socket unwatched, until the
/// reactors report them stopped; then it runs again, then the messages that
/// followed it. A disk that hangs holds up its own frontend only.
final class VhostUserSession {
    /// Per-queue state as the frontend has set it up.
    struct Vring {
        var size: UInt16 = 0
        /// SET_VRING_BASE's value: a split ring's next avail index, or a
        /// packed ring's two positions (`PackedRingBase`).
        var base: UInt32 = 0
        var address: VringAddress?
        /// Owned by the session; a running queue's server uses them until it stops.
        var kickFD: FileDescriptor?
        /// nil: never signal (SET_VRING_CALL with VHOST_USER_VRING_NOFD_MASK).
        var callFD: FileDescriptor?
        var enabled = false
        var server: VirtqueueServer?
        /// `server` was asked to stop and has not reported yet.
        var stopping = false
    }

    /// A message that waits for queues to stop, with the queues SET_MEM_TABLE
    /// restarts once the new table is mapped.
    struct SetAside {
        let message: VhostUserMessage
        let restart: [Int]
    }

    unowned let controller: Controller
    let loop: EventLoop
    var token: EventLoop.Token?
    /// Called on the control loop when a message handled after a drain ended
    /// the session (the target closes it, as it does when `readable` fails).
    var onFailure: (() -> Void)?
    private var connection: SessionConnection
    let logger: Logger

    var features: VirtioFeatures = []
    var protocolFeatures: VhostUserProtocolFeatures = []
    var mapping: GuestMemoryMapping?
    var vrings: [Vring]
    var backendChannel: FileDescriptor?
    /// The dirty-page log (SET_LOG_BASE), used while LOG_ALL is negotiated.
    var dirtyLog: DirtyLog?
    /// The inflight-tracking region (INFLIGHT_SHMFD), once GET/SET_INFLIGHT_FD set it up.
    var inflight: InflightRegion?
    /// The message waiting for queues to stop; no later message runs before it.
    var setAside: SetAside?
    /// Queues asked to stop that have not reported yet.
    var stopsInFlight = 0
    /// CLOCK_MONOTONIC milliseconds when the current drain began (for warnings).
    var drainStarted: UInt64 = 0
    /// Set once `close` began; called when it is complete.
    var closeWaiters: [() -> Void]?
    private(set) var closed = false

    /// SPDK's session numbers (`vhost_get_controllers`' `sessions`): `vid`
    /// counts connections daemon-wide, `id` those of this controller.
    let vid: UInt32
    let id: UInt32

    init(controller: Controller, socket: FileDescriptor, loop: EventLoop, vid: UInt32 = 0, id: UInt32 = 0) {
        self.controller = controller
        self.vid = vid
        self.id = id
        self.loop = loop
        connection = SessionConnection(socket: socket)
        var logger = controller.logger
        logger[metadataKey: "frontend.pid"] = "\(connection.peerPID.map(String.init) ?? "?")"
        self.logger = logger
        vrings = Array(repeating: Vring(), count: controller.maxQueues)
    }

    /// The frontend's process, when the kernel told (SO_PEERCRED).
    var peerPID: Int32? { connection.peerPID }

    // MARK: Input

    /// Reads what the (non-blocking) socket has and handles every complete
    /// message. Returns false when the session must end (peer closed or
    /// protocol error).
    func readable(_ events: EventLoop.Events) -> Bool {
        if setAside != nil {
            // Unwatched but for hang-ups while a message waits for a drain.
            if !events.isDisjoint(with: [.hangup, .error]) {
                logger.info("frontend disconnected while its queues drained")
                return false
            }
            return true
        }
        switch connection.receive() {
        case .bytes:
            return handleBufferedMessages()
        case .wouldBlock:
            return true
        case .endOfFile:
            logger.info("frontend disconnected")
            return false
        case .tooManyDescriptors:
            return fail("more file descriptors than any message carries")
        case .failed(let error):
            logger.info("frontend socket error: \(error)")
            return false
        }
    }

    /// Handles the complete messages the connection holds, in order, until
    /// one is set aside for a drain.
    func handleBufferedMessages() -> Bool {
        while setAside == nil {
            let message: VhostUserMessage?
            do throws(VhostUserError) {
                message = try connection.nextMessage()
            } catch {
                return fail("bad message: \(error)")
            }
            guard let message else { return true }
            if !process(message) { return false }
        }
        return true
    }

    /// Handles `message` and carries out the outcome. False: the session ends.
    func process(_ message: VhostUserMessage, restart: [Int] = []) -> Bool {
        perform(handle(message, restart: restart), for: message)
    }

    /// The I/O half of a message: sends what `handle` decided, sets the
    /// message aside, or disconnects.
    private func perform(_ outcome: Outcome, for message: VhostUserMessage) -> Bool {
        let request = message.request
        do throws(Errno) {
            switch outcome {
            case .reply(let payload, let fd):
                defer { fd?.close() }
                try connection.reply(to: request, payload, fd: fd)
            case .ack(let success):
                try connection.reply(to: request, .u64(success ? 0 : 1))
            case .setAside(let restart):
                setAsideUntilStopped(message, restart: restart)
            case .disconnect(let reason):
                return fail(reason)
            case .none:
                break
            }
        } catch {
            return fail("cannot reply to \(request): \(error)")
        }
        return true
    }

    /// Logs why the session ends; returns false, for the caller to return.
    func fail(_ why: String) -> Bool {
        logger.error("disconnecting frontend: \(why)")
        return false
    }

    // MARK: End

    /// True once `close` began: the session serves no more messages.
    var isClosing: Bool { closeWaiters != nil || closed }

    /// Whether the frontend has closed its end (`SessionConnection.hasHungUp`).
    func hasHungUp() -> Bool { connection.hasHungUp() }

    /// Ends the session: stops the queues (letting what is in flight
    /// complete), then unmaps memory and closes every descriptor; `done`
    /// runs on the control loop when that is complete. Calling it again adds
    /// a waiter.
    func close(then done: @escaping () -> Void) {
        if closed {
            done()
            return
        }
        if closeWaiters != nil {
            closeWaiters?.append(done)
            return
        }
        closeWaiters = [done]
        if let waiting = setAside {
            waiting.message.fds.closeAll()
            setAside = nil
        }
        if stopped(Array(vrings.indices)) { finishClose() }
    }

    /// Every queue has stopped: releases what the session holds, the socket last.
    func finishClose() {
        for i in vrings.indices {
            vrings[i].kickFD?.close()
            vrings[i].callFD?.close()
            vrings[i] = Vring()
        }
        mapping?.unmapAll()
        mapping = nil
        backendChannel?.close()
        backendChannel = nil
        inflight?.unmap()
        inflight = nil
        dirtyLog = nil
        connection.close()
        closed = true
        let waiters = closeWaiters ?? []
        closeWaiters = nil
        for waiter in waiters { waiter() }
    }
}
