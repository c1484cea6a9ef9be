import Testing

@testable import JSONRPC

private func invalidParamsMessage(_ body: () throws(RPCError) -> Void) -> String? {
    do {
        try body()
        return nil
    } catch {
        #expect(error.code == -32602)
        return error.message
    }
}

@Suite struct RPCParamsTests {
    @Test func readsTypedValues() throws {
        var params = try RPCParams([
            "s": "x", "b": true, "i": -3, "u64": .int(Int64.max), "u32": 4096, "d": 2, "j": ["k": 1], "real": 8.0,
        ])
        #expect(try params.required("s") == "x")
        #expect(try params.required("b") == true)
        #expect(try params.required("i") == -3)
        #expect(try params.required("u64") == UInt64(Int64.max))
        #expect(try params.required("u32") == UInt32(4096))
        #expect(try params.required("d") == 2.0)
        #expect(try params.required("j") == JSON.object(["k": 1]))
        #expect(try params.required("real") == UInt32(8))
        #expect(try params.optional("absent", as: String.self) == nil)
        #expect(try params.optional("absent2", default: 5) == 5)
        try params.finish()
    }

    @Test func missingRequired() {
        let message = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["other": 1])
            let _: String = try params.required("name")
        }
        #expect(message == "Missing required parameter 'name'")
    }

    @Test func wrongTypeNamesKeyAndType() {
        let message = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["name": 5])
            let _: String = try params.required("name")
        }
        #expect(message == "Parameter 'name' must be of type string, not integer")
        let boolMessage = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["readonly": "yes"])
            let _: Bool? = try params.optional("readonly")
        }
        #expect(boolMessage == "Parameter 'readonly' must be of type boolean, not string")
    }

    @Test func outOfRangeNumbers() {
        let negative = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["block_size": -1])
            let _: UInt32 = try params.required("block_size")
        }
        #expect(negative == "Parameter 'block_size' is out of range for uint32")
        let large = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["block_size": 4_294_967_296])
            let _: UInt32 = try params.required("block_size")
        }
        #expect(large == "Parameter 'block_size' is out of range for uint32")
        let fraction = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["n": 1.5])
            let _: UInt64 = try params.required("n")
        }
        #expect(fraction == "Parameter 'n' must be of type uint64, not number")
    }

    @Test func unknownKeyIsNamed() {
        let message = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["name": "a", "foo": 1, "bar": 2])
            let _: String = try params.required("name")
            try params.finish()
        }
        #expect(message == "Unknown parameter 'foo'")
    }

    @Test func nullCountsAsAbsent() throws {
        var params = try RPCParams(["name": nil])
        #expect(try params.optional("name", as: String.self) == nil)
        try params.finish()
    }

    @Test func absentAndEmptyParams() throws {
        try RPCParams(nil).finish()
        try RPCParams([:]).finish()
        try RPCParams([]).finish()
    }

    @Test func arrayParamsOnlyForMethodsWithoutParams() throws {
        try RPCParams([1, 2]).finish()
        let message = invalidParamsMessage { () throws(RPCError) in
            var params = try RPCParams(["x", "y"])
            let _: String? = try params.optional("name")
        }
        #expect(message != nil)
    }

    @Test func scalarParamsRejected() {
        #expect(throws: RPCError.self) { try RPCParams("x") }
    }
}
