import Posix

/// Incremental vhost-user framing: feed it what `recvmsg` returned, take out
/// whole messages. Pure (no syscalls), never traps; a peer may dribble bytes.
///
/// fds: a front end sends each message (header + payload) with one `sendmsg`
/// and its fds attached. Linux's unix-stream `recvmsg` may glue fd-less
/// messages *before* an fd-carrying one into the same read, and stops right
/// after the fd-carrying one; so a chunk's fds belong to the last message
/// that starts inside the chunk (or, if none starts there, to the message in
/// progress). They are pinned to that message's first stream offset.
///
/// fd ownership:
/// - `feed` takes ownership of `fds`.
/// - `nextMessage()` hands a message's fds to the caller with the message.
/// - When `nextMessage()` throws a decode error (the framing stays intact, the
///   reader stays usable) that message's fds move to `takeRejectedFDs()`.
/// - After a framing error (bad version, oversized payload, too many fds) the
///   reader is failed: every later call rethrows it; close the connection and
///   `takeAllFDs()`.
/// - On teardown, `takeAllFDs()` returns everything still held. The caller
///   closes what it takes.
public struct VhostUserMessageReader: Sendable {
    /// Largest payload accepted: covers an 8-region mem table (264 bytes) and a
    /// 256-byte config (268) with ample room.
    public static let maxPayloadSize = 4096
    /// Most descriptors held while waiting for a message to complete.
    public static let maxPendingFDs = 64

    private var buffer: [UInt8] = []
    /// Index in `buffer` of the first unconsumed byte.
    private var start = 0
    /// Stream offset of `buffer[0]`.
    private var bufferOrigin: UInt64 = 0
    private var pendingFDs: [(offset: UInt64, fd: FileDescriptor)] = []
    private var rejectedFDs: [FileDescriptor] = []
    private var failure: VhostUserError?

    public init() {}

    /// Bytes buffered and not yet part of a returned message.
    public var bufferedByteCount: Int { buffer.count - start }
    /// The framing error that stopped this reader, if any.
    public var failedWith: VhostUserError? { failure }

    /// Appends received bytes; `fds` arrived with the first of them. Takes ownership of `fds`.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, fds: [FileDescriptor] = []) {
        if failure != nil {
            rejectedFDs.append(contentsOf: fds)
            return
        }
        let chunkStart = buffer.count
        buffer.append(contentsOf: bytes)
        if !fds.isEmpty {
            let offset = bufferOrigin &+ UInt64(lastMessageStart(before: buffer.count, from: chunkStart))
            for fd in fds { pendingFDs.append((offset, fd)) }
        }
        if pendingFDs.count > Self.maxPendingFDs { failure = .tooManyFDs(count: pendingFDs.count) }
    }

    /// Appends received bytes (array form, for tests and the front end).
    public mutating func feed(_ bytes: [UInt8], fds: [FileDescriptor] = []) {
        bytes.withUnsafeBytes { feed($0, fds: fds) }
    }

    /// The next complete, validated message, or nil if more bytes are needed.
    public mutating func nextMessage() throws(VhostUserError) -> VhostUserMessage? {
        if let failure { throw failure }
        guard bufferedByteCount >= VhostUserHeader.byteSize else { return nil }
        let header = buffer.withUnsafeBytes { raw in
            VhostUserHeader(parsing: UnsafeRawBufferPointer(rebasing: raw[start...]))
        }
        guard let header else { return nil }
        guard header.version == VhostUserHeader.version else {
            return try fail(.badVersion(flags: header.flags))
        }
        guard header.size <= UInt32(Self.maxPayloadSize) else {
            return try fail(.payloadTooLarge(request: header.request, size: header.size, limit: Self.maxPayloadSize))
        }
        let total = VhostUserHeader.byteSize + Int(header.size)
        guard bufferedByteCount >= total else { return nil }

        let body = Array(buffer[(start + VhostUserHeader.byteSize)..<(start + total)])
        let messageStart = bufferOrigin &+ UInt64(start)
        let messageEnd = messageStart &+ UInt64(total)
        var fds: [FileDescriptor] = []
        var keep: [(offset: UInt64, fd: FileDescriptor)] = []
        for entry in pendingFDs {
            // fds pinned before this message (no message took them) belong to it too.
            if entry.offset < messageEnd { fds.append(entry.fd) } else { keep.append(entry) }
        }
        pendingFDs = keep
        consume(total)

        do {
            return try VhostUserMessage.decode(header: header, body: body, fds: fds)
        } catch {
            rejectedFDs.append(contentsOf: fds)
            throw error
        }
    }

    /// Descriptors of messages that failed to decode; the caller closes them.
    public mutating func takeRejectedFDs() -> [FileDescriptor] {
        defer { rejectedFDs = [] }
        return rejectedFDs
    }

    /// Every descriptor still held (rejected and pending); the caller closes them.
    public mutating func takeAllFDs() -> [FileDescriptor] {
        defer {
            rejectedFDs = []
            pendingFDs = []
        }
        return rejectedFDs + pendingFDs.map(\.fd)
    }

    /// Buffer index of the last message boundary in `[from, end)`, walking
    /// headers from `start`; `from` if no boundary lies there (or one cannot
    /// be found because a size is bogus: the reader will fail on it anyway).
    private func lastMessageStart(before end: Int, from: Int) -> Int {
        var pos = start
        var last = from
        while pos < end {
            if pos >= from { last = pos }
            let header = buffer.withUnsafeBytes { raw in
                VhostUserHeader(parsing: UnsafeRawBufferPointer(rebasing: raw[pos..<end]))
            }
            guard let header, header.size <= UInt32(Self.maxPayloadSize) else { break }
            pos += VhostUserHeader.byteSize + Int(header.size)
        }
        return last
    }

    private mutating func fail(_ error: VhostUserError) throws(VhostUserError) -> VhostUserMessage? {
        failure = error
        throw error
    }

    private mutating func consume(_ count: Int) {
        start += count
        if start == buffer.count {
            bufferOrigin = bufferOrigin &+ UInt64(buffer.count)
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 8192 {
            bufferOrigin = bufferOrigin &+ UInt64(start)
            buffer.removeFirst(start)
            start = 0
        }
    }
}
