// libFuzzer target: the JSON-RPC stream decoder and request envelope
// (JSONStreamDecoder, RPCRequest; docs/PROTOCOL-NOTES.md, "The JSON-RPC socket").
//
// Input: byte 0 picks a chunk size (1...255, 0 = all at once); the rest is
// what a client writes to the RPC socket. The stream is decoded twice, in
// one piece and in chunks, with small limits so they are reached.
// Checks: no trap or memory error; both decodings give the same outcomes;
// (a parse error and an oversized value count as the same fatal end);
// every decoded value re-encodes to text that parses to the same value.
import JSONRPC

@_cdecl("LLVMFuzzerTestOneInput")
public func jsonRPCFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let chunk = Int(data[0])
    let stream = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let whole = decodeAll(stream, chunk: max(1, stream.count))
    let pieces = chunk == 0 ? whole : decodeAll(stream, chunk: chunk)
    guard whole == pieces else { fatalError("chunked decoding differs:\n\(whole)\n\(pieces)") }
    return 0
}

/// Outcomes of decoding `stream` fed `chunk` bytes at a time, then a final drain.
private func decodeAll(_ stream: UnsafeRawBufferPointer, chunk: Int) -> [String] {
    var decoder = JSONStreamDecoder(maxBytes: 4096, maxDepth: 16)
    var outcomes: [String] = []
    var offset = 0
    repeat {
        let end = min(stream.count, offset + chunk)
        decoder.append(UnsafeRawBufferPointer(rebasing: stream[offset..<end]))
        offset = end
        loop: while true {
            switch decoder.next() {
            case .needMoreInput:
                break loop
            case .parseError, .tooLarge:
                // Which of the two comes first may depend on chunking (a long
                // value may be cut off before its bad byte is seen).
                outcomes.append("fatal")
                return outcomes
            case .value(let json):
                outcomes.append(handle(json))
            }
        }
    } while offset < stream.count
    return outcomes
}

/// What the RPC server does with a value, plus a round trip through text.
private func handle(_ json: JSON) -> String {
    let text = json.encoded()
    _ = json.encoded(pretty: true)
    if let again = try? JSON.parse(text), again != json, !containsNaN(json) {
        fatalError("round trip changed \(json) into \(again)")
    }
    let id = RPCRequest.responseID(for: json)
    do {
        let request = try RPCRequest(json)
        _ = request.json.encoded()
        return "request \(request.method) \(request.id?.encoded() ?? "-")"
    } catch {
        return "invalid \(error.code) \(id.encoded())"
    }
}

private func containsNaN(_ json: JSON) -> Bool {
    switch json {
    case .double(let d): return !d.isFinite
    case .array(let items): return items.contains(where: containsNaN)
    case .object(let members): return members.contains { containsNaN($0.value) }
    default: return false
    }
}
