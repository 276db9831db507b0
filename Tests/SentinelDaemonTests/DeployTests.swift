import Foundation
import SentinelConfig
import SentinelJSON
import SentinelTestSupport
import SentinelYAML
import Testing

struct DeployError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// The deployment kit, checked by other means than running it (no Docker engine here): the
/// compose file against the daemon's configuration keys, and the Grafana dashboard's queries
/// against a real influxd holding what the daemon wrote.
@Suite(.serialized, .ownThread) struct DeployTests {
    typealias IT = DaemonIntegrationTests

    static func read(_ path: String) throws -> String {
        try String(contentsOf: packageRoot.appendingPathComponent(path), encoding: .utf8)
    }

    /// `.env.example` as a dictionary.
    static func envExample() throws -> [String: String] {
        var env: [String: String] = [:]
        for line in try read(".env.example").split(separator: "\n") where !line.hasPrefix("#") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            env[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return env
    }

    /// `${VAR}` and `${VAR:?message}` replaced from `env`; the names used are collected.
    static func substitute(_ text: String, _ env: [String: String], used: inout Set<String>) -> String {
        var out = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { break }
            let inside = rest[start.upperBound..<end]
            let name = String(inside.split(separator: ":", maxSplits: 1).first ?? "")
            used.insert(name)
            out += env[name] ?? "<unset \(name)>"
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    @Test func theComposeStackIsConsistentWithTheDaemonsConfiguration() throws {
        let compose = try YAMLValue.parse(try Self.read("docker-compose.yml"), file: "docker-compose.yml")
        let env = try Self.envExample()
        var used = Set<String>()
        let services = Dictionary(uniqueKeysWithValues: try compose["services"].members().map { ($0.key, $0.value) })
        for name in ["kafka", "kafka-init", "influxdb", "postgres", "sentinel", "mcp", "webhook-receiver", "grafana"] {
            #expect(services[name] != nil, "service \(name)")
        }
        for name in ["kafka", "influxdb", "postgres", "sentinel", "webhook-receiver"] {
            #expect(services[name]?["healthcheck"].exists == true, "\(name) has a health check")
        }
        // Named volumes are declared.
        let declared = Set(try compose["volumes"].members().map(\.key))
        for (name, service) in services {
            for volume in try service["volumes"].elements() {
                let source = try volume.string().split(separator: ":").first.map(String.init) ?? ""
                if !source.hasPrefix(".") && !source.hasPrefix("/") { #expect(declared.contains(source), "\(name): volume \(source) not declared") }
                if source.hasPrefix("./") {
                    #expect(FileManager.default.fileExists(atPath: packageRoot.appendingPathComponent(String(source.dropFirst(2))).path), "\(name): \(source) missing")
                }
            }
        }
        // The daemon and the MCP server: every variable is a configuration key's, secrets come
        // from .env, and the configuration they load is valid and points at the stack's services.
        let variables = Set(SentinelConfiguration.keys.map(\.environment))
        let config = try Self.read("deploy/sentinel.yaml")
        for name in ["sentinel", "mcp"] {
            let service = try #require(services[name])
            var environment: [String: String] = [:]
            for (key, value) in try service["environment"].members() {
                let raw = try value.string()
                let pattern = key.replacingOccurrences(of: #"_[0-9]+_"#, with: "_<i>_", options: .regularExpression)
                #expect(variables.contains(pattern), "\(name): \(key) is no configuration key's variable")
                if ["TOKEN", "SECRET", "PASSWORD", "URL"].contains(where: { key.contains($0) }) && key != "SENTINEL_HTTP_LISTEN" {
                    #expect(raw.contains("${"), "\(name): \(key) has a literal secret")
                }
                environment[key] = Self.substitute(raw, env, used: &used)
            }
            let configuration = try SentinelConfiguration.load(yaml: config, file: "deploy/sentinel.yaml", environment: environment)
            let brokers = try #require(HostPort(configuration.kafka.brokers))
            #expect(brokers.host == "kafka" && brokers.port == 9092)
            let advertised = try services["kafka"]!["environment"]["KAFKA_ADVERTISED_LISTENERS"].string()
            #expect(advertised.contains("//\(brokers.host):\(brokers.port)"))
            let influx = try #require(configuration.influx)
            #expect(influx.url == "http://influxdb:8086" && influx.api == .v2)
            #expect(influx.database == (try services["influxdb"]!["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"].string()))
            #expect(influx.org == (try services["influxdb"]!["environment"]["DOCKER_INFLUXDB_INIT_ORG"].string()))
            #expect(influx.token == env["INFLUX_TOKEN"])
            let alerts = try #require(configuration.alerts?.url)
            #expect(alerts.hasPrefix("postgres://sentinel:\(env["POSTGRES_PASSWORD"]!)@postgres:5432/sentinel"))
            #expect(try services["postgres"]!["environment"]["POSTGRES_USER"].string() == "sentinel")
            let hook = try #require(configuration.webhooks.first)
            #expect(hook.name == "default" && hook.url.hasPrefix("http://webhook-receiver:9000/"))
            if name == "sentinel" {
                #expect(hook.secrets == [env["WEBHOOK_SECRET"]!])
                #expect(configuration.httpListen.hasSuffix(":9464"))
                #expect(try service["ports"].elements().map { try $0.string() }.contains("9464:9464"))
                let dlq = configuration.kafka.deadLetterTopic
                #expect(try services["kafka-init"]!["command"].elements().map { try $0.string() }.joined().contains("--topic \(dlq) "))
                #expect(try services["kafka-init"]!["command"].elements().map { try $0.string() }.joined().contains("--topic \(configuration.kafka.topic) "))
            } else {
                let command = try service["command"].elements().map { try $0.string() }
                #expect(command.starts(with: ["mcp"]))
                let listen = try #require(command.firstIndex(of: "--http").map { command[$0 + 1] })
                #expect(try service["ports"].elements().map { try $0.string() }.contains("\(HostPort(listen)!.port):\(HostPort(listen)!.port)"))
                #expect(configuration.mcp.token == env["MCP_TOKEN"])
            }
        }
        // The webhook receiver checks the same secret on the port the daemon posts to.
        let receiver = try services["webhook-receiver"]!["command"].elements().map { try Self.substitute($0.string(), env, used: &used) }
        #expect(receiver.contains(env["WEBHOOK_SECRET"]!) && receiver.contains("9000"))
        for (_, service) in services {
            for (_, value) in try service["environment"].members() { _ = Self.substitute(try value.string(), env, used: &used) }
        }
        #expect(used.isSubset(of: Set(env.keys)), "variables without a value in .env.example: \(used.subtracting(env.keys))")
        // Grafana's datasource reads the same database the daemon writes.
        let datasource = try Self.read("deploy/grafana/provisioning/datasources/influxdb.yaml")
        #expect(datasource.contains("dbName: cmcd-metrics") && datasource.contains("uid: cmcd-influxql"))
    }

    @Test func theImageIsBuiltFromFilesThatExist() throws {
        let dockerfile = try Self.read("Dockerfile")
        var copies = 0
        for line in dockerfile.split(separator: "\n") where line.hasPrefix("COPY ") && !line.contains("--from=") {
            let parts = line.split(separator: " ").map(String.init)
            for source in parts.dropFirst().dropLast() {
                copies += 1
                #expect(FileManager.default.fileExists(atPath: packageRoot.appendingPathComponent(source).path), "Dockerfile copies \(source)")
            }
        }
        #expect(copies >= 5)
        #expect(dockerfile.contains("librdkafka-dev") && dockerfile.contains("--product cmcd-sentinel"))
        #expect(dockerfile.contains("USER sentinel"), "the daemon does not run as root")
        let compose = try YAMLValue.parse(try Self.read("docker-compose.yml"), file: "docker-compose.yml")
        #expect(try compose["services"]["sentinel"]["build"].string() == ".")
        #expect(try compose["services"]["mcp"]["image"].string() == (try compose["services"]["sentinel"]["image"].string()))
    }

    @Test func theDashboardsQueriesRunOnWhatTheDaemonWrote() async throws {
        let dashboard = try JSONParser.parse(try Self.read("deploy/grafana/dashboards/cmcd-sentinel.json"), limits: .init(maxDepth: 32, maxElements: 100_000))
        guard case .array(let panels)? = dashboard["panels"] else { throw DeployError(message: "the dashboard has no panels") }
        #expect(panels.count >= 7)
        // What the daemon writes, from the demo data through the broker into a fresh database.
        let influx = InfluxServer.shared
        let database = try await influx.newDatabase()
        let topic = try IT.broker.newTopic()
        try IT.replay(topic: topic)
        // And a CMCD v2 player, which reports its media start delay (msd) itself.
        let v2 = [
            "1720015610.000", "198.51.100.9", "200", "GET", "/videos/1080p_00001.m4s", "FRA56-P3", "req9000", "0.050",
            "CMCD=bl%3D4000%2Cbr%3D5000%2Cmsd%3D1200%2Cot%3Dv%2Csid%3D%22viewer-v2-0007%22%2Cv%3D2", "-",
        ].joined(separator: "\t")
        let replayed = try IT.run(["replay", "--brokers", IT.broker.address, "--topic", topic, "-"], stdin: v2 + "\n")
        #expect(replayed.status == 0, "\(replayed.stderr)")
        // And a PoP outage, for the incident panels.
        let outage = OutageLines.cloudFront(perEdge: 40, failing: "FRA56-C2", healthy: "AMS1-C1").map(\.line).joined(separator: "\n") + "\n"
        let outageReplayed = try IT.run(["replay", "--brokers", IT.broker.address, "--topic", topic, "-"], stdin: outage)
        #expect(outageReplayed.status == 0, "\(outageReplayed.stderr)")
        let result = try IT.run(
            ["run", "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1,2,3", "--exit-when-idle", "3"],
            environment: ["SENTINEL_INFLUX_URL": influx.url, "SENTINEL_INFLUX_DATABASE": database, "SENTINEL_INFLUX_FLUSH_INTERVAL_MS": "100"])
        #expect(result.status == 0, "\(result.stderr)")
        var names: Set<String> = ["last"]  // the alias a subquery's last() gives its column
        for statement in ["SHOW MEASUREMENTS", "SHOW TAG KEYS", "SHOW FIELD KEYS"] {
            for row in try await influx.rows(statement, database: database) {
                for key in ["name", "tagKey", "fieldKey"] { if case .string(let n)? = row[key] { names.insert(n) } }
            }
        }
        #expect(names.isSuperset(of: ["cloudfront_logs", "cmcd_anomalies", "cmcd_sid", "cmcd_bl", "summary", "cmcd_qoe", "open", "scope", "rule"]))
        let first = try await influx.rows("SELECT first(cmcd_v) FROM cloudfront_logs", database: database).first?["time"]
        let last = try await influx.rows("SELECT last(cmcd_v) FROM cloudfront_logs", database: database).first?["time"]
        guard case .int(let from)? = first, case .int(let to)? = last else { throw DeployError(message: "the daemon wrote nothing") }
        let timeFilter = "time >= \(from)ms AND time <= \(to + 60_000)ms"
        for panel in panels {
            let title = panel["title"].map(JSONWriter.string) ?? "?"
            #expect(panel["datasource"]?["uid"] == .string("cmcd-influxql"), "\(title)")
            guard case .array(let targets)? = panel["targets"] else {
                Issue.record("\(title) has no queries")
                continue
            }
            var rows = 0
            for target in targets {
                guard case .string(let query)? = target["query"] else { continue }
                // Every quoted identifier is a measurement, tag or field the daemon writes.
                var identifiers = Set<String>()
                var rest = Substring(query)
                while let open = rest.firstIndex(of: "\"") {
                    let after = rest[rest.index(after: open)...]
                    guard let close = after.firstIndex(of: "\"") else { break }
                    identifiers.insert(String(after[..<close]))
                    rest = after[after.index(after: close)...]
                }
                #expect(identifiers.isSubset(of: names), "\(title): unknown names \(identifiers.subtracting(names))")
                let runnable = query.replacingOccurrences(of: "$timeFilter", with: timeFilter).replacingOccurrences(of: "$__interval", with: "10s")
                do {
                    rows += try await influx.rows(runnable, database: database).count
                } catch {
                    Issue.record("\(title): \(query) is not valid InfluxQL here: \(error)")
                }
            }
            #expect(rows > 0, "\(title) shows nothing for the demo data")
        }
    }
}
