/// Response encoding (docs/PROTOCOL-NOTES.md, "Framing"): one compact JSON
/// object per response, followed by "\n".
public enum RPCResponse {
    /// `{"jsonrpc":"2.0","id":ID,"result":RESULT}\n`.
    public static func result(id: JSON?, _ result: JSON) -> String {
        line(["jsonrpc": "2.0", "id": id ?? .null, "result": result])
    }

    /// `{"jsonrpc":"2.0","id":ID,"error":{"code":..,"message":..}}\n`;
    /// a nil id (parse error, unknown id) is written as null.
    public static func error(id: JSON?, _ error: RPCError) -> String {
        line(["jsonrpc": "2.0", "id": id ?? .null, "error": error.json])
    }

    private static func line(_ object: JSONObject) -> String {
        JSON.object(object).encoded() + "\n"
    }
}
