import Foundation
import SentinelJSON
import SentinelKafka
import SentinelTestSupport
import Testing

/// The daemon against a real Kafka-protocol broker (Tansu behind the ApiVersions relay,
/// started by these tests with scripts/broker/broker.sh), driven as users drive it: the
/// real `cmcd-sentinel` binary for replay and run.
@Suite(.serialized, .ownThread) struct DaemonIntegrationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let broker = Broker.shared
    static let demo = root.appendingPathComponent("samples/demo-sessions.tsv").path

    /// Offline findings for the demo data, without the end-of-input resolutions a running
    /// daemon does not produce.
    static let expected: Set<String> = {
        let result = try! run(["detect", demo])
        return Set(result.lines.filter { !$0.contains(#""resolution":"end_of_input""#) })
    }()

    @Test func findingsMatchOfflineDetectionAndOffsetsAreCommitted() throws {
        let topic = try Self.broker.newTopic()
        try Self.replay(topic: topic)
        let result = try Self.run(Self.daemonArguments(topic: topic, group: "g-\(topic)") + ["--exit-when-idle", "3"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(Set(result.lines) == Self.expected)
        #expect(result.lines.count == Self.expected.count, "no duplicates in a clean run")
        let committed = try Self.committed(topic: topic, group: "g-\(topic)")
        let ends = try Self.endOffsets(topic: topic)
        #expect(committed == ends, "committed \(committed), end offsets \(ends)")
    }

    /// A record dated a day ahead changes no finding through the daemon either, and a record
    /// with one unreadable member is kept without it; /metrics counts both (issues 25 and 27).
    @Test func aFutureRecordAndABadMemberHurtNoOneAndAreCounted() throws {
        var lines = try String(contentsOfFile: Self.demo, encoding: .utf8).split(separator: "\n").map(String.init)
        var future = lines[5].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        future[0] = String(format: "%.3f", Double(future[0])! + 86_400)
        lines.insert(future.joined(separator: "\t"), at: 30)
        // A repeat of the healthy viewer's first segment request, with a member no parser reads.
        let healthy = try #require(lines.firstIndex { $0.contains("viewer-healthy") && $0.contains("bl%3D") })
        lines.insert(lines[healthy].replacingOccurrences(of: "CMCD=", with: "CMCD=com.example-ver%3D1.2.3%2C"), at: healthy + 1)
        let (daemon, metrics) = try Self.consumeWatchingMetrics(lines) { Set($0) == Self.expected }
        #expect(Set(daemon.output.lines) == Self.expected)
        #expect(Self.metricValue("cmcd_sentinel_samples_future_total", in: metrics) == 1, "\(metrics)")
        #expect(Self.metricValue("cmcd_sentinel_cmcd_member_errors_total{key=\"custom\"}", in: metrics) == 1, "\(metrics)")
    }

    /// A line over the line limit is counted, reported and makes `replay` fail; the others are sent.
    @Test func replayReportsLinesTooLongToSend() throws {
        let good = try String(contentsOfFile: Self.demo, encoding: .utf8).split(separator: "\n")[0]
        let long = good + String(repeating: "x", count: 70_000)
        let topic = try Self.broker.newTopic(partitions: 1)
        let result = try Self.run(["replay", "--brokers", Self.broker.address, "--topic", topic, "-"], stdin: "\(good)\n\(long)\n\(good)\n")
        #expect(result.status == 1)
        #expect(result.stderr.contains("replay: 2 records produced to \(topic), 2 delivered, 0 failed, 1 lines over 65536 bytes skipped"), "\(result.stderr)")
        #expect(result.stderr.contains("replay: 1 lines longer than 65536 bytes were not sent"), "\(result.stderr)")
    }

    /// `sessions.max_live_sessions` bounds the daemon, not each of its partitions (issue 25).
    @Test func theLiveSessionBoundIsDaemonWide() throws {
        let rules = TestScratch.directory.appendingPathComponent("rules-\(UUID().uuidString).yaml")
        try "version: 1\nsessions:\n  max_live_sessions: 40\n".write(to: rules, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: rules) }
        var lines: [String] = []
        for s in 0..<200 {
            let ms = 1_720_015_600_000 + s * 10
            let cmcd = "bl%3D4000%2Cot%3Dav%2Csid%3D%22bound-\(s)%22"
            lines.append("\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst())\t203.0.113.9\t200\tGET\t/v.ts\tIAD89-P1\tr\(s)\t0.1\tCMCD=\(cmcd)\t-")
        }
        let (daemon, metrics) = try Self.consumeWatchingMetrics(lines, environment: ["SENTINEL_RULES": rules.path]) { _ in true }
        #expect(daemon.process.terminationStatus == 0, "\(daemon.errors.text)")
        // 200 sessions over four partitions, at most 40 live at once in the whole daemon.
        #expect(Self.metricValue("cmcd_sentinel_live_sessions", in: metrics) == 40, "\(metrics)")
        #expect(Self.metricValue(#"cmcd_sentinel_session_evictions_total{reason="capacity"}"#, in: metrics) == 160, "\(metrics)")
    }

    /// A broker outage is no quiet stream: event time must not run on while nothing can be
    /// fetched (issue 25: a 20 s outage raised stuck startups for sessions that were fine).
    @Test func aBrokerOutageRaisesNoFinding() throws {
        func line(_ ms: Int, _ sid: String, _ cmcd: String) -> String {
            "\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst())\t203.0.113.9\t200\tGET\t/v.ts\tIAD89-P1\tr\t0.1\tCMCD=\(cmcd)%2Csid%3D%22\(sid)%22\t-"
        }
        let t = 1_720_015_600_000
        let sessions = (0..<6).map { "outage-\($0)" }
        // Every viewer starts before the outage and plays 1.5 s later, after it.
        let before = sessions.enumerated().flatMap { i, sid in [line(t + i * 10, sid, "ot%3Dm%2Csu"), line(t + 300 + i * 10, sid, "bl%3D0%2Cot%3Dav%2Csu")] }
        let after = sessions.enumerated().map { i, sid in line(t + 1500 + i * 10, sid, "bl%3D4000%2Cot%3Dav") }
        let offline = try Self.run(["detect", "-"], stdin: (before + after).joined(separator: "\n") + "\n")
        #expect(offline.lines.isEmpty, "the stream itself has nothing to report")

        // A broker of this test's own: the outage must not reach the tests running beside it.
        let broker = Broker()
        defer { broker.stop() }
        let topic = try broker.newTopic(partitions: 2)
        func replay(_ lines: [String]) throws {
            let result = try Self.run(["replay", "--brokers", broker.address, "--topic", topic, "-"], stdin: lines.joined(separator: "\n") + "\n")
            #expect(result.status == 0, "\(result.stderr)")
        }
        try replay(before)
        let (daemon, port) = try Self.startServing(
            ["run", "--brokers", broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1"])
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        func consumed() -> Double? { Self.metricValue("cmcd_sentinel_records_consumed_total", in: (try? Self.httpGet(port: port, path: "/metrics").body) ?? "") }
        #expect(Self.waitFor(30) { consumed() == Double(before.count) }, "the daemon never read the first records")
        #expect(broker.startOutage())
        Thread.sleep(forTimeInterval: 20)
        #expect(broker.endOutage())
        try replay(after)
        #expect(Self.waitFor(40) { consumed() == Double(before.count + after.count) }, "the daemon never read the records after the outage")
        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(daemon.output.lines.isEmpty, "findings the stream does not have: \(daemon.output.lines.map { $0.prefix(400) })")
    }

    @Test func sigtermFinishesFlushesAndCommitsWhatWasProcessed() throws {
        let topic = try Self.broker.newTopic()
        try Self.replay(topic: topic)
        let daemon = try Self.start(Self.daemonArguments(topic: topic, group: "g-\(topic)"))
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, daemon.output.lines.count < Self.expected.count { Thread.sleep(forTimeInterval: 0.1) }
        let stopped = Date()
        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(Date().timeIntervalSince(stopped) < 10)
        #expect(daemon.process.terminationStatus == 0)
        #expect(Set(daemon.output.lines) == Self.expected)
        let committed = try Self.committed(topic: topic, group: "g-\(topic)")
        let ends = try Self.endOffsets(topic: topic)
        #expect(committed == ends, "committed \(committed), end offsets \(ends)")
    }

    @Test func killNineMidStreamThenRestartLosesNoFinding() throws {
        let topic = try Self.broker.newTopic()
        // Records trickle in (about 4 s for the demo) while the first daemon runs.
        let replay = try Self.start(["replay", "--brokers", Self.broker.address, "--topic", topic, "--rate", "16", Self.demo])
        let first = try Self.start(Self.daemonArguments(topic: topic, group: "g-\(topic)"))
        Thread.sleep(forTimeInterval: 2.5)
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        replay.process.waitUntilExit()
        #expect(replay.process.terminationStatus == 0)
        let second = try Self.run(Self.daemonArguments(topic: topic, group: "g-\(topic)") + ["--exit-when-idle", "3"])
        #expect(second.status == 0, "\(second.stderr)")
        let firstLines = Set(first.output.lines)
        #expect(!firstLines.isEmpty, "the first daemon was killed before it found anything: the test proves nothing")
        // A restarted daemon rebuilds a session from its restart position, not its first
        // request, so the QoE a resolved finding carries covers what it re-read; everything
        // else must agree.
        let union = Set(firstLines.union(second.lines).map(Self.withoutQoE))
        let expected = Set(Self.expected.map(Self.withoutQoE))
        #expect(union == expected, "every finding reported by one run or the other, none invented; missing: \(expected.subtracting(union).map { $0.prefix(200) }), extra: \(union.subtracting(expected).map { $0.prefix(200) })")
    }

    /// The records a daemon read, from its last log line ("stopped after N records").
    static func consumed(_ stderr: String) -> Int? {
        guard let line = stderr.split(separator: "\n").last(where: { $0.contains("stopped after") }) else { return nil }
        let words = line.split(separator: " ")
        guard let i = words.firstIndex(of: "after"), i + 1 < words.count else { return nil }
        return Int(words[i + 1])
    }

    /// Issue 25: a restart re-read the idle timeout's worth of the stream. With the detection
    /// state checkpointed beside the alerts, a daemon killed after handling everything is
    /// followed by one that re-reads nothing and finds nothing more, and the two together
    /// report exactly what one daemon that never stopped reports, QoE included.
    @Test func killNineThenRestartResumesFromTheCheckpoint() throws {
        let topic = try Self.broker.newTopic()
        try Self.replay(topic: topic)
        let shared = ["SENTINEL_ALERTS_URL": "sqlite:" + TestScratch.directory.appendingPathComponent("it-ck-\(UUID().uuidString).db").path]
        let first = try Self.start(Self.daemonArguments(topic: topic, group: "g-\(topic)"), environment: shared)
        defer { if first.process.isRunning { kill(first.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(20) { first.output.lines.count >= Self.expected.count })
        Thread.sleep(forTimeInterval: 2)  // a commit interval and more: the checkpoint is saved
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        let second = try Self.run(Self.daemonArguments(topic: topic, group: "g-\(topic)") + ["--exit-when-idle", "3"], environment: shared)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(Self.consumed(second.stderr) == 0, "re-read: \(second.stderr.suffix(600))")
        #expect(second.stderr.contains("from its checkpoint"))
        #expect(second.lines.isEmpty, "nothing found twice: \(second.lines.prefix(3))")
        #expect(Set(first.output.lines) == Self.expected)
    }

    /// Killed mid-stream: the restarted daemon resumes from the last checkpoint, re-reads only
    /// what came after it, and no finding is lost, changed or invented (QoE included).
    @Test func killNineMidStreamResumesWithTheSameFindingsQoEIncluded() throws {
        let topic = try Self.broker.newTopic()
        let shared = ["SENTINEL_ALERTS_URL": "sqlite:" + TestScratch.directory.appendingPathComponent("it-ck-\(UUID().uuidString).db").path]
        let replay = try Self.start(["replay", "--brokers", Self.broker.address, "--topic", topic, "--rate", "16", Self.demo])
        let first = try Self.start(Self.daemonArguments(topic: topic, group: "g-\(topic)"), environment: shared)
        Thread.sleep(forTimeInterval: 2.5)
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        replay.process.waitUntilExit()
        let second = try Self.run(Self.daemonArguments(topic: topic, group: "g-\(topic)") + ["--exit-when-idle", "3"], environment: shared)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(!first.output.lines.isEmpty, "the first daemon was killed before it found anything: the test proves nothing")
        #expect(second.stderr.contains("from its checkpoint"))
        let reread = Self.consumed(second.stderr) ?? .max
        #expect(reread < 64, "the second daemon read \(reread) of 64 records")
        let union = Set(first.output.lines).union(second.lines)
        #expect(union == Self.expected, "missing: \(Self.expected.subtracting(union).map { $0.prefix(160) }), extra: \(union.subtracting(Self.expected).map { $0.prefix(160) })")
    }

    /// Static group membership (`kafka.instance_id`): a daemon restarted after kill -9 gets its
    /// partitions back without waiting for the group to time the old member out (Tansu: 26 s,
    /// its join delay, instead of 83 s), and resumes from its checkpoint.
    @Test(.timeLimit(.minutes(4)))
    func aRestartWithStaticMembershipGetsItsPartitionsBackAtOnce() throws {
        let topic = try Self.broker.newTopic()
        try Self.replay(topic: topic)
        let environment = [
            "SENTINEL_ALERTS_URL": "sqlite:" + TestScratch.directory.appendingPathComponent("it-ck-\(UUID().uuidString).db").path,
            "SENTINEL_KAFKA_INSTANCE_ID": "sentinel-\(topic)",
        ]
        let arguments = ["run", "--brokers", Self.broker.address, "--topic", topic, "--group", "g-\(topic)"]
        let first = try Self.start(arguments, environment: environment)
        defer { if first.process.isRunning { kill(first.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(90) { first.output.lines.count >= Self.expected.count }, "the first daemon never caught up")
        Thread.sleep(forTimeInterval: 2)
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        let restarted = Date()
        let second = try Self.start(arguments, environment: environment)
        defer { if second.process.isRunning { kill(second.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(60) { second.errors.snapshot.contains("assigned") })
        let took = Date().timeIntervalSince(restarted)
        #expect(took < 45, "partitions came back after \(took) s: the old member was waited for (session.timeout.ms)")
        Thread.sleep(forTimeInterval: 1)
        kill(second.process.processIdentifier, SIGTERM)
        second.process.waitUntilExit()
        #expect(second.errors.snapshot.contains("from its checkpoint"))
        #expect(Self.consumed(second.errors.snapshot) == 0)
        #expect(second.output.lines.isEmpty)
    }

    @Test(.timeLimit(.minutes(4)))
    func aSecondDaemonJoiningTheGroupTakesOverWithoutLosingFindings() throws {
        let topic = try Self.broker.newTopic()
        let group = "g-\(topic)"
        let groupArguments = ["run", "--brokers", Self.broker.address, "--topic", topic, "--group", group]
        let first = try Self.start(groupArguments)
        defer { if first.process.isRunning { kill(first.process.processIdentifier, SIGKILL) } }
        // A group join takes Tansu 20-25 s: wait for the first assignment.
        #expect(Self.waitFor(60) { first.errors.snapshot.contains("assigned") }, "first daemon never got partitions")
        let replay = try Self.start(["replay", "--brokers", Self.broker.address, "--topic", topic, "--rate", "4", Self.demo])
        Thread.sleep(forTimeInterval: 5)
        let second = try Self.start(groupArguments)
        defer { if second.process.isRunning { kill(second.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(90) { second.errors.snapshot.contains("assigned") }, "second daemon never got partitions")
        replay.process.waitUntilExit()
        // Let both drain, then stop them cleanly.
        let expectedKeys = Set(Self.expected.map(Self.key))
        _ = Self.waitFor(60) { Set((first.output.lines + second.output.lines).map(Self.key)).isSuperset(of: expectedKeys) }
        for daemon in [first, second] {
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
            #expect(daemon.process.terminationStatus == 0)
        }
        #expect(first.errors.snapshot.contains("revoked"), "the first daemon gave partitions up")
        let seen = Set((first.output.lines + second.output.lines).map(Self.key))
        #expect(seen == expectedKeys, "missing \(expectedKeys.subtracting(seen)), unexpected \(seen.subtracting(expectedKeys))")
    }

    /// Daemons of one group sharing a PostgreSQL alerts store share their checkpoints: a
    /// partition that moves to the daemon joining the group resumes there from the checkpoint
    /// the first one saved when it gave the partition up, and no finding is lost.
    @Test(.timeLimit(.minutes(5)))
    func aPartitionMovedBetweenDaemonsSharingPostgreSQLResumesFromItsCheckpoint() throws {
        let topic = try Self.broker.newTopic()
        let group = "g-\(topic)"
        let shared = ["SENTINEL_ALERTS_URL": try PostgresServer.shared.newDatabase()]
        let groupArguments = ["run", "--brokers", Self.broker.address, "--topic", topic, "--group", group]
        try Self.replay(topic: topic)
        let first = try Self.start(groupArguments, environment: shared)
        defer { if first.process.isRunning { kill(first.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(90) { first.output.lines.count >= Self.expected.count }, "the first daemon never caught up")
        let second = try Self.start(groupArguments, environment: shared)
        defer { if second.process.isRunning { kill(second.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(120) { second.errors.snapshot.contains("assigned") }, "the second daemon never got partitions")
        Thread.sleep(forTimeInterval: 2)
        for daemon in [first, second] {
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
            #expect(daemon.process.terminationStatus == 0)
        }
        #expect(first.errors.snapshot.contains("revoked"))
        #expect(second.errors.snapshot.contains("from its checkpoint"), "\(second.errors.snapshot.suffix(800))")
        #expect(second.output.lines.isEmpty, "the moved partitions' findings were already out: \(second.output.lines.prefix(2))")
        #expect(Set(first.output.lines) == Self.expected)
    }

    /// A finding's identity for sinks: its id and status (repeats of it are absorbed).
    static func key(_ line: String) -> String {
        guard let json = try? JSONParser.parse(line), case .string(let id)? = json["id"], case .string(let status)? = json["status"],
            case .string(let severity)? = json["severity"]
        else { return line }
        return "\(id) \(status) \(severity)"
    }

    /// Starts the daemon with `/metrics` on a port the kernel picks (`127.0.0.1:0`: no port is
    /// chosen first and bound later, so nothing can take it in between) and returns the port
    /// it logged once serving.
    static func startServing(_ arguments: [String], environment: [String: String] = [:]) throws -> (Running, Int) {
        var environment = environment
        environment["SENTINEL_HTTP_LISTEN"] = "127.0.0.1:0"
        let daemon = try start(arguments, environment: environment)
        var port: Int?
        _ = waitFor(30) {
            port = servingPort(in: daemon.errors.snapshot)
            return port != nil || !daemon.process.isRunning
        }
        guard let port else {
            if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) }
            throw SetupFailure(description: "the daemon never said where it serves /metrics: \(daemon.errors.snapshot.suffix(2000))")
        }
        return (daemon, port)
    }

    /// The port in the daemon's "serving /metrics and /healthz on ...:PORT" log line.
    static func servingPort(in log: String) -> Int? {
        guard let line = log.split(separator: "\n").first(where: { $0.contains("serving /metrics and /healthz on") }) else { return nil }
        return Int(line.split(separator: ":").last?.prefix { $0.isNumber } ?? "")
    }

    static func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return condition()
    }

    @Test func unreachableBrokerKeepsTheDaemonRunningAndUnhealthy() throws {
        let (daemon, port) = try Self.startServing(["run", "--brokers", "127.0.0.1:\(freePort())", "--topic", "nowhere", "--partitions", "0"])
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        #expect(Self.waitFor(20) { (try? Self.httpGet(port: port, path: "/healthz").status) == 503 }, "health never reported the broker")
        #expect(daemon.process.isRunning)
        #expect(daemon.errors.snapshot.contains("kafka"))
        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0)
    }

    /// `replay` toward an address where no broker listens stops with the reason within its
    /// 10 s check, rather than queueing the whole input for a flush that times out.
    @Test func replayWithoutABrokerFailsAtOnceWithTheReason() throws {
        let start = Date()
        let result = try Self.run(["replay", "--brokers", "127.0.0.1:1", "--topic", "nowhere", Self.demo])
        #expect(result.status != 0)
        #expect(result.stderr.contains("replay: 127.0.0.1:1: no broker answered within 10000 ms"), "\(result.stderr)")
        #expect(!result.stderr.contains("records produced"))
        #expect(Date().timeIntervalSince(start) < 25)
    }

    @Test func malformedRecordsAreSkippedCountedAndNeverBlockThePartition() throws {
        let topic = try Self.broker.newTopic(partitions: 1)
        let good = try String(contentsOfFile: Self.demo, encoding: .utf8).split(separator: "\n").map(String.init)
        var lines = good
        lines.insert("this is not a CloudFront record", at: 5)
        lines.insert(String(repeating: "\t", count: 9) + "\u{1}\u{2}", at: 10)
        let input = lines.joined(separator: "\n") + "\n"
        let replay = try Self.run(["replay", "--brokers", Self.broker.address, "--topic", topic, "-"], stdin: input)
        #expect(replay.status == 0, "\(replay.stderr)")
        let deadLetterTopic = try Self.broker.newTopic(partitions: 1)
        let result = try Self.run(
            ["run", "--brokers", Self.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0", "--exit-when-idle", "3"],
            environment: ["SENTINEL_KAFKA_DEAD_LETTER_TOPIC": deadLetterTopic])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("stopped after 66 records"))
        #expect(Set(result.lines) == Self.expected, "the good records around the bad ones were all detected")
        #expect(try Self.committed(topic: topic, group: "g-\(topic)") == [KafkaTopicPartition(topic: topic, partition: 0): 66])
        // Both bad lines went to the dead-letter topic, with the reason in a header.
        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": Self.broker.address, "group.id": "dlq-\(topic)"])
        defer { consumer.close() }
        try consumer.assign([(KafkaTopicPartition(topic: deadLetterTopic, partition: 0), offset: -2)])
        var dead: [KafkaMessage] = []
        _ = Self.waitFor(10) {
            if let m = try? consumer.poll(timeoutMs: 100) { dead.append(m) }
            return dead.count >= 2
        }
        #expect(dead.map { String(decoding: $0.value, as: UTF8.self) } == [lines[5], lines[10]])
        for (m, reason) in zip(dead, ["field_count", "bad_timestamp"]) {
            let headers = Dictionary(m.headers.map { ($0.name, String(decoding: $0.value, as: UTF8.self)) }, uniquingKeysWith: { a, _ in a })
            #expect(headers["cmcd-sentinel-reason"] == reason)
            #expect(headers["cmcd-sentinel-source"]?.hasPrefix("\(topic)/0/") == true)
        }
    }

    @Test func metricsAndHealthAreServed() throws {
        let topic = try Self.broker.newTopic()
        try Self.replay(topic: topic)
        let (daemon, port) = try Self.startServing(Self.daemonArguments(topic: topic, group: "g-\(topic)"))
        defer {
            kill(daemon.process.processIdentifier, SIGTERM)
            daemon.process.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(20)
        var metrics = ""
        while Date() < deadline {
            metrics = (try? Self.httpGet(port: port, path: "/metrics").body) ?? ""
            // The count is exact at once; the other series are published once a second.
            // Lag comes with librdkafka's statistics, every 5 s.
            if metrics.contains("cmcd_sentinel_records_consumed_total 64"), metrics.contains("cmcd_sentinel_live_sessions 6"),
                metrics.contains("cmcd_sentinel_consumer_lag{")
            {
                break
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(metrics.contains("cmcd_sentinel_records_consumed_total 64"))
        #expect(metrics.contains(#"cmcd_sentinel_records_skipped_total{reason="field_count"} 1"#))
        #expect(metrics.contains(#"cmcd_sentinel_findings_total{type="buffer_drop",severity="critical",status="firing"} 2"#))
        #expect(metrics.contains("cmcd_sentinel_live_sessions 6"))
        // The daemon's own process, as the standard Prometheus process metrics give it.
        func value(_ name: String) -> Double? { Self.metricValue(name, in: metrics) }
        let resident = try #require(value("process_resident_memory_bytes"))
        #expect(resident > 5_000_000 && resident < 2_000_000_000, "resident \(resident)")
        #expect(try #require(value("process_virtual_memory_bytes")) >= resident)
        let cpu = try #require(value("process_cpu_seconds_total"))
        #expect(cpu > 0 && cpu < 600, "cpu \(cpu)")
        let started = try #require(value("process_start_time_seconds"))
        let now = Date().timeIntervalSince1970
        #expect(started > now - 120 && started <= now + 1, "started \(started), now \(now)")
        let openFDs = try #require(value("process_open_fds"))
        let maxFDs = try #require(value("process_max_fds"))
        #expect(openFDs >= 3 && openFDs <= maxFDs, "open fds \(openFDs) of \(maxFDs)")
        let health = try Self.httpGet(port: port, path: "/healthz")
        #expect(health.status == 200)
        #expect(try Self.httpGet(port: port, path: "/nope").status == 404)

        // The scrape as Prometheus reads it (its official Python client's parser): every
        // family this project documents, with its type, and the values above. (Member errors
        // appear with their first key; this topic has none.)
        let parsed = try Self.parsePrometheus(metrics)
        for (family, type) in [
            ("cmcd_sentinel_records_consumed", "counter"), ("cmcd_sentinel_records_skipped", "counter"),
            ("cmcd_sentinel_dead_letters", "counter"),
            ("cmcd_sentinel_samples_late", "counter"), ("cmcd_sentinel_samples_future", "counter"),
            ("cmcd_sentinel_findings", "counter"), ("cmcd_sentinel_live_sessions", "gauge"),
            ("cmcd_sentinel_session_evictions", "counter"), ("cmcd_sentinel_consumer_lag", "gauge"),
            ("cmcd_sentinel_commits", "counter"), ("cmcd_sentinel_commit_failures", "counter"),
            ("cmcd_sentinel_kafka_errors", "counter"), ("cmcd_sentinel_commits_deferred", "counter"),
            ("cmcd_sentinel_checkpoints", "counter"), ("cmcd_sentinel_checkpoint_seconds", "counter"),
            ("cmcd_sentinel_checkpoint_bytes", "gauge"), ("cmcd_sentinel_sessions_restored", "counter"),
            ("cmcd_sentinel_alerts_writes", "counter"), ("cmcd_sentinel_alerts_write_failures", "counter"),
            ("process_cpu_seconds", "counter"), ("process_resident_memory_bytes", "gauge"),
        ] {
            #expect(parsed.contains("# \(family) \(type)"), "\(family) (\(type)) missing from the parsed scrape")
        }
        #expect(parsed.contains(#"cmcd_sentinel_findings_total{severity="critical",status="firing",type="buffer_drop"} 2.0"#))
        #expect(parsed.contains("cmcd_sentinel_records_consumed_total{} 64.0"))
        #expect(parsed.contains("cmcd_sentinel_live_sessions{} 6.0"))
        #expect(parsed.contains { $0.hasPrefix(#"cmcd_sentinel_consumer_lag{partition="0",topic="\#(topic)"}"#) }, "lag per partition")
    }

    /// Parses a scrape with Prometheus's official Python client (installed once under .tools/):
    /// `# family type` lines and `sample{labels sorted} value` lines.
    static func parsePrometheus(_ scrape: String) throws -> [String] {
        let python = try pythonVirtualenv("prometheus-client-venv", installing: "prometheus_client==0.21.1")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [packageRoot.appendingPathComponent("Tests/SentinelDaemonTests/parse_metrics.py").path]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(scrape.utf8))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw SetupFailure(description: "the scrape does not parse:\n\(scrape)") }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Every viewer of a live event starting at once: 1,500 sessions whose second request
    /// shows a slow startup, all waiting in the topic when the daemon starts. Each finding
    /// still reaches the sinks, but in batches: one alerts-table transaction per record with
    /// findings made such a storm take minutes.
    @Test func aStormOfFindingsReachesTheSinksInBatches() throws {
        let sessions = 1_500
        var lines: [String] = []
        for round in 0..<2 {
            for s in 0..<sessions {
                let ms = 1_720_015_600_000 + round * 3_000 + s
                let sid = "storm-\(s)"
                let cmcd = round == 0
                    ? "cid%3D%22live%22%2Cot%3Dm%2Csf%3Dh%2Csid%3D%22\(sid)%22%2Csu"
                    : "bl%3D4000%2Ccid%3D%22live%22%2Cot%3Dav%2Csf%3Dh%2Csid%3D%22\(sid)%22"
                lines.append("\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst())\t203.0.113.9\t200\tGET\t/live/\(round).ts\tIAD89-P1\tr\(s)\t0.1\tCMCD=\(cmcd)\t-")
            }
        }
        let (daemon, metrics) = try Self.consumeWatchingMetrics(lines) { $0.count == 2 * sessions }
        #expect(daemon.process.terminationStatus == 0)
        // A slow startup fires and resolves at the second request: two findings a session.
        let findings = daemon.output.lines
        #expect(findings.count == 2 * sessions)
        #expect(Set(findings).count == findings.count, "no finding twice")
        #expect(findings.filter { $0.contains(#""type":"startup_delay""#) && $0.contains(#""status":"resolved""#) }.count == sessions)
        let writes = Self.metricValue(#"cmcd_sentinel_sink_latency_seconds_count{sink="alerts"}"#, in: metrics).map { Int($0) }
        let alertWrites = try #require(writes, "no alerts-sink count in the metrics")
        #expect(alertWrites >= 2 && alertWrites <= sessions / 10, "\(alertWrites) alerts-table writes for \(sessions) records with findings")
    }

    // MARK: - Helpers

    /// Replays `lines` into a new topic, runs the daemon with `/metrics` until it has consumed
    /// them all and its findings satisfy `done` (60 s at most), stops it with SIGTERM, and
    /// returns it with its last scrape.
    static func consumeWatchingMetrics(
        _ lines: [String], environment: [String: String] = [:], until done: ([String]) -> Bool
    ) throws -> (Running, String) {
        let file = TestScratch.directory.appendingPathComponent("replay-\(UUID().uuidString).tsv")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let topic = try broker.newTopic()
        let replay = try run(["replay", "--brokers", broker.address, "--topic", topic, file.path])
        #expect(replay.status == 0, "\(replay.stderr)")
        let (daemon, port) = try startServing(daemonArguments(topic: topic, group: "g-\(topic)"), environment: environment)
        var metrics = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            metrics = (try? httpGet(port: port, path: "/metrics").body) ?? ""
            if metrics.contains("cmcd_sentinel_records_consumed_total \(lines.count)\n"), done(daemon.output.lines) {
                // The count is exact at once; the other series are published once a second.
                Thread.sleep(forTimeInterval: 1.3)
                metrics = (try? httpGet(port: port, path: "/metrics").body) ?? metrics
                break
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
        return (daemon, metrics)
    }

    /// The value of one series (name with its labels, as `/metrics` writes it) in a scrape.
    /// A finding line without its `details.qoe` (an object of numbers).
    static func withoutQoE(_ line: String) -> String {
        line.replacingOccurrences(of: #","qoe":\{[^{}]*\}"#, with: "", options: .regularExpression)
    }

    static func metricValue(_ series: String, in metrics: String) -> Double? {
        metrics.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.dropFirst(series.count + 1)) }
    }

    static func daemonArguments(topic: String, group: String) -> [String] {
        ["run", "--brokers", broker.address, "--topic", topic, "--group", group, "--partitions", "0,1,2,3"]
    }

    static func replay(topic: String) throws {
        let result = try run(["replay", "--brokers", broker.address, "--topic", topic, demo])
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// The offset after the last record of each non-empty partition, found by reading the
    /// topic (Tansu's watermark answers are not reliable).
    static func endOffsets(topic: String) throws -> [KafkaTopicPartition: Int64] {
        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": broker.address, "group.id": "probe-\(UUID().uuidString)"])
        defer { consumer.close() }
        try consumer.assign((Int32(0)..<4).map { (KafkaTopicPartition(topic: topic, partition: $0), offset: -2) })  // from the beginning
        var result: [KafkaTopicPartition: Int64] = [:]
        var lastMessage = Date()
        while Date().timeIntervalSince(lastMessage) < 2 {
            if let m = try consumer.poll(timeoutMs: 100) {
                lastMessage = Date()
                result[m.topicPartition] = max(result[m.topicPartition] ?? 0, m.offset + 1)
            }
        }
        return result
    }

    static func committed(topic: String, group: String) throws -> [KafkaTopicPartition: Int64] {
        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": broker.address, "group.id": group])
        defer { consumer.close() }
        let partitions = (Int32(0)..<4).map { KafkaTopicPartition(topic: topic, partition: $0) }
        return try consumer.committed(partitions).compactMapValues { $0 }
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    }

    static var binary: URL { sentinelBinary }

    static func run(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> Result {
        let running = try start(arguments, stdin: stdin, environment: environment)
        running.process.waitUntilExit()
        return Result(status: running.process.terminationStatus, stdout: running.output.text, stderr: running.errors.text)
    }

    struct Running {
        var process: Process
        var output: Collector
        var errors: Collector
    }

    static func start(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> Running {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.currentDirectoryURL = root
        // Each daemon gets an alerts table of its own unless the test names one.
        let alerts = TestScratch.directory.appendingPathComponent("it-alerts-\(UUID().uuidString).db").path
        process.environment = ProcessInfo.processInfo.environment.merging(["SENTINEL_HTTP_LISTEN": "", "SENTINEL_ALERTS_URL": "sqlite:\(alerts)"]) { _, new in new }
            .merging(environment) { _, new in new }
        let output = Collector()
        let errors = Collector()
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        // One reader thread per pipe, until end of file: a running daemon can be watched.
        for (pipe, collector) in [(out, output), (err, errors)] {
            let handle = pipe.fileHandleForReading
            Thread.detachNewThread {
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    collector.append(chunk)
                }
                collector.finish()
            }
        }
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        return Running(process: process, output: output, errors: errors)
    }

    static func httpGet(port: Int, path: String) throws -> (status: Int, body: String) {
        let result = try run(["-c", "import sys,urllib.request\ntry:\n r=urllib.request.urlopen('http://127.0.0.1:\(port)\(path)',timeout=2); print(r.status); print(r.read().decode())\nexcept urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())"], python: true)
        let lines = result.stdout.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        return (Int(lines.first ?? "") ?? 0, lines.count > 1 ? String(lines[1]) : "")
    }

    static func run(_ arguments: [String], python: Bool) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: data, as: UTF8.self), stderr: "")
    }
}

/// Collects a child's output as it arrives, so a test can watch a running daemon.
final class Collector: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var done = false
    func append(_ chunk: Data) { lock.withLock { data.append(chunk) } }
    func finish() { lock.withLock { done = true } }
    /// Everything, once the writer closed its end (waits up to 5 s for that).
    var text: String {
        for _ in 0..<250 where !lock.withLock({ done }) { Thread.sleep(forTimeInterval: 0.02) }
        return lock.withLock { String(decoding: data, as: UTF8.self) }
    }
    /// What arrived so far.
    var snapshot: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    var lines: [String] {
        let snapshot = self.snapshot
        // Complete lines only: the last one may still be arriving.
        guard let lastNewline = snapshot.lastIndex(of: "\n") else { return [] }
        return snapshot[..<lastNewline].split(separator: "\n").map(String.init)
    }
}

/// A broker on free ports: one shared by the whole test run (stopped when the process exits),
/// and one of its own for a test that takes it down (the others must not see the outage).
final class Broker: @unchecked Sendable {
    static let shared: Broker = {
        let broker = Broker()
        Broker.sharedEnvironment = broker.environment
        atexit { _ = runScript("scripts/broker/broker.sh", ["stop"], environment: Broker.sharedEnvironment) }
        return broker
    }()
    let port: Int
    var address: String { "127.0.0.1:\(port)" }
    /// What broker.sh needs to find this broker.
    let environment: [String: String]
    private var topicCounter = 0
    private let lock = NSLock()

    /// Starts a broker of the caller's own; `stop()` it.
    init() {
        port = freePort()
        environment = ["SENTINEL_BROKER_PORT": "\(port)", "SENTINEL_BROKER_UPSTREAM_PORT": "\(freePort())"]
        let status = runScript("scripts/broker/broker.sh", ["start"], environment: environment)
        precondition(status == 0, "the test broker did not start (scripts/broker/broker.sh start)")
    }

    nonisolated(unsafe) private static var sharedEnvironment: [String: String] = [:]

    func stop() { _ = runScript("scripts/broker/broker.sh", ["stop"], environment: environment) }

    /// Clients lose the broker (its relay stops) until `endOutage`.
    func startOutage() -> Bool { runScript("scripts/broker/broker.sh", ["outage-start"], environment: environment) == 0 }
    func endOutage() -> Bool { runScript("scripts/broker/broker.sh", ["outage-end"], environment: environment) == 0 }

    func newTopic(partitions: Int = 4) throws -> String {
        let name = lock.withLock {
            topicCounter += 1
            return "it-\(ProcessInfo.processInfo.processIdentifier)-\(port)-\(topicCounter)"
        }
        let status = runScript("scripts/broker/broker.sh", ["topic", name, "\(partitions)"], environment: environment)
        guard status == 0 else { throw BrokerError.topic(name) }
        return name
    }

    enum BrokerError: Error { case topic(String) }

}
