public import JSONRPC

/// `bdev_set_error_policy {name, policy}` -> true (vhost-blkd's extension):
/// what a bdev does when a write finds its file system full. `report` (the
/// default) completes it with an I/O error; `pause` holds it and stops the
/// queue until `bdev_resume_io` (docs/OPERATIONS.md, "Full disks").
/// Setting `report` on a paused bdev resumes it.
public struct BdevSetErrorPolicyParams: RPCMethodParams {
    public static let method = "bdev_set_error_policy"
    public static let policies = ["report", "pause"]
    public var name: String
    public var policy: String

    public init(name: String, policy: String) {
        self.name = name
        self.policy = policy
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            let policy: String = try p.required("policy")
            guard Self.policies.contains(policy) else {
                throw .invalidParams("policy must be one of \(Self.policies.joined(separator: ", "))")
            }
            return Self(name: try p.required("name"), policy: policy)
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("policy", policy)
        return w.json
    }
}

/// `bdev_resume_io {name}` -> true (vhost-blkd's extension): the queues that
/// hold writes under the `pause` policy perform them again and pop their
/// rings again. A bdev that is not paused answers true as well.
public struct BdevResumeIOParams: RPCMethodParams {
    public static let method = "bdev_resume_io"
    public var name: String

    public init(name: String) {
        self.name = name
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        return w.json
    }
}
