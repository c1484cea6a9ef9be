// libFuzzer target: the vhost-user framing and payload decoder
// (VhostUserMessageReader + VhostUserMessage.decode; vhost-user spec,
// "Message Specification"; docs/PROTOCOL-NOTES.md, "File descriptors").
//
// Input: byte 0 picks how the rest is cut into `recvmsg` chunks and how many
// (fake) fds ride on each; the rest is the byte stream a front end sends.
// Checks: no trap or memory error; every fd fed comes back exactly once
// (with a message, as rejected, or from takeAllFDs); every decoded message
// re-encodes to bytes that decode to the same payload.
import Posix
import VhostUser

@_cdecl("LLVMFuzzerTestOneInput")
public func vhostUserReaderFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    guard let mode = input.first else { return 0 }
    let stream = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(input)[1...])
    // Chunk sizes 1...16, or everything at once.
    let chunk = mode & 0x0f == 0 ? max(1, stream.count) : Int(mode & 0x0f)
    let fdsPerChunk = Int(mode >> 4) & 0x3

    var reader = VhostUserMessageReader()
    var nextFD: Int32 = 1000
    var fed = Set<Int32>()
    var returned: [Int32] = []
    var offset = 0
    var failed = false

    func drain(_ reader: inout VhostUserMessageReader) -> Bool {
        while true {
            do {
                guard let message = try reader.nextMessage() else { return true }
                returned += message.fds.map(\.rawValue)
                checkRoundTrip(message)
            } catch {
                _ = error.description
                returned += reader.takeRejectedFDs().map(\.rawValue)
                if reader.failedWith != nil { return false }
            }
        }
    }

    while offset < stream.count {
        let end = min(stream.count, offset + chunk)
        var fds: [FileDescriptor] = []  // fake numbers: the reader only hands them on
        for _ in 0..<fdsPerChunk where offset % 3 == 0 {
            fds.append(FileDescriptor(nextFD))
            fed.insert(nextFD)
            nextFD += 1
        }
        reader.feed(UnsafeRawBufferPointer(rebasing: stream[offset..<end]), fds: fds)
        offset = end
        if !failed && !drain(&reader) { failed = true }
    }
    returned += reader.takeAllFDs().map(\.rawValue)
    guard returned.count == fed.count, Set(returned) == fed else {
        fatalError("fd conservation broken: fed \(fed.sorted()), returned \(returned.sorted())")
    }
    return 0
}

/// A decoded message, re-encoded, decodes to the same header request and payload.
private func checkRoundTrip(_ message: VhostUserMessage) {
    let bytes = message.encoded()
    guard let header = VhostUserHeader(parsing: bytes) else { fatalError("encoded message has no header") }
    let body = Array(bytes.dropFirst(VhostUserHeader.byteSize))
    do {
        let again = try VhostUserMessage.decode(header: header, body: body, fds: message.fds)
        guard again.payload == message.payload, again.request == message.request else {
            fatalError("round trip changed \(message.payload) into \(again.payload)")
        }
    } catch {
        fatalError("re-encoded \(message.request) does not decode: \(error)")
    }
}
