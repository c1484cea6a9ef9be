import Testing

@testable import JSONRPC

/// What rpc.py sends: `json.dumps(req, indent=2)` with no trailing newline.
let rpcPyRequest = """
    {
      "jsonrpc": "2.0",
      "method": "bdev_malloc_create",
      "id": 1,
      "params": {
        "num_blocks": 131072,
        "block_size": 512,
        "name": "m0",
        "md_interleave": false,
        "dif_is_head_of_md": false,
        "u": "caf\\u00e9 \\"q\\" {[ é",
        "r": -1.5e3,
        "n": null,
        "t": true
      }
    }
    """

extension JSONStreamDecoder {
    mutating func feed(_ text: String) { append(contentsOf: Array(text.utf8)) }

    /// All values until the decoder wants more input or fails.
    mutating func drain() -> [Next] {
        var out: [Next] = []
        while true {
            let next = next()
            out.append(next)
            switch next {
            case .value: continue
            default: return out
            }
        }
    }
}

@Suite struct StreamDecoderTests {
    let expected = try? JSON.parse(rpcPyRequest)

    @Test func backToBackValuesWithoutSeparators() throws {
        var decoder = JSONStreamDecoder()
        decoder.feed(#"{"a":1}{"b":2}  [3] "s" 12 true{"c":null}"#)
        let results = decoder.drain()
        #expect(
            results == [
                .value(["a": 1]), .value(["b": 2]), .value([3]), .value("s"), .value(12), .value(true),
                .value(["c": nil]), .needMoreInput,
            ])
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func prettyPrintedWithoutNewline() throws {
        var decoder = JSONStreamDecoder()
        decoder.feed(rpcPyRequest)
        let first = decoder.next()
        #expect(first == .value(try #require(expected)))
        #expect(decoder.next() == .needMoreInput)
    }

    @Test func splitAtEveryByteBoundary() throws {
        let bytes = Array((rpcPyRequest + rpcPyRequest).utf8)
        let value = try #require(expected)
        for cut in 0...bytes.count {
            var decoder = JSONStreamDecoder()
            decoder.append(contentsOf: Array(bytes[..<cut]))
            var values: [JSON] = []
            var results = decoder.drain()
            decoder.append(contentsOf: Array(bytes[cut...]))
            results += decoder.drain()
            for case .value(let v) in results { values.append(v) }
            #expect(values == [value, value], "cut at \(cut)")
            #expect(!results.contains { if case .parseError = $0 { true } else { false } }, "cut at \(cut)")
        }
    }

    @Test func oneByteAtATime() throws {
        var decoder = JSONStreamDecoder()
        var values: [JSON] = []
        for byte in Array((rpcPyRequest + " 42 " + rpcPyRequest).utf8) {
            decoder.append(contentsOf: [byte])
            for case .value(let v) in decoder.drain() { values.append(v) }
        }
        let value = try #require(expected)
        #expect(values == [value, 42, value])
    }

    @Test func scalarAtEndOfBufferWaitsForDelimiter() {
        var decoder = JSONStreamDecoder()
        decoder.feed("12")
        #expect(decoder.next() == .needMoreInput)
        decoder.feed("3 ")
        #expect(decoder.next() == .value(123))
        decoder.feed("tr")
        #expect(decoder.next() == .needMoreInput)
        decoder.feed("ue")
        #expect(decoder.next() == .value(true))
    }

    @Test func whitespaceOnlyNeedsMoreInputAndIsDropped() {
        var decoder = JSONStreamDecoder(maxBytes: 16)
        for _ in 0..<10 {
            decoder.feed(" \n\t\r        ")
            #expect(decoder.next() == .needMoreInput)
        }
        #expect(decoder.bufferedByteCount == 0)
        decoder.feed("{}")
        #expect(decoder.next() == .value([:]))
    }

    @Test func prematureEndKeepsBytes() {
        var decoder = JSONStreamDecoder()
        decoder.feed(#"{"method": "x", "params": {"a": [1, 2"#)
        #expect(decoder.next() == .needMoreInput)
        #expect(decoder.bufferedByteCount > 0)
        decoder.feed("]}}")
        #expect(decoder.next() == .value(["method": "x", "params": ["a": [1, 2]]]))
    }

    @Test(arguments: ["xyz", "}", "]", "{\"a\" 1}", "{\"a\":tru}", "{\"a\":1,}", "{]", "[1 2]", "{\"a\":99999999999999999999}", "-x", "nul ", "\u{0}"])
    func garbageIsParseErrorAndSticky(_ input: String) {
        var decoder = JSONStreamDecoder()
        decoder.feed(input)
        guard case .parseError = decoder.next() else {
            Issue.record("expected parse error for \(input)")
            return
        }
        decoder.feed("{}")
        guard case .parseError = decoder.next() else {
            Issue.record("error must be sticky for \(input)")
            return
        }
    }

    @Test func valuesBeforeGarbageAreStillReturned() {
        var decoder = JSONStreamDecoder()
        decoder.feed(#"{"a":1} oops"#)
        #expect(decoder.next() == .value(["a": 1]))
        guard case .parseError = decoder.next() else {
            Issue.record("expected parse error")
            return
        }
    }

    @Test func tooLargePartialValue() {
        var decoder = JSONStreamDecoder(maxBytes: 100)
        decoder.feed("{\"a\":\"" + String(repeating: "x", count: 200))
        #expect(decoder.next() == .tooLarge)
        #expect(decoder.next() == .tooLarge)
    }

    @Test func tooLargeCompleteValue() {
        var decoder = JSONStreamDecoder(maxBytes: 100)
        decoder.feed("{\"a\":\"" + String(repeating: "x", count: 200) + "\"}")
        #expect(decoder.next() == .tooLarge)
    }

    @Test func manySmallValuesBeyondTheLimitAreFine() {
        var decoder = JSONStreamDecoder(maxBytes: 64)
        decoder.feed(String(repeating: #"{"k":"v"}"#, count: 100))
        let results = decoder.drain()
        #expect(results.count == 101)
        #expect(results.last == .needMoreInput)
    }

    @Test func nestingLimit() {
        var decoder = JSONStreamDecoder(maxDepth: 64)
        decoder.feed(String(repeating: "[", count: 64) + String(repeating: "]", count: 64))
        guard case .value = decoder.next() else {
            Issue.record("64 levels must pass")
            return
        }
        var deep = JSONStreamDecoder(maxDepth: 64)
        deep.feed(String(repeating: "[", count: 65))
        #expect(deep.next() == .parseError("nesting too deep"))
        var hostile = JSONStreamDecoder()
        hostile.feed(String(repeating: "{\"a\":", count: 100_000))
        #expect(hostile.next() == .parseError("nesting too deep"))
    }

    @Test func bracketsInsideStringsDoNotCount() {
        var decoder = JSONStreamDecoder()
        decoder.feed(#"{"a":"}]\"{["}"#)
        #expect(decoder.next() == .value(["a": "}]\"{["]))
    }

    @Test func hugeIntegersAreParseErrors() {
        var decoder = JSONStreamDecoder()
        decoder.feed(#"{"n":-99999999999999999999}"#)
        guard case .parseError = decoder.next() else {
            Issue.record("expected parse error")
            return
        }
        var ok = JSONStreamDecoder()
        ok.feed(#"{"n":9223372036854775807}"#)
        #expect(ok.next() == .value(["n": .int(Int64.max)]))
    }

    @Test func appendFromRawBuffer() {
        var decoder = JSONStreamDecoder()
        let bytes = Array("[1]".utf8)
        bytes.withUnsafeBytes { decoder.append($0) }
        #expect(decoder.next() == .value([1]))
    }
}
