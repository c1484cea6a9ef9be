import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// api/vhost-blkd.openrpc.json (OpenRPC 1.2.6), the RPC contract, read once.
struct Contract {
    let document: JSON
    /// The methods, in document order.
    let methods: [JSON]
    let validator: SchemaValidator

    static func load() throws -> Contract {
        let path = SPDKClient.repoRoot.appendingPathComponent("api/vhost-blkd.openrpc.json").path
        let document = try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        let methods = try #require(document["methods"]?.arrayValue, "the document has no methods")
        let schemas = document["components"]?["schemas"]?.objectValue ?? JSONObject()
        return Contract(document: document, methods: methods, validator: SchemaValidator(components: schemas))
    }

    var methodNames: [String] { methods.compactMap { $0["name"]?.stringValue } }

    func method(_ name: String) -> JSON? { methods.first { $0["name"]?.stringValue == name } }

    /// The result schema of `method` (`result.schema`).
    func resultSchema(_ method: String) throws -> JSON {
        try #require(self.method(method)?["result"]?["schema"], "\(method) documents no result schema")
    }

    /// The names of `method`'s documented params.
    func paramNames(_ method: String) -> Set<String> {
        Set(self.method(method)?["params"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [])
    }

    /// Every (method, example name) pair in the document.
    var allExamples: [ExampleID] {
        methods.flatMap { method in
            (method["examples"]?.arrayValue ?? []).compactMap { example in
                guard let m = method["name"]?.stringValue, let e = example["name"]?.stringValue else { return nil }
                return ExampleID(method: m, name: e)
            }
        }
    }

    /// The example's by-name params as one object, and its documented result value.
    func example(_ id: ExampleID) throws -> (params: JSONObject, result: JSON?) {
        let examples = self.method(id.method)?["examples"]?.arrayValue ?? []
        let example = try #require(examples.first { $0["name"]?.stringValue == id.name }, "no example \(id)")
        var params = JSONObject()
        for pair in example["params"]?.arrayValue ?? [] {
            let name = try #require(pair["name"]?.stringValue, "\(id): a param without a name")
            guard let value = pair["value"] as JSON? else { throw ContractError("\(id): param \(name) has no value") }
            params[name] = value
        }
        return (params, example["result"]?["value"])
    }
}

/// A malformed contract document.
struct ContractError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One example: its method and its `name`.
struct ExampleID: Hashable, CustomStringConvertible {
    let method: String
    let name: String
    var description: String { "\(method) example \"\(name)\"" }
}

/// The contract against the running daemon (issue 6): the method list is
/// `rpc_get_methods`, every example succeeds and its result (actual and
/// documented) matches the method's result schema, and methods named like
/// SPDK's keep rpc.py's parameter names.
@Suite("OpenRPC contract against the running daemon")
struct ContractTests {
    @Test func methodListIsRpcGetMethods() throws {
        let contract = try Contract.load()
        let daemon = try DaemonProcess(cpumask: "0x3")
        defer { daemon.stop(); daemon.cleanUp() }
        let listed = try #require(daemon.call("rpc_get_methods").arrayValue).compactMap(\.stringValue)
        let documented = contract.methodNames
        #expect(Set(listed) == Set(documented),
                "only served: \(Set(listed).subtracting(documented).sorted()); only documented: \(Set(documented).subtracting(listed).sorted())")
        #expect(listed.count == documented.count, "duplicates in one of the lists")
    }

    @Test func everyMethodHasAnExample() throws {
        let contract = try Contract.load()
        let withExamples = Set(contract.allExamples.map(\.method))
        for name in contract.methodNames {
            #expect(withExamples.contains(name), "\(name) has no example")
        }
    }

    /// Each documented example result matches its own method's result schema.
    @Test func documentedResultsMatchTheirSchemas() throws {
        let contract = try Contract.load()
        for id in contract.allExamples {
            let documented = try #require(try contract.example(id).result, "\(id) documents no result")
            let problems = contract.validator.violations(of: documented, against: try contract.resultSchema(id.method))
            #expect(problems.isEmpty, "\(id) documented result: \(problems.joined(separator: "; "))")
        }
    }

    /// Runs every example, in `ExamplePlan.steps` order, and checks the results.
    @Test func everyExampleSucceedsAgainstTheDaemon() throws {
        let contract = try Contract.load()
        let daemon = try DaemonProcess(cpumask: "0x3")  // the examples pin controllers to 0x2
        defer { daemon.stop(); daemon.cleanUp() }
        let fixtures = try ExampleFixtures(daemon: daemon)

        let planned = ExamplePlan.steps.compactMap { step -> ExampleID? in
            if case .example(let id) = step { return id }
            return nil
        }
        // The rbd methods' examples need a Ceph cluster: RBDTests.documentedExamplesSucceed runs them.
        let documented = Set(contract.allExamples.filter { !RBDTests.contractMethods.contains($0.method) })
        #expect(Set(planned) == documented,
                "unplanned: \(documented.subtracting(planned)); planned but not documented: \(Set(planned).subtracting(documented))")
        #expect(planned.count == Set(planned).count, "an example is planned twice")

        for step in ExamplePlan.steps {
            switch step {
            case .setup(let method, let params):
                do { try daemon.call(method, fixtures.substitute(params)) } catch {
                    Issue.record("setup \(method) \(params): \(error)")
                }
            case .grow(let file, let bytes):
                #expect(truncate(fixtures.path(of: file), off_t(bytes)) == 0, "truncate \(file): \(String(cString: strerror(errno)))")
            case .example(let id):
                let (params, _) = try contract.example(id)
                let sent = fixtures.substitute(.object(params))
                let result: JSON
                do { result = try daemon.call(id.method, sent) } catch {
                    Issue.record("\(id) with \(sent) failed: \(error)")
                    continue
                }
                let problems = contract.validator.violations(of: result, against: try contract.resultSchema(id.method))
                #expect(problems.isEmpty, "\(id) returned \(result): \(problems.joined(separator: "; "))")
            }
        }
        #expect(daemon.isRunning)
    }

    /// Methods rpc.py also has: every parameter name it sends is documented.
    @Test(.enabled(if: SPDKClient.isEnabled, SPDKClient.skipComment))
    func spdkNamedMethodsKeepSPDKParameterNames() throws {
        let contract = try Contract.load()
        _ = try SPDKClient.executable()
        let rpcPy = try RPCPySource(venv: SPDKClient.venvDirectory)
        var checked = 0
        for name in contract.methodNames {
            guard let spdkNames = rpcPy.parameterNames(of: name) else { continue }  // vhost-blkd's own method
            checked += 1
            let missing = spdkNames.subtracting(contract.paramNames(name))
            #expect(missing.isEmpty, "\(name): rpc.py sends \(missing.sorted()), which the document does not list")
        }
        // The SPDK methods the daemon serves; vhost-blkd's own (SPDKClientTests.extensions) are not in rpc.py.
        #expect(checked == contract.methodNames.count - SPDKClientTests.extensions.count,
                "rpc.py parameter lists found for \(checked) of \(contract.methodNames.count) methods")
    }
}

/// The order the examples run in, so each one's preconditions hold: bdevs
/// are created before they are used, a controller is detached before it is
/// attached again, deletes come last. `.setup` adds a call an example
/// presupposes; `.grow` resizes a backing file (the "truncate -s" before a rescan).
enum ExamplePlan {
    enum Step {
        case setup(String, JSON)
        case grow(String, bytes: Int64)
        case example(ExampleID)
    }

    static func example(_ method: String, _ name: String) -> Step { .example(ExampleID(method: method, name: name)) }

    static let steps: [Step] = [
        example("spdk_get_version", "version"),
        example("rpc_get_methods", "all"),
        example("framework_get_subsystems", "all"),
        example("framework_start_init", "init"),
        example("framework_get_failed_config", "an image not yet mounted"),  // nothing failed: []
        example("framework_retry_failed_config", "after mounting the share"),  // nothing to retry
        example("log_set_level", "debug"),
        example("log_get_level", "current"),  // DEBUG
        example("log_set_print_level", "info"),
        example("log_get_print_level", "current"),  // INFO

        // Bdevs.
        example("bdev_uring_create", "create"),  // vm1 on /var/lib/disks/vm1.img
        .grow("vm1.img", bytes: 10 << 30),
        example("bdev_uring_rescan", "after truncate -s 20G"),
        example("bdev_resize", "grow to 20 GiB"),
        example("bdev_aio_create", "create"),  // aio0 on /dev/sdb
        example("bdev_malloc_create", "create"),  // m0
        example("bdev_null_create", "create"),  // n0
        .setup("bdev_null_create", ["name": "Null0", "num_blocks": 2048, "block_size": 512]),  // 1 MiB
        example("bdev_null_resize", "grow to 2 GiB"),
        .setup("bdev_aio_create", ["filename": "vm2.img", "name": "vm2"]),
        .grow("vm2.img", bytes: 64 << 20),
        example("bdev_aio_rescan", "after losetup -c"),
        example("bdev_get_bdevs", "one"),
        example("bdev_get_iostat", "one"),
        example("bdev_reset_iostat", "one"),
        example("bdev_get_latency", "one"),
        example("bdev_set_qos_limit", "20k IOPS, 100 MiB/s"),
        example("bdev_set_error_policy", "pause on a full disk"),
        example("bdev_resume_io", "resume"),

        // Controllers.
        example("vhost_create_blk_controller", "create"),  // vhost.vm1 on vm1, cpumask 0x2
        example("vhost_create_blk_controller", "for libvirt's QEMU"),  // vhost.vm2 on vm2, group kvm
        example("vhost_get_controllers", "one"),
        example("framework_get_reactors", "all"),
        example("thread_get_stats", "all"),
        example("vhost_blk_detach", "detach"),
        example("vhost_blk_attach", "attach"),
        example("vhost_controller_set_coalescing", "coalesce above 60000 IOPS"),
        example("framework_get_config", "bdev"),
        example("vhost_delete_controller", "delete"),

        // Deletes.
        example("bdev_uring_delete", "delete"),
        example("bdev_aio_delete", "delete"),
        example("bdev_malloc_delete", "delete"),
        example("bdev_null_delete", "delete"),
    ]
}

/// What the examples name that this machine lacks, made real under the
/// daemon's temporary directory: backing files for the documented paths, a
/// group that exists for `socket_group`.
struct ExampleFixtures {
    let directory: URL
    /// Documented string value -> the value sent instead.
    let replacements: [String: JSON]

    /// The paths the examples (and the `vm2` setup call) name, and the files
    /// standing in for them (1 MiB, sparse, until a `.grow` step).
    static let files = ["/var/lib/disks/vm1.img": "vm1.img", "/dev/sdb": "aio0.img", "vm2.img": "vm2.img"]

    init(daemon: DaemonProcess) throws {
        directory = daemon.directory
        var replacements: [String: JSON] = [:]
        for (documented, file) in Self.files {
            let path = directory.appendingPathComponent(file).path
            #expect(FileManager.default.createFile(atPath: path, contents: nil))
            #expect(truncate(path, 1 << 20) == 0)
            replacements[documented] = .string(path)
        }
        // The examples' group, else root's (which every system has).
        if getgrnam("kvm") == nil { replacements["kvm"] = "root" }
        self.replacements = replacements
    }

    func path(of file: String) -> String { directory.appendingPathComponent(file).path }

    /// `value` with every string that names a fixture replaced.
    func substitute(_ value: JSON) -> JSON {
        switch value {
        case .string(let s): return replacements[s] ?? value
        case .array(let items): return .array(items.map(substitute))
        case .object(let object): return .object(JSONObject(object.pairs.map { ($0.key, substitute($0.value)) }))
        default: return value
        }
    }
}

/// The parameter names SPDK's rpc.py sends, read from its Python source in
/// the venv (`spdk` 26.9 from PyPI).
///
/// In this release each subcommand lives in `spdk/cli/<area>.py` and calls
/// `args.client.<method>(name=args.name, ...)`; the client turns those
/// keyword arguments into the params object (rpc/client.py `__getattr__`),
/// so the keywords are the param names. A few subcommands pass
/// `**params` (all argparse destinations); for those the names are the
/// `add_argument` destinations of the `add_parser('<method>'...)` block.
/// Older releases built dicts in `spdk/rpc/<area>.py` (`def method(client,
/// ...)` with `params['x'] = ...` or `{'x': ...}`); those are read too.
/// Plain regular expressions suffice: the code is regular and a miss shows
/// up as a method with no names found.
struct RPCPySource {
    /// The text of every .py file under spdk/cli and spdk/rpc.
    let sources: [String]

    init(venv: URL) throws {
        let lib = venv.appendingPathComponent("lib")
        let python = try #require(try FileManager.default.contentsOfDirectory(atPath: lib.path).first { $0.hasPrefix("python3") },
                                  "no python3.* under \(lib.path)")
        let package = lib.appendingPathComponent(python).appendingPathComponent("site-packages/spdk")
        var sources: [String] = []
        for folder in ["cli", "rpc"] {
            let dir = package.appendingPathComponent(folder)
            for file in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where file.hasSuffix(".py") {
                sources.append(try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8))
            }
        }
        #expect(!sources.isEmpty, "no rpc.py sources under \(package.path)")
        self.sources = sources
    }

    /// The names rpc.py sends for `method`, or nil when rpc.py has no such method.
    func parameterNames(of method: String) -> Set<String>? {
        var names: Set<String> = []
        var found = false
        for source in sources {
            for call in Self.matches(#"args\.client\.\#(method)\("#, in: source) {
                found = true
                let arguments = Self.balanced(source, from: call)
                if arguments.contains("**") {
                    names.formUnion(argparseDestinations(of: method, in: source))
                } else {
                    names.formUnion(Self.captures(#"[(,]\s*([A-Za-z_]\w*)\s*=(?!=)"#, in: arguments))
                }
            }
            for definition in Self.matches(#"\ndef \#(method)\(client"#, in: source) {
                found = true
                let rest = source[definition...]
                let body = String(rest.range(of: "\ndef ").map { rest[..<$0.lowerBound] } ?? rest)
                names.formUnion(Self.captures(#"params\[['"](\w+)['"]\]"#, in: body))
                names.formUnion(Self.captures(#"['"](\w+)['"]\s*:"#, in: body))
            }
        }
        return found ? names : nil
    }

    /// The argparse destinations declared between `add_parser('method'` and its `set_defaults`.
    private func argparseDestinations(of method: String, in source: String) -> Set<String> {
        guard let start = source.range(of: "add_parser('\(method)'") ?? source.range(of: "add_parser(\"\(method)\"") else { return [] }
        let rest = source[start.upperBound...]
        let block = String(rest.range(of: "set_defaults(").map { rest[..<$0.lowerBound] } ?? rest)
        var names: Set<String> = []
        for line in block.components(separatedBy: "add_argument(").dropFirst() {
            if let dest = Self.captures(#"dest=['"](\w+)['"]"#, in: line).first {
                names.insert(dest)
            } else if let long = Self.captures(#"['"]--([\w-]+)['"]"#, in: line).first {
                names.insert(long.replacingOccurrences(of: "-", with: "_"))
            } else if let positional = Self.captures(#"^\s*['"]([A-Za-z_]\w*)['"]"#, in: line).first {
                names.insert(positional)
            }
        }
        return names
    }

    /// Where each match of `pattern` ends in `text`.
    private static func matches(_ pattern: String, in text: String) -> [String.Index] {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range, in: text)?.upperBound
        }
    }

    /// The first capture group of every match of `pattern` in `text`.
    private static func captures(_ pattern: String, in text: String) -> [String] {
        guard let regex = try? NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines]) else { return [] }
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range(at: 1), in: text).map { String(text[$0]) }
        }
    }

    /// The text from `start` (just after an opening parenthesis) to its closing one, with a leading "(".
    private static func balanced(_ text: String, from start: String.Index) -> String {
        var depth = 1
        var index = start
        while index < text.endIndex, depth > 0 {
            switch text[index] {
            case "(": depth += 1
            case ")": depth -= 1
            default: break
            }
            index = text.index(after: index)
        }
        return "(" + text[start..<index]
    }
}
