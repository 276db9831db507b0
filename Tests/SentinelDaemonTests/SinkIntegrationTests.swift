import Foundation
import Logging
import SentinelAlerts
import SentinelJSON
import SentinelKafka
import SentinelTestSupport
import Testing

/// The daemon with every sink against real servers: the broker, influxd, SQLite or
/// PostgreSQL, and the webhook receiver (which checks signatures and fails each event's first
/// attempt). The real `cmcd-sentinel` binary, configured by a file as users do.
@Suite(.serialized, .ownThread) struct SinkIntegrationTests {
    typealias IT = DaemonIntegrationTests
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    /// Writes a configuration file and returns its path.
    /// The demo data in a new topic, and a daemon with `/metrics` reading it.
    static func startOnDemoData(config: String, alerts: String) throws -> (IT.Running, Int) {
        let topic = try IT.broker.newTopic()
        try IT.replay(topic: topic)
        return try IT.startServing(
            ["run", "--config", config, "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1,2,3"],
            environment: ["SENTINEL_ALERTS_URL": alerts])
    }

    /// `qoe`: also the cohorts' windows (`cmcd_qoe`), whose number depends on when windows close;
    /// off where a test counts points exactly.
    static func config(influx: String, database: String, alerts: String, webhook: String, extraInflux: String = "", qoe: Bool = false) throws -> String {
        let path = TestScratch.directory.appendingPathComponent("sentinel-\(UUID().uuidString).yaml").path
        // The default rules, with the pages sent at once (grouping is the storm test's).
        let rules = path + ".rules.yaml"
        try String(contentsOfFile: IT.root.appendingPathComponent("rules/default.yaml").path, encoding: .utf8)
            .replacingOccurrences(of: "group_wait_ms: 30000", with: "group_wait_ms: 0").write(toFile: rules, atomically: true, encoding: .utf8)
        let yaml = """
            rules: \(rules)
            influx:
              url: \(influx)
              database: \(database)
              flush_interval_ms: 100
              write_qoe: \(qoe)
            \(extraInflux)
            alerts:
              url: \(alerts)
            webhooks:
              - name: default
                url: \(webhook)
                secret: \(secret)
                timeout_ms: 2000
            """
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func findings(_ lines: [String]) -> [JSONValue] { lines.compactMap { try? JSONParser.parse($0) } }

    static func string(_ value: JSONValue?) -> String? { if case .string(let s)? = value { s } else { nil } }

    /// The webhook notifications the default route calls for: buffer drops of 70% or more
    /// fire once per episode, and resolve once.
    static func expectedNotifications(_ findings: [JSONValue]) -> Set<String> {
        var routed = Set<String>()
        var keys = Set<String>()
        for f in findings where string(f["type"]) == "buffer_drop" {
            let id = string(f["id"])!
            let drop: Double? =
                switch f["details"]?["drop_percent"] {
                case .double(let d)?: d
                case .int(let n)?: Double(n)  // 95.0 is written as 95
                default: nil
                }
            if string(f["status"]) == "firing", let drop, drop >= 70 {
                routed.insert(id)
                keys.insert("\(id) firing")
            }
        }
        for f in findings where string(f["status"]) == "resolved" && routed.contains(string(f["id"])!) {
            keys.insert("\(string(f["id"])!) resolved")
        }
        return keys
    }

    static func accepted(_ receiver: WebhookReceiver) -> [String] {
        receiver.attempts.filter { (200..<300).contains($0.status) && $0.answer != "stall" }.compactMap { attempt in
            guard let finding = attempt.body?["finding"], let id = string(finding["id"]), let type = string(attempt.body?["type"]) else { return nil }
            return "\(id) \(type.replacingOccurrences(of: "finding.", with: ""))"
        }
    }

    @Test(arguments: ["sqlite", "postgres"])
    func findingsReachEverySinkOnceAndAReplayAddsNothing(_ backend: String) async throws {
        let influx = InfluxServer.shared
        let database = try await influx.newDatabase()
        let alertsURL =
            backend == "sqlite"
            ? "sqlite:" + TestScratch.directory.appendingPathComponent("sinks-\(UUID().uuidString).db").path
            : try PostgresServer.shared.newDatabase()
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: ["500"])
        defer { receiver.stop() }
        let configPath = try Self.config(influx: influx.url, database: database, alerts: alertsURL, webhook: receiver.url)
        let topic = try IT.broker.newTopic()
        try IT.replay(topic: topic)

        let first = try IT.run(
            ["run", "--config", configPath, "--brokers", IT.broker.address, "--topic", topic, "--group", "a-\(topic)", "--partitions", "0,1,2,3",
             "--exit-when-idle", "5"], environment: ["SENTINEL_ALERTS_URL": alertsURL])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(Set(first.lines) == IT.expected)
        let findings = Self.findings(first.lines)
        let ids = Set(findings.compactMap { Self.string($0["id"]) })

        // InfluxDB: every request and every finding, at event time.
        let raw = try await influx.rows("SELECT count(cmcd_v) FROM cloudfront_logs", database: database)
        #expect(raw.first?["count"] == .int(62), "62 records carry CMCD")
        let anomalies = try await influx.rows("SELECT id, summary FROM cmcd_anomalies", database: database)
        #expect(anomalies.count == findings.count)
        #expect(Set(anomalies.compactMap { Self.string($0["id"]) }) == ids)
        let drop = try #require(findings.first { Self.string($0["type"]) == "buffer_drop" && Self.string($0["session_id"]) == "viewer-drop-0002" })
        let stored = try await influx.rows(
            "SELECT id FROM cmcd_anomalies WHERE cmcd_sid = $sid AND type = 'buffer_drop' AND status = 'firing'", database: database,
            params: ["sid": "viewer-drop-0002"])
        #expect(stored.first?["id"] == drop["id"])
        #expect(stored.first?["time"] == .int(RFC3339.parse(Self.string(drop["detected_at"])!)!))

        // The alerts table: one row per episode, in its final state.
        let store = try await AlertStore.open(url: alertsURL, logger: Logger(label: "test"))
        let alerts = try await store.alerts(limit: 1_000)
        #expect(Set(alerts.map(\.id)) == ids)
        for alert in alerts {
            let last = findings.last { Self.string($0["id"]) == alert.id }!
            #expect(alert.status == Self.string(last["status"]), "\(alert.id)")
        }

        // Webhooks: each routed notification accepted once, signed, after one failed attempt.
        let expected = Self.expectedNotifications(findings)
        #expect(!expected.isEmpty)
        #expect(await receiver.wait(15) { _ in Set(Self.accepted(receiver)) == expected })
        #expect(Self.accepted(receiver).count == expected.count, "no duplicates: \(Self.accepted(receiver))")
        #expect(receiver.attempts.allSatisfy { $0.signatureValid })
        #expect(receiver.attempts.count == 2 * expected.count, "every first attempt failed and was retried")
        let notifications = try await store.notifications()
        #expect(notifications.count == expected.count)
        // The daemon may stop before the last retry: the next run delivers from the outbox.

        // A second daemon in a new group re-reads the whole topic: nothing is added anywhere.
        let second = try IT.run(
            ["run", "--config", configPath, "--brokers", IT.broker.address, "--topic", topic, "--group", "b-\(topic)", "--partitions", "0,1,2,3",
             "--exit-when-idle", "4"], environment: ["SENTINEL_ALERTS_URL": alertsURL])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(try await influx.rows("SELECT count(cmcd_v) FROM cloudfront_logs", database: database).first?["count"] == .int(62))
        #expect(try await influx.rows("SELECT count(id) FROM cmcd_anomalies", database: database).first?["count"] == .int(Int64(findings.count)))
        #expect(try await store.alerts(limit: 1_000).count == ids.count)
        #expect(try await store.notifications().count == expected.count)
        #expect(try await store.notifications().allSatisfy { $0.state == .delivered })
        #expect(Self.accepted(receiver).count == expected.count, "a replay sends nothing again")
        await store.close()
    }

    /// The cohorts' closed windows land in InfluxDB as `cmcd_qoe`, tagged by cohort.
    @Test func cohortWindowsReachInfluxDBAsQoEPoints() async throws {
        let influx = InfluxServer.shared
        let database = try await influx.newDatabase()
        let alerts = "sqlite:" + TestScratch.directory.appendingPathComponent("qoe-\(UUID().uuidString).db").path
        let configPath = try Self.config(influx: influx.url, database: database, alerts: alerts, webhook: "http://127.0.0.1:9/hook", qoe: true)
        let (daemon, _) = try Self.startOnDemoData(config: configPath, alerts: alerts)
        defer {
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
        }
        // The demo's event time is in the past: its windows close as the quiet stream's clock
        // moves on.
        var rows: [[String: JSONValue]] = []
        for _ in 0..<150 {
            rows = (try? await influx.rows("SELECT sessions, requests, rebuffer_ratio FROM cmcd_qoe WHERE \"cohort\" = 'edge_location'", database: database)) ?? []
            if !rows.isEmpty { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(!rows.isEmpty, "no cmcd_qoe point: \(daemon.errors.snapshot.suffix(1500))")
        func count(_ value: JSONValue?) -> Int64 { if case .int(let n)? = value { n } else if case .double(let d)? = value { Int64(d) } else { 0 } }
        #expect(rows.allSatisfy { count($0["sessions"]) >= 1 && count($0["requests"]) >= 1 }, "\(rows.prefix(3))")
        let contents = try await influx.rows("SELECT requests FROM cmcd_qoe WHERE \"cohort\" = 'content_id' GROUP BY content_id", database: database)
        #expect(contents.contains { $0["content_id"] == .string("demo-movie-42") }, "\(contents.prefix(3))")
    }

    @Test func sinksReportToMetricsAndHealth() async throws {
        let influx = InfluxServer.shared
        let database = try await influx.newDatabase()
        let receiver = try WebhookReceiver(secrets: [Self.secret])
        defer { receiver.stop() }
        let alerts = "sqlite:" + TestScratch.directory.appendingPathComponent("metrics-\(UUID().uuidString).db").path
        let configPath = try Self.config(influx: influx.url, database: database, alerts: alerts, webhook: receiver.url)
        let (daemon, port) = try Self.startOnDemoData(config: configPath, alerts: alerts)
        defer {
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
        }
        var metrics = ""
        for _ in 0..<100 {
            metrics = (try? IT.httpGet(port: port, path: "/metrics").body) ?? ""
            if metrics.contains("cmcd_sentinel_webhook_deliveries_total 4"), metrics.contains("cmcd_sentinel_influx_points_written_total 75") { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(metrics.contains("cmcd_sentinel_influx_points_written_total 75"), "62 requests and 13 findings")
        #expect(metrics.contains("cmcd_sentinel_influx_buffered_points 0"))
        #expect(metrics.contains("cmcd_sentinel_influx_failed 0"))
        #expect(metrics.contains("cmcd_sentinel_webhook_deliveries_total 4"))
        #expect(metrics.contains("cmcd_sentinel_webhook_dead_total 0"))
        #expect(metrics.contains(#"cmcd_sentinel_sink_latency_seconds_count{sink="alerts"}"#))
        #expect(metrics.contains(#"cmcd_sentinel_sink_latency_seconds_count{sink="influx"}"#))
        #expect(metrics.contains("cmcd_sentinel_alerts_write_failures_total 0"))
        let health = try IT.httpGet(port: port, path: "/healthz")
        #expect(health.status == 200)
        let json = try JSONParser.parse(health.body)
        #expect(json["status"] == .string("ok") && json["committing"] == .bool(true), "\(health.body)")
        for component in ["kafka", "influx", "alerts", "webhooks"] {
            #expect(json["components"]?[component]?["status"] == .string("ok"), "\(component): \(health.body)")
        }
        #expect(json["components"]?["influx"]?["backlog"] == .int(0))
    }

    /// A webhook receiver that is down degrades health but records are still committed (the
    /// outbox holds the notifications): 200, and the JSON says what is wrong and since when.
    @Test func aWebhookOutageDegradesHealthWithoutFailingIt() async throws {
        let alerts = "sqlite:" + TestScratch.directory.appendingPathComponent("health-\(UUID().uuidString).db").path
        let influx = InfluxServer.shared
        let database = try await influx.newDatabase()
        let configPath = try Self.config(influx: influx.url, database: database, alerts: alerts, webhook: "http://127.0.0.1:\(freePort())/hook")
        let (daemon, port) = try Self.startOnDemoData(config: configPath, alerts: alerts)
        defer {
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
        }
        var health: (status: Int, body: String) = (0, "")
        for _ in 0..<100 {
            health = (try? IT.httpGet(port: port, path: "/healthz")) ?? (0, "")
            if health.body.contains(#""webhooks":{"status":"degraded""#) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(health.status == 200, "\(health.body)")
        let json = try JSONParser.parse(health.body)
        #expect(json["status"] == .string("degraded") && json["committing"] == .bool(true), "\(health.body)")
        let webhooks = json["components"]?["webhooks"]
        #expect(webhooks?["status"] == .string("degraded"))
        #expect(webhooks?["detail"]?.stringValue?.hasPrefix("default: ") == true, "\(health.body)")
        if case .int(let backlog)? = webhooks?["backlog"] { #expect(backlog >= 1) } else { Issue.record("no backlog: \(health.body)") }
        #expect(webhooks?["since"]?.stringValue?.hasSuffix("Z") == true)
    }

    @Test func influxDBDownMeansTheDaemonStopsWithoutCommitting() throws {
        let topic = try IT.broker.newTopic()
        try IT.replay(topic: topic)
        let receiver = try WebhookReceiver(secrets: [Self.secret])
        defer { receiver.stop() }
        let alerts = "sqlite:" + TestScratch.directory.appendingPathComponent("down-\(UUID().uuidString).db").path
        let configPath = try Self.config(
            influx: "http://127.0.0.1:\(freePort())", database: "cmcd-metrics", alerts: alerts, webhook: receiver.url,
            extraInflux: "  api: v1\n  timeout_ms: 300\n  max_retry_ms: 1500")
        let result = try IT.run(
            ["run", "--config", configPath, "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1,2,3",
             "--exit-when-idle", "4"], environment: ["SENTINEL_ALERTS_URL": alerts])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.contains("InfluxDB write failed"))
        #expect(try IT.committed(topic: topic, group: "g-\(topic)").isEmpty, "nothing committed that InfluxDB does not hold")
    }
}
