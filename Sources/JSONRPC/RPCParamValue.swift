/// A Swift type a JSON-RPC parameter can be decoded into and encoded from.
/// Decoding failures are -32602 errors that name the key and the type.
public protocol RPCParamValue: Sendable {
    /// The expected type, as error messages name it ("string", "uint32").
    static var rpcTypeName: String { get }
    /// The value of `json`, or nil if it has the wrong type or range.
    init?(rpcJSON json: JSON)
    /// The wire form.
    var rpcJSON: JSON { get }
    /// True for integer types, whose numeric mismatches are range errors.
    static var isInteger: Bool { get }
}

extension RPCParamValue {
    public static var isInteger: Bool { false }
}

extension String: RPCParamValue {
    public static var rpcTypeName: String { "string" }
    public init?(rpcJSON json: JSON) {
        guard let value = json.stringValue else { return nil }
        self = value
    }
    public var rpcJSON: JSON { .string(self) }
}

extension Bool: RPCParamValue {
    public static var rpcTypeName: String { "boolean" }
    public init?(rpcJSON json: JSON) {
        guard let value = json.boolValue else { return nil }
        self = value
    }
    public var rpcJSON: JSON { .bool(self) }
}

extension Double: RPCParamValue {
    public static var rpcTypeName: String { "number" }
    public init?(rpcJSON json: JSON) {
        guard let value = json.doubleValue else { return nil }
        self = value
    }
    public var rpcJSON: JSON { .double(self) }
}

extension JSON: RPCParamValue {
    public static var rpcTypeName: String { "JSON value" }
    public init?(rpcJSON json: JSON) { self = json }
    public var rpcJSON: JSON { self }
}

/// Integers: a JSON integer (or a real holding an integer exactly) that
/// fits the type; anything else is rejected, never truncated.
public protocol RPCIntegerParam: RPCParamValue, FixedWidthInteger {}

extension RPCIntegerParam {
    public static var isInteger: Bool { true }
    public init?(rpcJSON json: JSON) {
        guard let wide = json.intValue, let value = Self(exactly: wide) else { return nil }
        self = value
    }
    public var rpcJSON: JSON {
        if let value = Int64(exactly: self) { return .int(value) }
        return .double(Double(self))
    }
}

extension Int: RPCIntegerParam {
    public static var rpcTypeName: String { "integer" }
}

extension Int64: RPCIntegerParam {
    public static var rpcTypeName: String { "int64" }
}

extension Int32: RPCIntegerParam {
    public static var rpcTypeName: String { "int32" }
}

extension UInt64: RPCIntegerParam {
    public static var rpcTypeName: String { "uint64" }
}

extension UInt32: RPCIntegerParam {
    public static var rpcTypeName: String { "uint32" }
}

extension UInt16: RPCIntegerParam {
    public static var rpcTypeName: String { "uint16" }
}

extension UInt8: RPCIntegerParam {
    public static var rpcTypeName: String { "uint8" }
}
