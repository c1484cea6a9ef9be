public import JSONRPC

/// Permission bits for a Unix socket: an octal string ("0660", "660",
/// "0o660") or a JSON integer holding the mode's value (432 for 0660).
/// Only the 0777 bits are allowed.
public struct SocketMode: RPCParamValue, Equatable, Hashable, CustomStringConvertible {
    public static var rpcTypeName: String { "octal mode string or integer 0...511" }
    public let bits: UInt32

    public init?(bits: UInt32) {
        guard bits <= 0o777 else { return nil }
        self.bits = bits
    }

    /// Parses an octal mode, with or without a leading "0" or "0o".
    public init?(octal text: String) {
        var digits = Substring(text)
        if digits.hasPrefix("0o") || digits.hasPrefix("0O") { digits = digits.dropFirst(2) }
        guard !digits.isEmpty, digits.count <= 4, let value = UInt32(digits, radix: 8) else { return nil }
        self.init(bits: value)
    }

    public init?(rpcJSON json: JSON) {
        if let text = json.stringValue {
            self.init(octal: text)
        } else if case .int(let value) = json, let bits = UInt32(exactly: value) {
            self.init(bits: bits)
        } else {
            return nil
        }
    }

    /// Written back as an octal string, e.g. "0660".
    public var rpcJSON: JSON { .string(description) }

    /// "0660".
    public var description: String {
        let text = String(bits, radix: 8)
        return String(repeating: "0", count: max(0, 4 - text.count)) + text
    }
}

/// A group for a Unix socket: a name ("kvm") or a numeric id (string of
/// digits or a JSON integer).
public enum SocketGroup: RPCParamValue, Equatable, Hashable, CustomStringConvertible {
    case name(String)
    case id(UInt32)

    public static var rpcTypeName: String { "group name or gid" }

    /// "kvm" or "107".
    public init?(text: String) {
        guard !text.isEmpty, text.utf8.count <= 256 else { return nil }
        if let id = UInt32(text) {
            guard id != UInt32.max else { return nil }  // (gid_t)-1 means "unchanged" to chown
            self = .id(id)
        } else {
            guard !text.contains(":"), !text.contains("\n"), !text.contains("\0") else { return nil }
            self = .name(text)
        }
    }

    public init?(rpcJSON json: JSON) {
        if let text = json.stringValue {
            self.init(text: text)
        } else if case .int(let value) = json, let id = UInt32(exactly: value), id != UInt32.max {
            self = .id(id)
        } else {
            return nil
        }
    }

    public var rpcJSON: JSON {
        switch self {
        case .name(let name): return .string(name)
        case .id(let id): return .int(Int64(id))
        }
    }

    public var description: String {
        switch self {
        case .name(let name): return name
        case .id(let id): return String(id)
        }
    }
}
