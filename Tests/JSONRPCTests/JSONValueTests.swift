import Testing

@testable import JSONRPC

@Suite struct JSONValueTests {
    @Test func compactEncodingKeepsKeyOrder() {
        let value: JSON = ["z": 1, "a": [true, nil, 1.5, "x\"y"], "m": [:]]
        #expect(value.encoded() == #"{"z":1,"a":[true,null,1.5,"x\"y"],"m":{}}"#)
    }

    @Test func prettyEncodingMatchesPythonIndent2() {
        let value: JSON = ["name": "m0", "list": [1, 2], "empty": []]
        #expect(value.encoded(pretty: true) == "{\n  \"name\": \"m0\",\n  \"list\": [\n    1,\n    2\n  ],\n  \"empty\": []\n}")
    }

    @Test func scalarsEncodeAtTopLevel() {
        #expect(JSON.string("vm1").encoded() == "\"vm1\"")
        #expect(JSON.bool(true).encoded() == "true")
        #expect(JSON.int(Int64.min).encoded() == "-9223372036854775808")
        #expect(JSON.double(.nan).encoded() == "null")
        #expect(JSON.double(.infinity).encoded() == "null")
    }

    @Test func parseRoundTripsUnicodeAndNumbers() throws {
        let value: JSON = ["é": "ü😀\n\t", "big": .int(Int64.max), "neg": .int(Int64.min), "r": 0.1]
        let parsed = try JSON.parse(value.encoded())
        #expect(parsed == value)
        #expect(parsed["big"]?.intValue == Int64.max)
        #expect(parsed["r"] == .double(0.1))
    }

    @Test func integersAndRealsStayApart() throws {
        #expect(try JSON.parse("1") == .int(1))
        #expect(try JSON.parse("1.0") == .double(1))
        #expect(JSON.double(2).intValue == 2)
        #expect(JSON.double(2.5).intValue == nil)
        #expect(JSON.int(3).doubleValue == 3)
    }

    @Test func parseRejectsBadInput() {
        #expect(throws: JSONParseError.self) { try JSON.parse("") }
        #expect(throws: JSONParseError.self) { try JSON.parse("{} x") }
        #expect(throws: JSONParseError.self) { try JSON.parse("99999999999999999999") }
        #expect(throws: JSONParseError.self) { try JSON.parse(#"{"a":"\u0000"}"#) }
        #expect(throws: JSONParseError.self) { try JSON.parse([0x22, 0xC3, 0x22]) }
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSON.parse(deep) }
    }

    @Test func objectEqualityIgnoresOrderButEncodingKeepsIt() {
        let a: JSONObject = ["a": 1, "b": 2]
        let b: JSONObject = ["b": 2, "a": 1]
        #expect(a == b)
        #expect(JSON.object(a).encoded() != JSON.object(b).encoded())
        #expect(a != ["a": 1])
    }

    @Test func objectSetAndRemoveKeepIndexConsistent() {
        var object: JSONObject = ["a": 1, "b": 2, "c": 3]
        object["b"] = nil
        #expect(object.keys == ["a", "c"])
        #expect(object["c"] == 3)
        object["a"] = "x"
        object["d"] = 4
        #expect(object.keys == ["a", "c", "d"])
        #expect(object["a"] == "x")
        #expect(object.count == 3)
    }

    @Test func accessors() {
        let value: JSON = ["s": "x", "b": false, "a": [1], "o": ["k": nil]]
        #expect(value["s"]?.stringValue == "x")
        #expect(value["b"]?.boolValue == false)
        #expect(value["a"]?.arrayValue == [1])
        #expect(value["o"]?["k"]?.isNull == true)
        #expect(value["missing"] == nil)
        #expect(JSON.int(1)["x"] == nil)
        #expect(JSON.int(1).typeName == "integer")
    }
}
