import Glibc
import Posix
import VhostUser

/// The frontend's end of a vhost-user session: bytes and descriptors in,
/// replies out (vhost-user spec, "Communication"). It knows the framing,
/// not what a message means: `VhostUserSession.handle` decides that.
///
/// `VhostUserMessageReader` buffers partial messages, so a peer that
/// dribbles bytes never holds the control loop, and attributes descriptors
/// to the message they were sent with (a `recvmsg` may return earlier
/// messages glued to the one that carries them).
///
/// fd ownership: descriptors received are the reader's until
/// `nextMessage` hands them out with their message; `close` closes what it
/// still holds, then the socket.
struct SessionConnection {
    /// What one read of the (non-blocking) socket brought.
    enum Input: Equatable {
        /// Bytes, now in the reader: complete messages may be waiting.
        case bytes
        /// Nothing to read yet.
        case wouldBlock
        /// The frontend closed its end.
        case endOfFile
        /// More descriptors than any message carries (the control data was cut).
        case tooManyDescriptors
        case failed(Errno)
    }

    let socket: FileDescriptor
    /// The frontend's process (SO_PEERCRED), for logs and `vhost_get_controllers`.
    let peerPID: Int32?
    private var reader = VhostUserMessageReader()

    init(socket: FileDescriptor) {
        self.socket = socket
        peerPID = UnixSocket.peerPID(socket)
    }

    /// Reads what the socket has and feeds it to the reader. Descriptors
    /// that came with an end of file or a cut control message are closed.
    mutating func receive() -> Input {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let received: UnixSocket.Received
        do throws(Errno) {
            received = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) in try UnixSocket.receive(socket, into: raw, maxFDs: 8) }
            }.get()
        } catch {
            return error == .EAGAIN ? .wouldBlock : .failed(error)
        }
        if received.count == 0 || received.truncated {
            received.fds.closeAll()
            return received.count == 0 ? .endOfFile : .tooManyDescriptors
        }
        buffer.withUnsafeBytes { raw in
            reader.feed(UnsafeRawBufferPointer(rebasing: raw[0..<received.count]), fds: received.fds)
        }
        return .bytes
    }

    /// The next complete message, with its descriptors (the caller owns
    /// them), or nil. A message that does not decode throws; its
    /// descriptors are closed.
    mutating func nextMessage() throws(VhostUserError) -> VhostUserMessage? {
        do {
            return try reader.nextMessage()
        } catch {
            reader.takeRejectedFDs().closeAll()
            throw error
        }
    }

    /// Sends the reply to `request` (vhost-user spec, "Reply"), with `fd`
    /// attached when given (GET_INFLIGHT_FD); the caller keeps `fd`.
    func reply(to request: VhostUserRequest, _ payload: VhostUserPayload, fd: FileDescriptor? = nil) throws(Errno) {
        try UnixSocket.sendAll(socket, VhostUserReply.encode(request: request, payload: payload), fds: fd.map { [$0] } ?? [])
    }

    /// Whether the frontend has closed its end (or its sending side),
    /// whether or not the loop has seen it yet: its reconnect may come in
    /// the same batch of events. What it sent before is still to be read.
    func hasHungUp() -> Bool {
        guard let revents = try? socket.poll(Int16(POLLRDHUP), timeoutMilliseconds: 0) else { return false }
        return Int32(revents) & (POLLHUP | POLLRDHUP | POLLERR) != 0
    }

    /// Closes the descriptors of messages not yet handed out, then the socket.
    mutating func close() {
        reader.takeAllFDs().closeAll()
        socket.close()
    }
}
