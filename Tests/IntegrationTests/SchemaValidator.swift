import Foundation
import JSONRPC

/// The subset of JSON Schema that api/vhost-blkd.openrpc.json uses, enough
/// to check a result against its documented schema: `type` (one name or a
/// list), `properties`, `required`, `additionalProperties` (a boolean or a
/// schema), `items`, `const`, `enum`, `allOf`/`anyOf`/`oneOf`, `minimum`,
/// `maximum`, `pattern`, and `$ref` into `#/components/schemas`. Other
/// keywords (`description`, `default`, ...) are annotations and ignored.
struct SchemaValidator {
    /// The document's `components.schemas`, which `$ref`s point into.
    let components: JSONObject

    private static let refPrefix = "#/components/schemas/"

    /// Every way `value` breaks `schema`, each with its JSON path; empty when it conforms.
    func violations(of value: JSON, against schema: JSON, at path: String = "$") -> [String] {
        if case .bool(let accept) = schema { return accept ? [] : ["\(path): schema false accepts nothing"] }
        guard let rules = schema.objectValue else { return ["\(path): schema is not an object: \(schema)"] }
        var found: [String] = []

        if let ref = rules["$ref"] {
            guard let target = ref.stringValue, target.hasPrefix(Self.refPrefix),
                  let resolved = components[String(target.dropFirst(Self.refPrefix.count))]
            else { return ["\(path): unresolvable $ref \(ref)"] }
            found += violations(of: value, against: resolved, at: path)
        }
        if let type = rules["type"] {
            let names = type.arrayValue?.compactMap(\.stringValue) ?? type.stringValue.map { [$0] } ?? []
            if !names.contains(where: { Self.value(value, hasType: $0) }) {
                found.append("\(path): \(value.typeName) \(value) is not of type \(type)")
            }
        }
        if let constant = rules["const"], !Self.same(value, constant) {
            found.append("\(path): \(value) is not the constant \(constant)")
        }
        if let options = rules["enum"]?.arrayValue, !options.contains(where: { Self.same(value, $0) }) {
            found.append("\(path): \(value) is not one of \(JSON.array(options))")
        }
        found += numberViolations(of: value, rules, at: path)
        if let pattern = rules["pattern"]?.stringValue, let string = value.stringValue {
            if let regex = try? NSRegularExpression(pattern: pattern) {
                let range = NSRange(string.startIndex..., in: string)
                if regex.firstMatch(in: string, range: range) == nil {
                    found.append("\(path): \"\(string)\" does not match /\(pattern)/")
                }
            } else {
                found.append("\(path): invalid pattern /\(pattern)/")
            }
        }
        found += combinatorViolations(of: value, rules, at: path)
        if let object = value.objectValue { found += objectViolations(of: object, rules, at: path) }
        if let array = value.arrayValue, let items = rules["items"] {
            for (index, element) in array.enumerated() {
                found += violations(of: element, against: items, at: "\(path)[\(index)]")
            }
        }
        return found
    }

    private func numberViolations(of value: JSON, _ rules: JSONObject, at path: String) -> [String] {
        guard value.typeName == "integer" || value.typeName == "number", let number = value.doubleValue else { return [] }
        var found: [String] = []
        if let minimum = rules["minimum"]?.doubleValue, number < minimum {
            found.append("\(path): \(value) is below the minimum \(minimum)")
        }
        if let maximum = rules["maximum"]?.doubleValue, number > maximum {
            found.append("\(path): \(value) is above the maximum \(maximum)")
        }
        return found
    }

    private func combinatorViolations(of value: JSON, _ rules: JSONObject, at path: String) -> [String] {
        var found: [String] = []
        for schema in rules["allOf"]?.arrayValue ?? [] {
            found += violations(of: value, against: schema, at: path)
        }
        if let options = rules["anyOf"]?.arrayValue,
           !options.contains(where: { violations(of: value, against: $0, at: path).isEmpty }) {
            found.append("\(path): \(value) matches none of anyOf")
        }
        if let options = rules["oneOf"]?.arrayValue {
            let matches = options.filter { violations(of: value, against: $0, at: path).isEmpty }.count
            if matches != 1 { found.append("\(path): \(value) matches \(matches) of oneOf, not exactly one") }
        }
        return found
    }

    private func objectViolations(of object: JSONObject, _ rules: JSONObject, at path: String) -> [String] {
        var found: [String] = []
        let properties = rules["properties"]?.objectValue ?? JSONObject()
        for name in rules["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where object[name] == nil {
            found.append("\(path): required member \"\(name)\" is missing")
        }
        for (key, member) in object.pairs {
            if let schema = properties[key] {
                found += violations(of: member, against: schema, at: "\(path).\(key)")
            } else if let extra = rules["additionalProperties"] {
                found += violations(of: member, against: extra, at: "\(path).\(key)")
            }
        }
        return found
    }

    /// JSON Schema's types: an integral number is an `integer`, any number a `number`.
    private static func value(_ value: JSON, hasType type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object),
             ("integer", .int), ("number", .int), ("number", .double):
            return true
        case ("integer", .double(let number)):
            return number.rounded() == number && number.isFinite
        default:
            return false
        }
    }

    /// Equality as JSON Schema sees it: `1` and `1.0` are the same number.
    private static func same(_ a: JSON, _ b: JSON) -> Bool {
        switch (a, b) {
        case (.int, .double), (.double, .int): return a.doubleValue == b.doubleValue
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.pairs.allSatisfy { pair in y[pair.key].map { same(pair.value, $0) } ?? false }
        default: return a == b
        }
    }
}
