import CMCD
import CMCDDetection
import CMCDRecords
import Foundation
import Logging
import SentinelConfig
import SentinelJSON
import SentinelTestSupport
import Testing

@testable import SentinelInflux

/// The writer against a real InfluxDB 1.6.7 (`influxd`, started by the tests) and, for what a
/// healthy InfluxDB never does (5xx, 429, stalls, the v2 API), the repository's HTTP receiver.
@Suite(.serialized, .ownThread) struct InfluxWriterTests {
    let logger = Logger(label: "test")

    func settings(url: String, database: String, _ adjust: (inout SentinelConfiguration.Influx) -> Void = { _ in }) -> SentinelConfiguration.Influx {
        var s = SentinelConfiguration.Influx()
        s.url = url
        s.database = database
        s.flushIntervalMs = 50
        adjust(&s)
        return s
    }

    /// The writer with its sender running (until it is closed).
    func running(_ writer: InfluxWriter) -> InfluxWriter {
        Task { await writer.run() }
        return writer
    }

    func sample(sid: String, cid: String?, at t: Int64, _ cmcd: String) throws -> Sample {
        Sample(time: t, sessionID: sid, contentID: cid, edgeLocation: "FRA56-P3", httpStatus: 200, timeTaken: 0.5, cmcd: try CMCDPayload(raw: cmcd))
    }

    @Test func pointsArriveWithEventTimeAndAReplayOverwritesThem() async throws {
        let server = InfluxServer.shared
        let db = try await server.newDatabase()
        for _ in 0..<2 {  // the second round is a replay of the same records
            let writer = running(InfluxWriter(configuration: settings(url: server.url, database: db) { $0.batchSize = 7 }, logger: logger))
            for i in 0..<20 {
                let s = try sample(sid: "s\(i % 3)", cid: "movie", at: 1_720_015_600_000 + Int64(i) * 1000, "bl=\(1000 + i),br=3200,ot=v")
                try writer.append { InfluxPoints.append(s, to: &$0) }
            }
            #expect(try await writer.flush(waitingUpTo: 10))
            #expect(writer.statistics.pointsWritten == 20)
            #expect(writer.statistics.batchesWritten == 3, "20 points in batches of 7")
            writer.close()
        }
        let rows = try await server.rows("SELECT count(cmcd_bl) FROM cloudfront_logs", database: db)
        #expect(rows.first?["count"] == .int(20), "a replay overwrites: \(rows)")
        let first = try await server.rows("SELECT cmcd_bl, cmcd_br FROM cloudfront_logs WHERE cmcd_sid = $sid ORDER BY time LIMIT 1", database: db, params: ["sid": "s0"])
        #expect(first.first?["time"] == .int(1_720_015_600_000))
        #expect(first.first?["cmcd_bl"] == .int(1000))
    }

    @Test func hostileStringsRoundTripAsDataAndInjectNothing() async throws {
        let server = InfluxServer.shared
        let db = try await server.newDatabase()
        let writer = running(InfluxWriter(configuration: settings(url: server.url, database: db), logger: logger))
        let hostile = [
            #"a,b=c d"#, #"quote"s and \back\slash\"#, #"x\"#, "new\nline measurement,cmcd_sid=victim cmcd_bl=1i 1", "' OR 1=1 --", "tab\there",
        ]
        for (i, sid) in hostile.enumerated() {
            let s = try sample(sid: sid, cid: sid, at: 1_720_015_600_000 + Int64(i), "bl=\(i)")
            try writer.append { InfluxPoints.append(s, to: &$0) }
        }
        #expect(try await writer.flush(waitingUpTo: 10))
        writer.close()
        let rows = try await server.rows("SELECT cmcd_bl, cmcd_sid, cmcd_cid FROM cloudfront_logs", database: db)
        #expect(rows.count == hostile.count, "one point per record, none injected: \(rows)")
        let stored = Set(rows.compactMap { if case .string(let s)? = $0["cmcd_sid"] { s } else { nil } })
        // Control characters and (in tags) backslashes cannot be stored safely: they read back as ?.
        let expected = Set(hostile.map { String($0.map { $0 == "\\" || ($0.isASCII && $0.asciiValue! < 0x20) ? "?" : $0 }) })
        #expect(stored == expected)
        // Each stored id is found by an exact, parameter-bound query, and only its own point.
        for sid in expected {
            let own = try await server.rows("SELECT cmcd_bl FROM cloudfront_logs WHERE cmcd_sid = $sid", database: db, params: ["sid": sid])
            #expect(own.count == 1, "\(sid)")
        }
        let measurements = try await server.rows("SHOW MEASUREMENTS", database: db)
        #expect(measurements.count == 1, "\(measurements)")
        let victim = try await server.rows("SELECT * FROM cloudfront_logs WHERE cmcd_sid = $sid", database: db, params: ["sid": "victim"])
        #expect(victim.isEmpty)
    }

    @Test func gzipBodiesAreAccepted() async throws {
        let server = InfluxServer.shared
        let db = try await server.newDatabase()
        let writer = running(InfluxWriter(configuration: settings(url: server.url, database: db) { $0.gzip = true }, logger: logger))
        for i in 0..<100 {
            let s = try sample(sid: "gz", cid: nil, at: 1_720_015_600_000 + Int64(i), "bl=\(i)")
            try writer.append { InfluxPoints.append(s, to: &$0) }
        }
        #expect(try await writer.flush(waitingUpTo: 10))
        writer.close()
        #expect(try await server.rows("SELECT count(cmcd_bl) FROM cloudfront_logs", database: db).first?["count"] == .int(100))
    }

    @Test func findingsAreWrittenToCmcdAnomalies() async throws {
        let server = InfluxServer.shared
        let db = try await server.newDatabase()
        let writer = running(InfluxWriter(configuration: settings(url: server.url, database: db), logger: logger))
        let finding = Finding(
            type: .bufferDrop, status: .firing, severity: .critical, sessionID: "s1", contentID: "m", edgeLocation: "FRA56-P3",
            startedAt: 1_720_015_600_000, detectedAt: 1_720_015_601_000, summary: "Buffer dropped 85.7%",
            details: [("reference_bl_ms", .int(21000)), ("drop_percent", .double(85.7))])
        try writer.append { InfluxPoints.append(finding, to: &$0) }
        #expect(try await writer.flush(waitingUpTo: 10))
        writer.close()
        let rows = try await server.rows(
            "SELECT id, drop_percent, reference_bl_ms FROM cmcd_anomalies WHERE type = 'buffer_drop' AND severity = 'critical' AND status = 'firing' GROUP BY cmcd_sid",
            database: db)
        #expect(rows.count == 1)
        #expect(rows.first?["id"] == .string(finding.id))
        #expect(rows.first?["drop_percent"] == .double(85.7))
        #expect(rows.first?["reference_bl_ms"] == .int(21000))
        #expect(rows.first?["cmcd_sid"] == .string("s1"))
        #expect(rows.first?["time"] == .int(1_720_015_601_000))
    }

    @Test func aMissingDatabaseIsAFinalFailureThatIsReported() async throws {
        let server = InfluxServer.shared
        let writer = running(InfluxWriter(configuration: settings(url: server.url, database: "no_such_db_\(UUID().uuidString.prefix(6))"), logger: logger))
        let s = try sample(sid: "s", cid: nil, at: 1_720_015_600_000, "bl=1")
        try writer.append { InfluxPoints.append(s, to: &$0) }
        await #expect(throws: InfluxWriteError.self) { try await writer.flush(waitingUpTo: 10) }
        #expect(writer.statistics.failed)
        #expect(writer.statistics.lastError?.contains("database not found") == true)
        #expect(throws: InfluxWriteError.self) { try writer.append { InfluxPoints.append(s, to: &$0) } }
        writer.close()
    }

    @Test func serverErrorsAndThrottlingAreRetriedUntilAccepted() async throws {
        let receiver = try WebhookReceiver(plan: ["503", "429", "500"], retryAfter: "0")
        defer { receiver.stop() }
        let writer = running(InfluxWriter(
            configuration: settings(url: "http://127.0.0.1:\(receiver.port)", database: "db") { $0.api = .v1 }, logger: logger))
        let s = try sample(sid: "s", cid: nil, at: 1_720_015_600_000, "bl=1")
        try writer.append { InfluxPoints.append(s, to: &$0) }
        #expect(try await writer.flush(waitingUpTo: 20))
        #expect(writer.statistics.retries == 3)
        #expect(writer.statistics.pointsWritten == 1)
        writer.close()
        let attempts = receiver.attempts
        #expect(attempts.map(\.status) == [503, 429, 500, 204])
        #expect(attempts.allSatisfy { $0.path == "/write?db=db&precision=ms" })
    }

    @Test func aWriteThatKeepsFailingEndsAsAFinalFailureAfterTheRetryBudget() async throws {
        let port = freePort()  // nothing listens there
        let writer = running(InfluxWriter(
            configuration: settings(url: "http://127.0.0.1:\(port)", database: "db") {
                $0.api = .v1
                $0.timeoutMs = 300
                $0.maxRetryMs = 1_500
            }, logger: logger))
        let s = try sample(sid: "s", cid: nil, at: 1_720_015_600_000, "bl=1")
        try writer.append { InfluxPoints.append(s, to: &$0) }
        #expect(try await writer.flush(waitingUpTo: 0.2) == false, "still retrying: not yet held, not yet failed")
        await #expect(throws: InfluxWriteError.self) { try await writer.flush(waitingUpTo: 20) }
        #expect(writer.statistics.retries >= 1)
        #expect(writer.statistics.pointsWritten == 0)
        writer.close()
    }

    @Test func theV2APISendsOrgBucketAndToken() async throws {
        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        let writer = running(InfluxWriter(
            configuration: settings(url: "http://127.0.0.1:\(receiver.port)", database: "cmcd-metrics") {
                $0.api = .v2
                $0.org = "video team"
                $0.token = "s3cr3t"
            }, logger: logger))
        let s = try sample(sid: "s", cid: nil, at: 1_720_015_600_000, "bl=1")
        try writer.append { InfluxPoints.append(s, to: &$0) }
        #expect(try await writer.flush(waitingUpTo: 10))
        writer.close()
        let attempt = try #require(receiver.attempts.first)
        #expect(attempt.path == "/api/v2/write?org=video%20team&bucket=cmcd-metrics&precision=ms")
        #expect(attempt.headers["authorization"] == "Token s3cr3t")
    }

    @Test func aFullBufferMakesTheWriterWaitForInfluxDB() async throws {
        let receiver = try WebhookReceiver(plan: ["stall"], stallSeconds: 1.5)
        defer { receiver.stop() }
        let writer = running(InfluxWriter(
            configuration: settings(url: "http://127.0.0.1:\(receiver.port)", database: "db") {
                $0.api = .v1
                $0.batchSize = 1
                $0.maxBufferedPoints = 1
            }, logger: logger))
        let s = try sample(sid: "s", cid: nil, at: 1_720_015_600_000, "bl=1")
        try writer.append { InfluxPoints.append(s, to: &$0) }  // sealed at once, then stalls in flight
        try await Task.sleep(for: .milliseconds(100))  // the sender has taken it
        let start = Date()
        try await writer.waitForRoom()  // waits until the first is written
        #expect(Date().timeIntervalSince(start) > 1.0, "waitForRoom returned while the buffer was full")
        try writer.append { InfluxPoints.append(s, to: &$0) }
        #expect(try await writer.flush(waitingUpTo: 10))
        #expect(writer.statistics.pointsWritten == 2)
        writer.close()
    }
}
