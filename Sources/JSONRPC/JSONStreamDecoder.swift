internal import CJansson

/// Splits a byte stream of back-to-back JSON values into values
/// (no framing, no newline required; rpc.py sends pretty JSON with no
/// trailing newline: docs/PROTOCOL-NOTES.md, "Framing").
///
/// Feed bytes with `append`, then call `next()` until it answers
/// `.needMoreInput`. A `.parseError` or `.tooLarge` is final: the stream has
/// no resync point, so every later `next()` repeats it and the connection
/// should close after the error reply.
public struct JSONStreamDecoder: Sendable {
    /// What `next()` found.
    public enum Next: Sendable, Equatable {
        /// One complete value; its bytes are consumed.
        case value(JSON)
        /// The buffer holds only whitespace or the start of a value.
        case needMoreInput
        /// The input is not JSON (or nests deeper than `maxDepth`).
        case parseError(String)
        /// A single value grew beyond `maxBytes`.
        case tooLarge
    }

    /// Default for `maxBytes`: 1 MiB per value.
    public static let defaultMaxBytes = 1 << 20
    /// Default for `maxDepth`: 64 nested arrays/objects.
    public static let defaultMaxDepth = 64

    /// The most bytes one value (with its leading whitespace) may take.
    public let maxBytes: Int
    /// The most arrays/objects one value may nest.
    public let maxDepth: Int

    private var buffer: [UInt8] = []
    private var start = 0
    private var scanner: JSONValueScanner
    private var failure: Next?

    public init(maxBytes: Int = JSONStreamDecoder.defaultMaxBytes, maxDepth: Int = JSONStreamDecoder.defaultMaxDepth) {
        self.maxBytes = max(1, maxBytes)
        self.maxDepth = max(1, maxDepth)
        self.scanner = JSONValueScanner(maxDepth: self.maxDepth)
    }

    /// Bytes received and not yet returned as a value.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds received bytes.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        buffer.append(contentsOf: bytes)
    }

    /// Adds received bytes.
    public mutating func append(contentsOf bytes: [UInt8]) {
        guard failure == nil else { return }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete value, or why there is none.
    public mutating func next() -> Next {
        if let failure { return failure }
        switch scanner.scan(buffer[start...]) {
        case .incomplete(let whitespace):
            start += whitespace
            scanner.dropLeading(whitespace)
            compact()
            if bufferedByteCount > maxBytes { return fail(.tooLarge) }
            return .needMoreInput
        case .invalid(let message):
            return fail(.parseError(message))
        case .complete(let end):
            if end > maxBytes { return fail(.tooLarge) }
            let result = buffer.withUnsafeBytes { raw in
                Jansson.load(
                    UnsafeRawBufferPointer(rebasing: raw[start..<(start + end)]),
                    flags: Int(JSON_DECODE_ANY), maxDepth: maxDepth)
            }
            switch result {
            case .success(let value):
                start += end
                scanner.reset()
                compact()
                return .value(value)
            case .failure(let error):
                return fail(.parseError(error.message))
            }
        }
    }

    private mutating func fail(_ outcome: Next) -> Next {
        failure = outcome
        buffer = []
        start = 0
        return outcome
    }

    /// Drops consumed bytes once they are all consumed or pile up.
    private mutating func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 4 * 65536)
            start = 0
        } else if start >= 65536 {
            buffer.removeFirst(start)
            start = 0
        }
    }
}
