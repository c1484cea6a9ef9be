import JSONRPC
import Testing
import VhostBlkAPI

/// api/vhost-blkd.openrpc.json, found relative to this file.
private func openRPCDocument() throws -> JSON {
    var components = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    components.removeLast(3)  // Tests/JSONRPCTests/OpenRPCTests.swift
    let path = (components + ["api", "vhost-blkd.openrpc.json"]).joined(separator: "/")
    let bytes = try TestFiles.read(path)
    return try JSON.parse(bytes)
}

/// A value that fits a parameter's schema: its default, else a simple one.
private func sampleValue(_ schema: JSON) -> JSON {
    if let value = schema["default"] { return value }
    if let first = schema["enum"]?.arrayValue?.first { return first }
    switch schema["type"]?.stringValue {
    case "string": return "x"
    case "boolean": return false
    case "integer": return 512
    default: return nil
    }
}

@Suite struct OpenRPCTests {
    @Test func methodsMatchVhostBlkMethods() throws {
        let document = try openRPCDocument()
        #expect(document["openrpc"]?.stringValue?.hasPrefix("1.2") == true)
        let names = try #require(document["methods"]?.arrayValue).compactMap { $0["name"]?.stringValue }
        #expect(names == VhostBlkMethods.all)
    }

    @Test func everyDocumentedParameterIsAcceptedAndRequiredOnesAreRequired() throws {
        let document = try openRPCDocument()
        for method in try #require(document["methods"]?.arrayValue) {
            let name = try #require(method["name"]?.stringValue)
            let type = try #require(VhostBlkMethods.paramType(for: name), "\(name)")
            let params = try #require(method["params"]?.arrayValue)
            var all = JSONObject()
            for param in params {
                let key = try #require(param["name"]?.stringValue)
                all[key] = sampleValue(param["schema"] ?? nil)
            }
            _ = try type.init(params: .object(all))
            for param in params where param["required"] == true {
                let key = try #require(param["name"]?.stringValue)
                var without = all
                without[key] = nil
                #expect(throws: RPCError.self, "\(name) without \(key)") { _ = try type.init(params: .object(without)) }
            }
            for example in method["examples"]?.arrayValue ?? [] {
                var object = JSONObject()
                for pair in example["params"]?.arrayValue ?? [] {
                    if let key = pair["name"]?.stringValue, let value = pair["value"] { object[key] = value }
                }
                _ = try type.init(params: .object(object))
            }
        }
    }
}
