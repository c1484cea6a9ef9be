/// A JSON object: string keys in insertion order, each key at most once.
///
/// Equality ignores order (`{"a":1,"b":2} == {"b":2,"a":1}`), as JSON does;
/// encoding keeps it.
public struct JSONObject: Sendable, Equatable {
    private var entries: [(key: String, value: JSON)] = []
    private var index: [String: Int] = [:]

    /// An empty object.
    public init() {}

    /// An object from key/value pairs; a repeated key keeps its first
    /// position and its last value.
    public init(_ pairs: [(String, JSON)]) {
        for (key, value) in pairs { self[key] = value }
    }

    /// An object from a dictionary (keys in the dictionary's order).
    public init(_ dictionary: [String: JSON]) {
        for (key, value) in dictionary { self[key] = value }
    }

    /// The keys, in insertion order.
    public var keys: [String] { entries.map(\.key) }

    /// The key/value pairs, in insertion order.
    public var pairs: [(key: String, value: JSON)] { entries }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// The value for `key`; setting nil removes the key.
    public subscript(key: String) -> JSON? {
        get { index[key].map { entries[$0].value } }
        set {
            if let newValue {
                if let position = index[key] {
                    entries[position].value = newValue
                } else {
                    index[key] = entries.count
                    entries.append((key, newValue))
                }
            } else if let position = index.removeValue(forKey: key) {
                entries.remove(at: position)
                for later in position..<entries.count { index[entries[later].key] = later }
            }
        }
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.entries.count == rhs.entries.count else { return false }
        for (key, value) in lhs.entries where rhs[key] != value { return false }
        return true
    }
}

extension JSONObject: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, JSON)...) {
        self.init(elements)
    }
}

extension JSONObject: Sequence {
    public func makeIterator() -> IndexingIterator<[(key: String, value: JSON)]> {
        entries.makeIterator()
    }
}
