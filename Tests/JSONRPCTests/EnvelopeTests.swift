import Testing

@testable import JSONRPC

@Suite struct EnvelopeTests {
    @Test func validRequest() throws {
        let request = try RPCRequest(["jsonrpc": "2.0", "method": "m", "id": 7, "params": ["a": 1]])
        #expect(request.id == 7)
        #expect(request.method == "m")
        #expect(request.params == ["a": 1])
        #expect(!request.isNotification)
    }

    @Test func stringIDAndArrayParams() throws {
        let request = try RPCRequest(["jsonrpc": "2.0", "method": "m", "id": "abc", "params": [1, 2]])
        #expect(request.id == "abc")
        #expect(request.params == [1, 2])
    }

    @Test func notifications() throws {
        #expect(try RPCRequest(["jsonrpc": "2.0", "method": "m"]).isNotification)
        #expect(try RPCRequest(["jsonrpc": "2.0", "method": "m", "id": nil]).isNotification)
    }

    @Test(arguments: [
        JSON.array([["jsonrpc": "2.0", "method": "m", "id": 1]]),
        JSON.string("x"), JSON.int(1), JSON.null,
        ["method": "m", "id": 1],
        ["jsonrpc": "1.0", "method": "m", "id": 1],
        ["jsonrpc": 2, "method": "m", "id": 1],
        ["jsonrpc": "2.0", "id": 1],
        ["jsonrpc": "2.0", "method": 5, "id": 1],
        ["jsonrpc": "2.0", "method": "m", "id": true],
        ["jsonrpc": "2.0", "method": "m", "id": [1]],
        ["jsonrpc": "2.0", "method": "m", "id": ["a": 1]],
        ["jsonrpc": "2.0", "method": "m", "id": 1, "params": "x"],
        ["jsonrpc": "2.0", "method": "m", "id": 1, "params": 3],
        ["jsonrpc": "2.0", "method": "m", "id": 1, "params": nil],
        ["jsonrpc": "2.0", "method": "m", "id": 1, "extra": 1],
    ])
    func invalidRequests(_ json: JSON) {
        #expect(throws: RPCError.self) { try RPCRequest(json) }
        do {
            _ = try RPCRequest(json)
        } catch {
            #expect(error.code == -32600)
        }
    }

    @Test func responseIDForInvalidRequests() {
        #expect(RPCRequest.responseID(for: ["id": 5, "method": 1]) == 5)
        #expect(RPCRequest.responseID(for: ["id": "x"]) == "x")
        #expect(RPCRequest.responseID(for: ["id": true]) == .null)
        #expect(RPCRequest.responseID(for: [1, 2]) == .null)
    }

    @Test func responseEncoding() {
        #expect(RPCResponse.result(id: 1, "m0") == "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"m0\"}\n")
        #expect(
            RPCResponse.error(id: "a", .errno(2))
                == "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"error\":{\"code\":-2,\"message\":\"No such file or directory\"}}\n")
        #expect(
            RPCResponse.error(id: nil, .parseError)
                == "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n")
        #expect(RPCResponse.result(id: 2, ["a": [true]]) == "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"a\":[true]}}\n")
    }

    @Test func errorConstructors() {
        #expect(RPCError.methodNotFound("x") == RPCError(code: -32601, message: "Method not found"))
        #expect(RPCError.invalidParams("bad").code == -32602)
        #expect(RPCError.invalidRequest().code == -32600)
        #expect(RPCError.internalError().code == -32603)
        #expect(RPCError.errno(17) == RPCError(code: -17, message: "File exists"))
        #expect(RPCError(json: ["code": -19, "message": "No such device"]) == .errno(19))
        #expect(RPCError(json: ["message": "x"]) == nil)
    }

    @Test func requestJSONRoundTrips() throws {
        let request = RPCRequest(id: 3, method: "m", params: ["a": 1])
        #expect(try RPCRequest(request.json) == request)
        let notification = RPCRequest(id: nil, method: "n")
        #expect(notification.json == ["jsonrpc": "2.0", "method": "n"])
    }
}
