/// Finds where the first complete JSON value in a byte stream ends, without
/// parsing it (requests arrive back to back, unframed: docs/PROTOCOL-NOTES.md,
/// "Framing").
///
/// jansson reports a token cut at the end of the buffer (`tru`, `1e`, `"\u00`)
/// as invalid rather than premature, so the decoder first finds the value's
/// extent here and hands jansson only complete values. The scan is
/// incremental: bytes already looked at are not looked at again.
struct JSONValueScanner {
    enum Outcome: Equatable {
        /// More bytes are needed; `leadingWhitespace` bytes at the front may be dropped.
        case incomplete(leadingWhitespace: Int)
        /// The value ends just before this offset.
        case complete(end: Int)
        /// The input can never become valid JSON.
        case invalid(String)
    }

    private enum Kind {
        case none
        case container
        case string
        case literal(word: [UInt8], matched: Int)
        case number
    }

    let maxDepth: Int
    private var kind: Kind = .none
    private var scanned = 0
    private var depth = 0
    private var inString = false
    private var escaped = false

    init(maxDepth: Int) {
        self.maxDepth = maxDepth
    }

    /// Continues the scan over `bytes`, the unconsumed input (a longer copy of
    /// what earlier calls saw).
    mutating func scan(_ bytes: ArraySlice<UInt8>) -> Outcome {
        let base = bytes.startIndex
        while scanned < bytes.count {
            let byte = bytes[base + scanned]
            scanned += 1
            switch kind {
            case .none:
                if Self.isWhitespace(byte) { continue }
                if let outcome = start(byte) { return outcome }
            case .container:
                if inString {
                    stepString(byte)
                    continue
                }
                switch byte {
                case UInt8(ascii: "\""):
                    inString = true
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                    if depth > maxDepth { return .invalid("nesting too deep") }
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return .complete(end: scanned) }
                default:
                    break
                }
            case .string:
                stepString(byte)
                if !inString { return .complete(end: scanned) }
            case .literal(let word, let matched):
                guard matched < word.count, byte == word[matched] else {
                    return .invalid("invalid token near '\(String(decoding: word.prefix(matched), as: UTF8.self))'")
                }
                kind = .literal(word: word, matched: matched + 1)
                if matched + 1 == word.count { return .complete(end: scanned) }
            case .number:
                if !Self.isNumberByte(byte) {
                    scanned -= 1
                    return .complete(end: scanned)
                }
            }
        }
        if case .none = kind { return .incomplete(leadingWhitespace: scanned) }
        return .incomplete(leadingWhitespace: 0)
    }

    /// Forgets the current value; the next scan starts a new one.
    mutating func reset() {
        self = JSONValueScanner(maxDepth: maxDepth)
    }

    /// Notes that the caller dropped `count` leading whitespace bytes.
    mutating func dropLeading(_ count: Int) {
        scanned -= count
    }

    private mutating func start(_ byte: UInt8) -> Outcome? {
        switch byte {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            kind = .container
            depth = 1
            if depth > maxDepth { return .invalid("nesting too deep") }
        case UInt8(ascii: "\""):
            kind = .string
            inString = true
        case UInt8(ascii: "t"):
            kind = .literal(word: Array("true".utf8), matched: 1)
        case UInt8(ascii: "f"):
            kind = .literal(word: Array("false".utf8), matched: 1)
        case UInt8(ascii: "n"):
            kind = .literal(word: Array("null".utf8), matched: 1)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            kind = .number
        default:
            return .invalid("invalid token at byte \(scanned - 1)")
        }
        return nil
    }

    private mutating func stepString(_ byte: UInt8) {
        if escaped {
            escaped = false
        } else if byte == UInt8(ascii: "\\") {
            escaped = true
        } else if byte == UInt8(ascii: "\"") {
            inString = false
        }
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    private static func isNumberByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"),
            UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"):
            return true
        default:
            return false
        }
    }
}
