import DaemonTestSupport
import Foundation
import JSONRPC
import Posix
import Testing
import VhostUserFrontend
import Virtio

/// The metric and label names a PromQL expression refers to, read off the
/// expression (the Prometheus query language's lexical rules:
/// https://prometheus.io/docs/prometheus/latest/querying/basics/), so that a
/// test can check them against what the daemon serves.
///
/// Metric names are the identifiers that are not functions (followed by `(`),
/// aggregation operators, keywords or Grafana variables (`$name`); label names
/// are those in `{...}` matchers and in the lists after `by`, `without`, `on`,
/// `ignoring`, `group_left` and `group_right`. Strings, numbers and `[...]`
/// ranges are skipped.
struct PromQLNames: Equatable {
    var metrics: Set<String> = []
    var labels: Set<String> = []

    static let aggregations: Set<String> = [
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
        "limitk", "limit_ratio",
    ]
    static let labelListKeywords: Set<String> = ["by", "without", "on", "ignoring", "group_left", "group_right"]
    static let keywords: Set<String> = ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "Inf", "NaN"]

    init() {}

    init(expression: String) {
        let chars = Array(expression)
        var i = 0
        func isIdentifierStart(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c == "_" || c == ":") }
        func isIdentifierPart(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == ":") }
        func skipSpaces() { while i < chars.count, chars[i].isWhitespace { i += 1 } }
        func skipString() {
            let quote = chars[i]
            i += 1
            while i < chars.count, chars[i] != quote {
                if chars[i] == "\\" { i += 1 }
                i += 1
            }
            i += 1
        }
        func identifier() -> String {
            let start = i
            while i < chars.count, isIdentifierPart(chars[i]) { i += 1 }
            return String(chars[start..<i])
        }
        /// `( a, b )` after a label-list keyword.
        func labelList() {
            skipSpaces()
            guard i < chars.count, chars[i] == "(" else { return }
            i += 1
            while i < chars.count, chars[i] != ")" {
                if isIdentifierStart(chars[i]) { labels.insert(identifier()) } else { i += 1 }
            }
            i += 1
        }
        /// `{ name op "value", ... }`.
        func matchers() {
            i += 1
            var expectName = true
            while i < chars.count, chars[i] != "}" {
                let c = chars[i]
                if c == "\"" || c == "'" || c == "`" {
                    skipString()
                } else if c == "," {
                    expectName = true
                    i += 1
                } else if expectName, isIdentifierStart(c) {
                    labels.insert(identifier())
                    expectName = false
                } else {
                    i += 1
                }
            }
            i += 1
        }
        while i < chars.count {
            let c = chars[i]
            if c == "\"" || c == "'" || c == "`" {
                skipString()
            } else if c == "{" {
                matchers()
            } else if c == "[" {
                while i < chars.count, chars[i] != "]" { i += 1 }
                i += 1
            } else if c == "$" {
                i += 1
                while i < chars.count, isIdentifierPart(chars[i]) || chars[i] == "{" || chars[i] == "}" { i += 1 }
            } else if c.isNumber || (c == "." && i + 1 < chars.count && chars[i + 1].isNumber) {
                // 0.99, 1e9, 5m: a number or a duration.
                while i < chars.count, isIdentifierPart(chars[i]) || chars[i] == "." { i += 1 }
            } else if isIdentifierStart(c) {
                let name = identifier()
                skipSpaces()
                let call = i < chars.count && chars[i] == "("
                if Self.labelListKeywords.contains(name) {
                    labelList()
                } else if Self.keywords.contains(name) || Self.aggregations.contains(name) || call {
                    continue
                } else {
                    metrics.insert(name)
                }
            } else {
                i += 1
            }
        }
    }

    /// A Grafana variable query, `label_values(METRIC_SELECTOR, LABEL)` or a plain expression.
    init(grafanaVariableQuery query: String) {
        let trimmed = query.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("label_values("), trimmed.hasSuffix(")"), let comma = trimmed.lastIndex(of: ",") else {
            self.init(expression: query)
            return
        }
        let selector = trimmed[trimmed.index(trimmed.startIndex, offsetBy: "label_values(".count)..<comma]
        self.init(expression: String(selector))
        labels.insert(trimmed[trimmed.index(after: comma)..<trimmed.index(before: trimmed.endIndex)]
            .trimmingCharacters(in: .whitespaces))
    }
}

extension ExamplesTests {
    /// The reader itself, on the kinds of expression the dashboard uses.
    @Test func promQLNamesReader() {
        let names = PromQLNames(expression: """
            histogram_quantile(0.99, sum by (bdev, op, le) (rate(m_bucket{instance=~"$instance", bdev=~"a,b{c}"}[$__rate_interval]))) \
            * on (bdev) group_left (ctrlr) group by (instance, bdev, ctrlr) (q_total{x!="y"} offset 5m) > 0 and bool 1e3
            """)
        #expect(names.metrics == ["m_bucket", "q_total"])
        #expect(names.labels == ["bdev", "op", "le", "instance", "ctrlr", "x"])
        let variable = PromQLNames(grafanaVariableQuery: "label_values(vhost_blkd_bdev_ops_total{op=\"read\"}, bdev)")
        #expect(variable.metrics == ["vhost_blkd_bdev_ops_total"] && variable.labels == ["op", "bdev"])
    }

    /// examples/grafana-vhost-blkd.json queries only what the daemon serves: the real
    /// daemon with --metrics, a frontend doing I/O (so the queue families have samples)
    /// and one failed request, then every metric name and label name in the dashboard's
    /// PromQL (panels and variables) must be in the scrape (labels: or be one that
    /// Prometheus adds to every target, `instance` and `job`).
    @Test func grafanaDashboardQueriesExistingMetrics() throws {
        let dashboard = try JSON.parse(try ExamplesSupport.text("examples/grafana-vhost-blkd.json"))
        #expect(dashboard["title"] == "vhost-blkd")
        let inputs = dashboard["__inputs"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []

        // Every query of the dashboard, with where it is.
        var queries: [(place: String, names: PromQLNames)] = []
        var ids: Set<Int64> = []
        for panel in dashboard["panels"]?.arrayValue ?? [] {
            let title = panel["title"]?.stringValue ?? "?"
            let id = try #require(panel["id"]?.intValue, "panel \(title) has no id")
            #expect(ids.insert(id).inserted, "panel id \(id) twice")
            #expect(panel["gridPos"]?["w"]?.intValue != nil && panel["gridPos"]?["h"]?.intValue != nil, "\(title): gridPos")
            if panel["type"] == "row" { continue }
            let uid = panel["datasource"]?["uid"]?.stringValue ?? ""
            #expect(inputs.contains { uid == "${\($0)}" }, "\(title): data source \(uid) is not one of the __inputs \(inputs)")
            let targets = panel["targets"]?.arrayValue ?? []
            #expect(!targets.isEmpty, "\(title) has no query")
            for target in targets {
                let expr = try #require(target["expr"]?.stringValue, "\(title): a target without expr")
                #expect(target["refId"]?.stringValue != nil, "\(title): a target without refId")
                queries.append(("panel \(title): \(expr)", PromQLNames(expression: expr)))
            }
        }
        for variable in dashboard["templating"]?["list"]?.arrayValue ?? [] {
            let query = variable["query"]?["query"]?.stringValue ?? variable["query"]?.stringValue ?? ""
            queries.append(("variable \(variable["name"]?.stringValue ?? "?"): \(query)", PromQLNames(grafanaVariableQuery: query)))
        }
        #expect(queries.count >= 10, "the dashboard has \(queries.count) queries")
        for query in queries { #expect(!query.names.metrics.isEmpty, "\(query.place) queries no metric") }

        // The real daemon: a bdev, a controller with a connected frontend, I/O and one error.
        let base = URL(fileURLWithPath: try makeTemporaryDirectory())
        defer { try? FileManager.default.removeItem(at: base) }
        let socket = base.appendingPathComponent("metrics.sock").path
        let daemon = try DaemonProcess(extraArguments: ["--metrics", "unix:" + socket])
        defer { daemon.stop(); daemon.cleanUp() }
        try DataPathTests.createBdev(daemon, .malloc, name: "M0")
        try DataPathTests.createController(daemon, "vhost.0", bdev: "M0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let frontend = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { frontend.close() }
        for i in 0..<16 {
            #expect(try frontend.write(sector: UInt64(i * 8), data: DataPathTests.pattern(4096, seed: i)).status == BlkWire.statusOK)
            #expect(try frontend.read(sector: UInt64(i * 8), count: 8).status == BlkWire.statusOK)
        }
        #expect(try frontend.read(sector: DataPathTests.sectors, count: 1).status == BlkWire.statusIOErr)

        let response = try StatsTests.scrape(try UnixSocket.connect(path: socket))
        #expect(response.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(response.prefix(200))")
        let body = response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        var served: Set<String> = []
        var servedLabels: Set<String> = ["instance", "job"]  // Prometheus adds these to every scraped series
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            let name = String(line.prefix { $0 != "{" && $0 != " " })
            served.insert(name)
            if let open = line.firstIndex(of: "{"), let close = line.lastIndex(of: "}") {
                servedLabels.formUnion(PromQLNames(expression: "x" + line[open...close]).labels)
            }
        }
        #expect(served.contains("vhost_blkd_queue_requests_total"), "no queue samples: is the frontend connected?")

        var queried: Set<String> = []
        for query in queries {
            queried.formUnion(query.names.metrics)
            for metric in query.names.metrics.subtracting(served).sorted() {
                Issue.record("\(query.place): \(metric) is not in the daemon's /metrics")
            }
            for label in query.names.labels.subtracting(servedLabels).sorted() {
                Issue.record("\(query.place): label \(label) is on no series of the daemon's /metrics")
            }
        }
        print("dashboard: \(queries.count) queries over \(queried.count) metrics, all served: \(queried.sorted().joined(separator: " "))")
    }
}

/// The dashboard's queries evaluated by a real Prometheus (Debian's `prometheus`, 2.42 in
/// Debian 12) that scrapes a real daemon: what the name check above cannot see, PromQL that
/// does not parse, a join that is many-to-many, a selector that matches nothing.
enum DashboardInPrometheus {
    static var prometheus: String? { ExamplesSupport.executable(named: "prometheus") }
    static var isEnabled: Bool { prometheus != nil || ExamplesSupport.isRequired }

    /// A TCP port on 127.0.0.1 that nothing listens on now (bound to port 0, then closed).
    static func freePort() throws -> Int {
        let python = try #require(ExamplesSupport.executable(named: "python3"))
        let result = try ExamplesSupport.run(python, ["-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"])
        return try #require(Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), "no port: \(result.stderr)")
    }

    /// Evaluates each query of the dashboard on the Prometheus at `url` (Grafana's variables
    /// replaced: `$__rate_interval` by 10s, the others by `.*`) and prints one JSON object per
    /// query: `place`, `status`, `error`, `series`, `filtered` (the expression compares, so an
    /// empty result can be right).
    static let evaluator = #"""
        import json, re, sys, time, urllib.parse, urllib.request
        dashboard, url = json.load(open(sys.argv[1])), sys.argv[2]
        def query(expr):
            try:
                with urllib.request.urlopen(url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=10) as r:
                    return json.load(r)
            except urllib.error.HTTPError as e:
                return json.load(e)
            except OSError as e:
                return {"status": "error", "error": str(e)}
        # Ready: the daemon's target up, with at least 5 scrapes in the last minute.
        deadline = time.time() + 60
        while time.time() < deadline:
            r = query('count_over_time(up{job="vhost-blkd"}[1m]) >= 5 and up{job="vhost-blkd"} == 1')
            if r.get("status") == "success" and r["data"]["result"]:
                break
            time.sleep(0.5)
        else:
            print(json.dumps({"place": "readiness", "status": "error", "error": "no 5 scrapes of an up target in 60 s", "series": 0, "filtered": False}))
        def substitute(expr):
            expr = expr.replace("$__rate_interval", "10s")
            return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)
        items = []
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                items.append(("panel " + panel.get("title", "?") + ": " + target["expr"], substitute(target["expr"])))
        for variable in dashboard.get("templating", {}).get("list", []):
            q = variable.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*", q or "")
            expr = "group by (%s) (%s)" % (m.group(2), m.group(1)) if m else q
            items.append(("variable " + variable.get("name", "?") + ": " + (q or ""), substitute(expr)))
        for place, expr in items:
            r = query(expr)
            result = r.get("data", {}).get("result", []) if r.get("status") == "success" else []
            print(json.dumps({"place": place, "status": r.get("status"), "error": r.get("error", "") + " ".join(r.get("warnings", [])),
                              "series": len(result), "filtered": bool(re.search(r"[<>]=?\s*[0-9.]+\s*$|[=!]=\s*[0-9.]+\s*$", expr))}))
        """#
}

extension ExamplesTests {
    @Test(.enabled(if: DashboardInPrometheus.isEnabled, "needs prometheus (apt-get install prometheus)"))
    func grafanaDashboardEvaluatesInPrometheus() throws {
        let prometheus = try #require(DashboardInPrometheus.prometheus, "prometheus is missing (apt-get install prometheus, scripts/install-deps.sh)")
        let python = try #require(ExamplesSupport.executable(named: "python3"), "python3 is needed")
        let base = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }

        // The daemon on a loopback port, with a connected frontend.
        let metricsPort = try DashboardInPrometheus.freePort()
        let daemon = try DaemonProcess(extraArguments: ["--metrics", "127.0.0.1:\(metricsPort)"])
        defer { daemon.stop(); daemon.cleanUp() }
        try DataPathTests.createBdev(daemon, .malloc, name: "M0")
        try DataPathTests.createController(daemon, "vhost.0", bdev: "M0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let frontend = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { frontend.close() }

        // Prometheus scraping it every second, its data in the test's folder.
        let webPort = try DashboardInPrometheus.freePort()
        let config = base + "/prometheus.yml"
        try Data("""
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: vhost-blkd
                static_configs: [{targets: ["127.0.0.1:\(metricsPort)"]}]
            """.utf8).write(to: URL(fileURLWithPath: config))
        let server = Process()
        server.executableURL = URL(fileURLWithPath: prometheus)
        server.arguments = ["--config.file=\(config)", "--storage.tsdb.path=\(base)/data", "--web.listen-address=127.0.0.1:\(webPort)",
                            "--log.level=warn"]
        let log = base + "/prometheus.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        server.standardOutput = logHandle
        server.standardError = logHandle
        try server.run()
        defer {
            // This test's own child, by pid; SIGKILL because the test's threads block SIGTERM,
            // which a child inherits.
            if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            server.waitUntilExit()
            try? logHandle.close()
        }

        // I/O while Prometheus scrapes: writes, reads and a failing read, for about 6 s.
        let start = ContinuousClock.now
        var round = 0
        while ContinuousClock.now - start < .seconds(6) {
            let sector = UInt64(round % 64) * 8
            #expect(try frontend.write(sector: sector, data: DataPathTests.pattern(4096, seed: round)).status == BlkWire.statusOK)
            #expect(try frontend.read(sector: sector, count: 8).status == BlkWire.statusOK)
            if round % 10 == 0 { #expect(try frontend.read(sector: DataPathTests.sectors, count: 1).status == BlkWire.statusIOErr) }
            round += 1
            usleep(20_000)
        }

        let result = try ExamplesSupport.run(
            python, ["-c", DashboardInPrometheus.evaluator, ExamplesSupport.path("examples/grafana-vhost-blkd.json"), "http://127.0.0.1:\(webPort)"])
        #expect(result.status == 0, "\(result.stderr)")
        let prometheusLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count >= 10, "\(result.stdout)\n\(result.stderr)\n--- prometheus ---\n\(prometheusLog.suffix(2000))")
        var evaluated: [String] = []
        for line in lines {
            let item = try JSON.parse(line)
            let place = item["place"]?.stringValue ?? "?"
            let series = item["series"]?.intValue ?? 0
            #expect(item["status"] == "success" && item["error"] == "", "\(place): \(item["error"]?.stringValue ?? "")")
            if item["filtered"] != .bool(true) {
                #expect(series > 0, "\(place) returned no series\n--- prometheus ---\n\(prometheusLog.suffix(2000))")
            }
            evaluated.append("\(series)")
        }
        print("prometheus evaluated \(lines.count) dashboard queries after \(round) I/O rounds; series per query: \(evaluated.joined(separator: " "))")
    }
}
