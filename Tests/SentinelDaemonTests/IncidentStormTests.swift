import Foundation
import Logging
import SentinelAlerts
import SentinelJSON
import SentinelTestSupport
import Testing

/// A PoP outage through the whole daemon: the real broker, the alerts table (SQLite and
/// PostgreSQL), the webhook receiver and the `silence` command. 5,000 viewers on one edge
/// stall within seconds while 5,000 on another play on: the receiver must get one incident,
/// not thousands of pages, and a silence set halfway (with the daemon killed and restarted
/// there) holds back the rest without losing a record or sending one twice.
@Suite(.serialized, .ownThread) struct IncidentStormTests {
    typealias IT = DaemonIntegrationTests
    static let t0 = OutageLines.t0
    static let failing = "FRA56-C2"
    static let healthy = "AMS1-C1"

    static func write(_ lines: ArraySlice<(time: Int64, line: String)>) throws -> String {
        let path = TestScratch.directory.appendingPathComponent("storm-\(UUID().uuidString).tsv").path
        try (lines.map(\.line).joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The daemon's log lines that say where it resumed or checkpointed (for a failure's message).
    static func restartLines(_ log: String) -> String {
        log.split(separator: "\n").filter { line in ["resumed", "checkpoint", "taken back", "commit", "failed", "evict"].contains { line.contains($0) } }
            .suffix(40).joined(separator: "\n")
    }

    static func incidentEvents(_ receiver: WebhookReceiver) -> [WebhookReceiver.Attempt] {
        receiver.attempts.filter { ($0.body?["finding"]?["type"]).flatMap { if case .string(let s) = $0 { s } else { nil } } == "incident" }
    }

    @Test(arguments: ["sqlite", "postgres"])
    func aPopOutageIsOneIncidentAndASilenceHoldsBackTheRest(_ backend: String) async throws {
        let perEdge = Int(ProcessInfo.processInfo.environment["SENTINEL_STORM_VIEWERS"] ?? "") ?? 5_000
        let all = OutageLines.cloudFront(perEdge: perEdge, failing: Self.failing, healthy: Self.healthy)
        let half = all.firstIndex { $0.time >= Self.t0 + 150_000 }!
        let first = try Self.write(all[..<half])
        let second = try Self.write(all[half...])
        defer { for path in [first, second] { try? FileManager.default.removeItem(atPath: path) } }

        let alertsURL =
            backend == "sqlite"
            ? "sqlite:" + TestScratch.directory.appendingPathComponent("storm-\(UUID().uuidString).db").path
            : try PostgresServer.shared.newDatabase()
        let receiver = try WebhookReceiver(secrets: [SinkIntegrationTests.secret])
        defer { receiver.stop() }
        let dir = TestScratch.directory.appendingPathComponent("storm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let rules = dir.appendingPathComponent("rules.yaml").path
        // The default rules, with the viewers' drops held back (long enough for a loaded machine to reach the incident) so it can fold them.
        try """
            version: 1
            routes:
              - name: severe-buffer-drops
                webhook: default
                types: [buffer_drop]
                min_drop_percent: 70
                group_wait_ms: 300000
              - name: incidents
                webhook: default
                types: [incident]
            """.write(toFile: rules, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("sentinel.yaml").path
        try """
            rules: \(rules)
            output:
              stdout: false
            alerts:
              url: \(alertsURL)
            webhooks:
              - name: default
                url: \(receiver.url)
                secret: \(SinkIntegrationTests.secret)
            """.write(toFile: config, atomically: true, encoding: .utf8)

        let topic = try IT.broker.newTopic(partitions: 4)
        let replayed = try IT.run(["replay", "--brokers", IT.broker.address, "--topic", topic, first])
        #expect(replayed.status == 0, "\(replayed.stderr)")
        // Every command on the one alerts table (the helpers give each its own otherwise).
        let environment = ["SENTINEL_ALERTS_URL": alertsURL]
        let arguments = ["run", "--config", config, "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1,2,3"]
        let (firstRun, _) = try IT.startServing(arguments, environment: environment)
        defer { if firstRun.process.isRunning { kill(firstRun.process.processIdentifier, SIGKILL) } }

        // The outage: one incident on the edge reaches the receiver.
        #expect(await receiver.wait(90) { _ in !Self.incidentEvents(receiver).isEmpty }, "no incident was delivered: \(firstRun.errors.snapshot.suffix(2000))")
        let firing = try #require(Self.incidentEvents(receiver).first)
        #expect(firing.signatureValid)
        #expect(firing.body?["type"] == .string("finding.firing"))
        #expect(firing.body?["finding"]?["details"]?["scope"] == .object([("edge_location", .string(Self.failing))]))
        // It says how many viewers' pages it replaced (those held back when it fired).
        if case .int(let folded)? = firing.body?["folded"]?["notifications"] { #expect(folded > 0) } else { Issue.record("no folded count") }

        // Halfway, an operator silences incidents on the edge; then the rest of the stream.
        let silenced = try IT.run([
            "silence", "add", "--config", config, "--match", "type=incident", "--match", "edge_location=\(Self.failing)", "--duration", "1h",
            "--created-by", "storm-test", "--comment", "PoP failover in progress",
        ], environment: environment)
        #expect(silenced.status == 0, "\(silenced.stderr)")
        let silenceID = silenced.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let listed = try IT.run(["silence", "list", "--config", config], environment: environment)
        #expect(listed.stdout.contains("\(silenceID)\tactive\ttype=incident,edge_location=\(Self.failing)"), "\(listed.stdout)")
        // The daemon dies in the middle of the incident (and of the silence), and comes back:
        // it takes the incident back from the table rather than firing it twice.
        kill(firstRun.process.processIdentifier, SIGKILL)
        firstRun.process.waitUntilExit()
        let (daemon, port) = try IT.startServing(arguments, environment: environment)
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        let rest = try IT.run(["replay", "--brokers", IT.broker.address, "--topic", topic, second])
        #expect(rest.status == 0, "\(rest.stderr)")

        let store = try await AlertStore.open(url: alertsURL, logger: Logger(label: "test"))
        var query = AlertStore.Query()
        query.type = "incident"
        query.limit = 100
        var incidents: [AlertRecord] = []
        var resolvedNotification: NotificationRecord?
        for _ in 0..<300 {
            incidents = try await store.alerts(matching: query)
            if let incident = incidents.first, incident.status == "resolved" {
                resolvedNotification = try await store.notifications(alertID: incident.id).first { $0.kind == "resolved" }
                if resolvedNotification?.state == .silenced { break }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        var consumed: Double?
        for _ in 0..<300 {
            consumed = IT.metricValue("cmcd_sentinel_records_consumed_total", in: (try? IT.httpGet(port: port, path: "/metrics").body) ?? "")
            if (consumed ?? 0) >= Double(all.count - half) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        // The second run read the second half, and what the first had not committed again.
        #expect((consumed ?? 0) >= Double(all.count - half))
        // Counters are published about once a second.
        let resolvedSeries = #"cmcd_sentinel_findings_total{type="incident",severity="critical",status="resolved"} 1"#
        var scrape = ""
        for _ in 0..<50 {
            scrape = (try? IT.httpGet(port: port, path: "/metrics").body) ?? ""
            if scrape.contains(resolvedSeries) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(scrape.contains(resolvedSeries), "the incident it took back resolved")
        #expect((IT.metricValue("cmcd_sentinel_cohorts_live", in: scrape) ?? 0) >= 1)
        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0, "\(daemon.errors.text.suffix(2000))")
        #expect(daemon.errors.text.contains("1 open incidents taken back from the alerts table"), "\(daemon.errors.text.suffix(2000))")

        // One incident, resolved, its resolve silenced (recorded, not sent).
        #expect(incidents.map(\.status) == ["resolved"], "\(incidents.map(\.summary))")
        #expect(incidents.first?.edgeLocation == Self.failing)
        #expect(resolvedNotification?.state == .silenced)
        #expect(resolvedNotification?.lastError == "silenced by \(silenceID)")
        // The receiver got that one incident (once, whatever the retries) and nothing else:
        // no page per viewer, none for the healthy edge.
        let events = Set(receiver.attempts.map(\.id))
        #expect(events == [firing.id], "\(events.count) events, the first: \(receiver.attempts.prefix(3).map { $0.body.map(JSONWriter.string)?.prefix(400) ?? "" })")
        // Every viewer's findings are still in the table; their pages were folded.
        var drops = AlertStore.Query()
        drops.type = "buffer_drop"
        drops.limit = 20_000
        let dropAlerts = try await store.alerts(matching: drops)
        #expect(dropAlerts.count == perEdge)
        let unresolved = dropAlerts.filter { $0.edgeLocation != Self.failing || $0.status != "resolved" }
        #expect(
            unresolved.isEmpty,
            """
            \(unresolved.count) drops not resolved on \(Self.failing), the first: \(unresolved.prefix(5).map { "\($0.id) \($0.sessionID) \($0.status) started \($0.startedAt - Self.t0) updated \($0.updatedAt)" })
            first daemon: \(Self.restartLines(firstRun.errors.text))
            second daemon: \(Self.restartLines(daemon.errors.text))
            """)
        var stalls = AlertStore.Query()
        stalls.type = "buffer_starvation"
        stalls.limit = 20_000
        #expect(try await store.alerts(matching: stalls).count == perEdge)
        let counts = try await store.notificationCounts()
        // Each viewer's drop page was folded, with its resolve where that was queued already.
        #expect((perEdge...(2 * perEdge)).contains(counts["folded", default: 0]), "\(counts)")
        #expect(counts["delivered"] == 1 && counts["silenced"] == 1, "\(counts)")
        #expect(counts["pending", default: 0] == 0 && counts["dead", default: 0] == 0, "\(counts)")
        await store.close()
    }

    /// Without detection checkpoints (`alerts.checkpoints: false`), and so with Kinesis, a
    /// restart in an incident still takes it back from the alerts table: it resolves under
    /// its id instead of staying open for ever beside a second one.
    @Test func anIncidentIsTakenBackWithoutCheckpoints() async throws {
        let all = OutageLines.cloudFront(perEdge: 100, failing: Self.failing, healthy: Self.healthy)
        let half = all.firstIndex { $0.time >= Self.t0 + 100_000 }!
        let first = try Self.write(all[..<half])
        let second = try Self.write(all[half...])
        let dir = TestScratch.directory.appendingPathComponent("storm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let alertsURL = "sqlite:" + dir.appendingPathComponent("alerts.db").path
        let config = dir.appendingPathComponent("sentinel.yaml").path
        try """
            output:
              stdout: false
            alerts:
              url: \(alertsURL)
              checkpoints: false
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let topic = try IT.broker.newTopic(partitions: 2)
        let arguments = ["run", "--config", config, "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1"]
        for (part, lines) in [first, second].enumerated() {
            let replayed = try IT.run(["replay", "--brokers", IT.broker.address, "--topic", topic, lines])
            #expect(replayed.status == 0, "\(replayed.stderr)")
            let (daemon, port) = try IT.startServing(arguments, environment: ["SENTINEL_ALERTS_URL": alertsURL])
            defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
            let target = Double(part == 0 ? half : all.count - half)
            var consumed = 0.0
            for _ in 0..<300 where consumed < target {
                try await Task.sleep(for: .milliseconds(200))
                consumed = IT.metricValue("cmcd_sentinel_records_consumed_total", in: (try? IT.httpGet(port: port, path: "/metrics").body) ?? "") ?? 0
            }
            #expect(consumed >= target)
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
            #expect(daemon.process.terminationStatus == 0, "\(daemon.errors.text.suffix(2000))")
            if part == 1 {
                #expect(daemon.errors.text.contains("1 open incidents taken back from the alerts table"), "\(daemon.errors.text.suffix(2000))")
            }
        }
        let store = try await AlertStore.open(url: alertsURL, logger: Logger(label: "test"))
        var query = AlertStore.Query()
        query.type = "incident"
        let incidents = try await store.alerts(matching: query)
        #expect(incidents.map(\.status) == ["resolved"], "\(incidents.map(\.summary))")
        #expect(incidents.first?.edgeLocation == Self.failing)
        // The viewers' episodes open at the stop were carried on by the next daemon: each
        // stalled viewer has one drop and one starvation, resolved (none left firing for
        // ever, none found again under another id).
        for type in ["buffer_drop", "buffer_starvation"] {
            var viewers = AlertStore.Query()
            viewers.type = type
            viewers.limit = 1_000
            let rows = try await store.alerts(matching: viewers)
            #expect(rows.count == 100, "\(type): \(rows.count) rows")
            let open = rows.filter { $0.status != "resolved" }
            #expect(open.isEmpty, "\(type): \(open.count) left \(open.first?.status ?? "")")
        }
        await store.close()
    }

    /// An incident open when the daemon stopped whose rule is gone from the new rules is
    /// resolved when it starts, not left open for ever (folding every viewer's page of its edge).
    @Test func anIncidentOfARuleNoLongerConfiguredIsResolvedAtStart() async throws {
        let all = OutageLines.cloudFront(perEdge: 100, failing: Self.failing, healthy: Self.healthy)
        let lines = try Self.write(all[..<all.firstIndex { $0.time >= Self.t0 + 100_000 }!])
        let dir = TestScratch.directory.appendingPathComponent("storm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let alertsURL = "sqlite:" + dir.appendingPathComponent("alerts.db").path
        let environment = ["SENTINEL_ALERTS_URL": alertsURL]
        let noCohorts = dir.appendingPathComponent("rules.yaml").path
        try "version: 1\ncohorts:\n  groups: []\n".write(toFile: noCohorts, atomically: true, encoding: .utf8)
        let topic = try IT.broker.newTopic(partitions: 1)
        let replayed = try IT.run(["replay", "--brokers", IT.broker.address, "--topic", topic, lines])
        #expect(replayed.status == 0, "\(replayed.stderr)")
        let arguments = ["run", "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0", "--exit-when-idle", "3"]
        let first = try IT.run(arguments, environment: environment)
        #expect(first.status == 0, "\(first.stderr.suffix(2000))")
        let store = try await AlertStore.open(url: alertsURL, logger: Logger(label: "test"))
        var query = AlertStore.Query()
        query.type = "incident"
        #expect(try await store.alerts(matching: query).map(\.status) == ["firing"])
        let config = dir.appendingPathComponent("sentinel.yaml").path
        try "rules: \(noCohorts)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let second = try IT.run(arguments + ["--config", config], environment: environment)
        #expect(second.status == 0, "\(second.stderr.suffix(2000))")
        #expect(second.stderr.contains("1 open incidents resolved"), "\(second.stderr.suffix(2000))")
        let incidents = try await store.alerts(matching: query)
        #expect(incidents.map(\.status) == ["resolved"])
        #expect(incidents.first?.summary == "Incident rebuffering on edge_location=\(Self.failing) resolved: its rule is no longer configured")
        await store.close()
    }
}
