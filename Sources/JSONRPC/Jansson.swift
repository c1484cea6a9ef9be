internal import CJansson
import Glibc

/// The only place that touches jansson's C API and its pointers: builds
/// jansson trees from `JSON` for dumping and converts parsed trees back.
enum Jansson {
    // MARK: Dumping

    /// Writes `value` as JSON text (compact, or indented by two spaces).
    static func dump(_ value: JSON, pretty: Bool) -> String {
        guard let root = build(value) else { return "null" }
        defer { json_decref(root) }
        let layout = pretty ? 2 : Int(JSON_COMPACT)
        guard let text = json_dumps(root, layout | Int(JSON_ENCODE_ANY)) else { return "null" }
        defer { free(text) }
        return String(cString: text)
    }

    /// A new jansson reference for `value`, or nil if jansson ran out of memory.
    private static func build(_ value: JSON) -> UnsafeMutablePointer<json_t>? {
        switch value {
        case .null:
            return json_null()
        case .bool(let flag):
            return flag ? json_true() : json_false()
        case .int(let number):
            return json_integer(json_int_t(number))
        case .double(let number):
            return number.isFinite ? json_real(number) : json_null()
        case .string(let text):
            return makeString(text)
        case .array(let items):
            guard let array = json_array() else { return nil }
            for item in items {
                guard let child = build(item), json_array_append_new(array, child) == 0 else {
                    json_decref(array)
                    return nil
                }
            }
            return array
        case .object(let members):
            guard let object = json_object() else { return nil }
            for (key, item) in members {
                guard let child = build(item) else {
                    json_decref(object)
                    return nil
                }
                let status = withCString(key) { chars, count in
                    json_object_setn_new(object, chars, count, child)
                }
                guard status == 0 else {
                    json_decref(object)
                    return nil
                }
            }
            return object
        }
    }

    private static func makeString(_ text: String) -> UnsafeMutablePointer<json_t>? {
        withCString(text) { chars, count in json_stringn(chars, count) }
    }

    /// Calls `body` with the UTF-8 bytes of `text` (NUL-terminated, so
    /// never a nil pointer) and their count without the terminator.
    private static func withCString<R>(_ text: String, _ body: (UnsafePointer<CChar>, Int) -> R) -> R {
        let chars = text.utf8CString
        return chars.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return body("", 0) }
            return body(base, max(0, buffer.count - 1))
        }
    }

    // MARK: Parsing

    /// Parses one value that fills `bytes` (surrounding whitespace allowed).
    static func parseComplete(_ bytes: [UInt8], maxDepth: Int) throws(JSONParseError) -> JSON {
        let result = bytes.withUnsafeBytes { raw in
            load(raw, flags: Int(JSON_DECODE_ANY), maxDepth: maxDepth)
        }
        return try result.get()
    }

    /// Parses `bytes` with jansson and converts the tree, nesting limited to
    /// `maxDepth` containers.
    static func load(_ bytes: UnsafeRawBufferPointer, flags: Int, maxDepth: Int) -> Result<JSON, JSONParseError> {
        guard let chars = bytes.baseAddress?.assumingMemoryBound(to: CChar.self), !bytes.isEmpty else {
            return .failure(JSONParseError("unexpected end of input", position: 0))
        }
        var error = json_error_t()
        guard let root = json_loadb(chars, bytes.count, flags, &error) else {
            return .failure(JSONParseError(message(of: &error), position: Int(error.position)))
        }
        defer { json_decref(root) }
        do {
            return .success(try convert(root, depth: 0, maxDepth: maxDepth))
        } catch {
            return .failure(error)
        }
    }

    private static func message(of error: inout json_error_t) -> String {
        withUnsafeBytes(of: &error.text) { raw in
            let text = raw.prefix { $0 != 0 }
            let decoded = String(decoding: text, as: UTF8.self)
            return decoded.isEmpty ? "invalid JSON" : decoded
        }
    }

    private static func convert(
        _ node: UnsafeMutablePointer<json_t>, depth: Int, maxDepth: Int
    ) throws(JSONParseError) -> JSON {
        switch node.pointee.type {
        case JSON_NULL:
            return .null
        case JSON_TRUE:
            return .bool(true)
        case JSON_FALSE:
            return .bool(false)
        case JSON_INTEGER:
            return .int(Int64(json_integer_value(node)))
        case JSON_REAL:
            return .double(json_real_value(node))
        case JSON_STRING:
            return .string(string(json_string_value(node), count: json_string_length(node)))
        case JSON_ARRAY:
            guard depth < maxDepth else { throw JSONParseError("nesting too deep") }
            let count = json_array_size(node)
            var items: [JSON] = []
            items.reserveCapacity(count)
            for position in 0..<count {
                guard let child = json_array_get(node, position) else { break }
                items.append(try convert(child, depth: depth + 1, maxDepth: maxDepth))
            }
            return .array(items)
        case JSON_OBJECT:
            guard depth < maxDepth else { throw JSONParseError("nesting too deep") }
            var object = JSONObject()
            var iterator = json_object_iter(node)
            while let current = iterator {
                if let keyChars = json_object_iter_key(current), let child = json_object_iter_value(current) {
                    let key = string(keyChars, count: json_object_iter_key_len(current))
                    object[key] = try convert(child, depth: depth + 1, maxDepth: maxDepth)
                }
                iterator = json_object_iter_next(node, current)
            }
            return .object(object)
        default:
            throw JSONParseError("unknown jansson value type")
        }
    }

    private static func string(_ chars: UnsafePointer<CChar>?, count: Int) -> String {
        guard let chars else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: chars, count: count), as: UTF8.self)
    }
}
