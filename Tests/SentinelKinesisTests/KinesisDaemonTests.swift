import AsyncHTTPClient
import Foundation
import SentinelHTTP
import SentinelTestSupport
import Testing

@testable import SentinelKinesis

/// `cmcd-sentinel run` with `input.source: kinesis`, the binary as users run it, against a
/// real Kinesis and DynamoDB API (moto's server mode).
@Suite(.ownThread) final class KinesisDaemonTests {
    let http = HTTPClientOptions(timeoutMs: 10_000).makeClient()

    deinit { http.shutdown { _ in } }

    static let demo = packageRoot.appendingPathComponent("samples/demo-sessions.tsv").path

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    }

    /// Runs the binary with moto's credentials to completion.
    static func run(_ arguments: [String], stdin: String? = nil) async throws -> Output {
        let process = Process()
        process.executableURL = sentinelBinary
        process.arguments = arguments
        process.currentDirectoryURL = packageRoot
        process.environment = MotoServer.credentialsEnvironment.merging(["PATH": "/usr/bin:/bin"]) { $1 }
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try withUnblockedSignals { try process.run() }
        if let stdin {
            // Fed on a thread of its own while the output is read: neither pipe can fill up
            // and wait for the other.
            let writer = input.fileHandleForWriting
            let data = Data(stdin.utf8)
            Thread.detachNewThread {
                try? writer.write(contentsOf: data)
                try? writer.close()
            }
        }
        async let stdout = readToEnd(out.fileHandleForReading)
        async let stderr = readToEnd(err.fileHandleForReading)
        let (o, e) = await (stdout, stderr)
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// A configuration reading `stream` through moto, with its own lease table.
    static func configuration(stream: String, failoverMs: Int = 10_000, listen: String = "", sessionsSpanShards: Bool = true) throws -> String {
        let file = TestScratch.directory.appendingPathComponent("kinesis-\(UUID().uuidString).yaml")
        try """
            input:
              source: kinesis
            kinesis:
              stream: \(stream)
              endpoint: \(MotoServer.shared.endpoint)
              lease_table: leases-\(stream)
              failover_ms: \(failoverMs)
              sessions_span_shards: \(sessionsSpanShards)
            alerts:
              url: ""
            http:
              listen: "\(listen)"
            """.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    static func replay(_ stream: String, shards: Int, lines: String, keys: String = "session", rate: Int? = nil) async throws {
        let result = try await run(
            ["replay", "--to", "kinesis", "--stream", stream, "--create-shards", "\(shards)", "--partition-key", keys, "--endpoint", MotoServer.shared.endpoint]
                + (rate.map { ["--rate", "\($0)"] } ?? []) + ["-"],
            stdin: lines)
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// Offline findings, without the end-of-input resolutions a running daemon does not produce.
    /// Puts `lines` to a new stream of `shards` shards, runs the daemon on it until it idles
    /// (it must succeed) and gives its output beside what `detect` says of the same lines.
    static func readThroughKinesis(
        _ lines: String, streamPrefix: String, shards: Int, keys: String = "session", rate: Int? = nil, sessionsSpanShards: Bool
    ) async throws -> (stream: String, result: Output, expected: Set<String>) {
        let stream = "\(streamPrefix)-\(UUID().uuidString.prefix(8).lowercased())"
        try await replay(stream, shards: shards, lines: lines, keys: keys, rate: rate)
        let config = try configuration(stream: stream, sessionsSpanShards: sessionsSpanShards)
        let result = try await run(["run", "--config", config, "--exit-when-idle", "3"])
        #expect(result.status == 0, "\(result.stderr)")
        return (stream, result, try await expected(lines))
    }

    static func expected(_ lines: String) async throws -> Set<String> {
        let result = try await run(["detect", "-"], stdin: lines)
        return Set(result.lines.filter { !$0.contains(#""resolution":"end_of_input""#) })
    }

    func leases(_ stream: String) async throws -> [String: LeaseTable.Lease] {
        let credentials = AWSCredentialChain(environment: MotoServer.credentialsEnvironment, http: http)
        return try await LeaseTable(name: "leases-\(stream)", region: "us-east-1", endpoint: MotoServer.shared.endpoint, credentials: credentials, http: http)
            .leases()
    }

    @Test func findingsThroughKinesisMatchOfflineDetectionAndEveryShardIsCheckpointed() async throws {
        let lines = try String(contentsOfFile: Self.demo, encoding: .utf8)
        // Keyed by session: each shard a partition of its own.
        let (stream, result, expected) = try await Self.readThroughKinesis(lines, streamPrefix: "daemon", shards: 3, sessionsSpanShards: false)
        #expect(!expected.isEmpty)
        #expect(Set(result.lines) == expected)
        #expect(result.lines.count == expected.count, "no duplicates in a clean run")
        // A graceful stop checkpoints as far as the open state allows (no detection checkpoints
        // with Kinesis) and gives the leases up, in the KCL layout.
        let table = try await leases(stream)
        #expect(table.count == 3)
        #expect(table.values.reduce(0) { $0 + $1.position } <= Int64(lines.split(separator: "\n").count))
        #expect(table.values.allSatisfy { $0.owner == nil && $0.checkpoint != "TRIM_HORIZON" || $0.position == 0 }, "\(table)")
        try await Self.expectARestartRepeatsOnly(result.lines, stream: stream, sessionsSpanShards: false)
    }

    /// `"id":"…","type":"…","status":"…"` of each finding line: what stays the same when a
    /// restart repeats a finding (its QoE counts only what the restarted daemon read).
    static func identities(_ lines: [String]) -> Set<String> {
        Set(lines.compactMap { line in line.firstMatch(of: /"id":"[0-9a-f]+","type":"[a-z_]+","status":"[a-z]+"/).map { String($0.output) } })
    }

    /// A daemon started again on the stream reads on from the leases a graceful stop left:
    /// it carries the open episodes on, so it only repeats what `before` said (same ids and
    /// statuses), and finds nothing that was missed.
    static func expectARestartRepeatsOnly(_ before: [String], stream: String, sessionsSpanShards: Bool) async throws {
        let again = try await run(["run", "--config", try configuration(stream: stream, sessionsSpanShards: sessionsSpanShards), "--exit-when-idle", "3"])
        #expect(again.status == 0, "\(again.stderr)")
        let new = identities(again.lines).subtracting(identities(before))
        #expect(new.isEmpty, "a restart found \(new.count) findings the first daemon did not: \(new.prefix(3))")
    }

    /// A PoP outage (200 viewers, 12,000 requests) through a 4-shard stream keyed by session:
    /// the viewers' findings and the one incident, exactly as `detect` gives them.
    @Test func aPoPOutageThroughKinesisIsWhatDetectSays() async throws {
        let lines = OutageLines.cloudFront(perEdge: 100, failing: "FRA56-C2", healthy: "AMS1-C1").map(\.line).joined(separator: "\n") + "\n"
        let (_, result, expected) = try await Self.readThroughKinesis(lines, streamPrefix: "outage", shards: 4, sessionsSpanShards: false)
        #expect(expected.filter { $0.contains(#""type":"incident""#) }.count == 2, "the outage fires and resolves one incident")
        // An incident names a few of its sessions as examples, the first it met in the window:
        // which ones depends on how the shards' records interleave, so they are left out.
        func withoutExamples(_ line: String) -> String {
            line.replacing(/"top_sessions":\[[^\]]*\]/, with: #""top_sessions":[]"#)
        }
        let got = Set(result.lines.map(withoutExamples))
        let want = Set(expected.map(withoutExamples))
        #expect(got == want, "missing: \(want.subtracting(got).count), extra: \(got.subtracting(want).count)")
        #expect(result.lines.count == expected.count, "no duplicates in a clean run")
    }

    /// A deploy in the middle of a stall: the daemon stopped gracefully (SIGTERM, as
    /// `--exit-when-idle` stops) and started again carries every open episode on under its id
    /// and resolves it; none is left firing, none found again under another id.
    @Test func aRestartInTheMiddleOfAStallCarriesTheEpisodesOn() async throws {
        let all = OutageLines.cloudFront(perEdge: 20, failing: "FRA56-C2", healthy: "AMS1-C1")
        let half = all.firstIndex { $0.time >= OutageLines.t0 + 100_000 }!
        let stream = "deploy-\(UUID().uuidString.prefix(8).lowercased())"
        let config = try Self.configuration(stream: stream, sessionsSpanShards: false)
        var findings: [String] = []
        for part in [all[..<half], all[half...]] {
            try await Self.replay(stream, shards: 2, lines: part.map(\.line).joined(separator: "\n") + "\n")
            let result = try await Self.run(["run", "--config", config, "--exit-when-idle", "3"])
            #expect(result.status == 0, "\(result.stderr)")
            findings += result.lines
        }
        for type in ["buffer_drop", "buffer_starvation"] {
            let episodes = Self.identities(findings).filter { $0.contains(#""type":"\#(type)""#) }
            let firing = Set(episodes.filter { $0.hasSuffix(#""status":"firing""#) }.map { $0.dropFirst(6).prefix(32) })
            let resolved = Set(episodes.filter { $0.hasSuffix(#""status":"resolved""#) }.map { $0.dropFirst(6).prefix(32) })
            #expect(firing.count == 20, "\(type): \(firing.count) episodes for 20 stalled viewers")
            #expect(firing == resolved, "\(type): \(firing.subtracting(resolved).count) left firing")
        }
    }

    /// CloudFront's own partition keys spread each session over the shards: read as one
    /// partition, the stream gives exactly the findings `detect` gives on the same lines.
    @Test func sessionsSpreadOverTheShardsAreReadAsOne() async throws {
        let lines = try String(contentsOfFile: Self.demo, encoding: .utf8)
        // Put one at a time (as CloudFront's edges put them, as they come): Kinesis's arrival
        // times then say the order across shards.
        let (stream, result, expected) = try await Self.readThroughKinesis(
            lines, streamPrefix: "spread", shards: 4, keys: "random", rate: 10, sessionsSpanShards: true)
        #expect(Set(result.lines) == expected)
        #expect(result.lines.count == expected.count, "no duplicates in a clean run")
        let table = try await leases(stream)
        // Read as one partition, records are numbered across the shards.
        #expect(table.count == 4)
        #expect(table.values.allSatisfy { $0.owner == nil })
        #expect(table.values.map(\.position).max()! <= Int64(lines.split(separator: "\n").count))
        try await Self.expectARestartRepeatsOnly(result.lines, stream: stream, sessionsSpanShards: true)
    }

    /// A shard split in the middle of the stream, read as it happens: the children are read
    /// once the parent is read to its end, and every session's findings come out as `detect`
    /// gives them (the sessions' records are spread over the shards, as CloudFront spreads them).
    @Test func aReshardInTheMiddleOfTheStreamChangesNoFinding() async throws {
        let all = try String(contentsOfFile: Self.demo, encoding: .utf8).split(separator: "\n").map(String.init)
        let first = all.prefix(all.count / 2).joined(separator: "\n") + "\n"
        let second = all.suffix(from: all.count / 2).joined(separator: "\n") + "\n"
        let stream = "reshard-\(UUID().uuidString.prefix(8).lowercased())"
        let credentials = AWSCredentialChain(environment: MotoServer.credentialsEnvironment, http: http)
        let kinesis = try KinesisClient(region: "us-east-1", endpoint: MotoServer.shared.endpoint, credentials: credentials, http: http)
        try await kinesis.createStream(stream, shardCount: 2)
        try await kinesis.waitUntilActive(stream)
        let port = freePort()
        let daemon = try Running(config: try Self.configuration(stream: stream, failoverMs: 2_000, listen: "127.0.0.1:\(port)"), port: port, http: http)
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }

        try await Self.replay(stream, shards: 2, lines: first, keys: "random", rate: 10)
        #expect(try await waitFor(30) { await daemon.consumed() == Double(all.count / 2) })
        // Shard 0 covers the lower half of the hash keys: split it in the middle, and go on
        // once the daemon reads the children.
        try await kinesis.splitShard(stream, shard: "shardId-000000000000", newStartingHashKey: "85070591730234615865843651857942052864")
        try await kinesis.waitUntilActive(stream)
        let children = try await kinesis.listShards(stream).filter { $0.parent == "shardId-000000000000" }.map(\.id)
        #expect(children.count == 2)
        #expect(try await waitFor(30) {
            let table = (try? await leases(stream)) ?? [:]
            return children.allSatisfy { table[$0]?.owner != nil } && table["shardId-000000000000"] != nil
        })
        try await Self.replay(stream, shards: 2, lines: second, keys: "random", rate: 10)
        #expect(try await waitFor(30) { await daemon.consumed() == Double(all.count) })
        let lines = await daemon.stop()
        let expected = try await Self.expected(all.joined(separator: "\n") + "\n")
        #expect(Set(lines) == expected)
        #expect(lines.count == expected.count, "no duplicates in a clean run")
        // The parent's records are still needed by the sessions open at the stop (no detection
        // checkpoints with Kinesis): its lease ends once they no longer are, not before.
        let table = try await leases(stream)
        #expect(table["shardId-000000000000"]?.checkpoint != "TRIM_HORIZON", "\(table)")
        try await Self.expectARestartRepeatsOnly(lines, stream: stream, sessionsSpanShards: true)
    }

    /// A daemon killed (-9) in the middle of the stream loses nothing: the next one takes the
    /// leases once the failover time passed and reads on from their checkpoints.
    @Test func killedAndRestartedNothingIsLost() async throws {
        let all = try String(contentsOfFile: Self.demo, encoding: .utf8).split(separator: "\n").map(String.init)
        let first = all.prefix(all.count / 2).joined(separator: "\n") + "\n"
        let second = all.suffix(from: all.count / 2).joined(separator: "\n") + "\n"
        let stream = "kill-\(UUID().uuidString.prefix(8).lowercased())"
        let port = freePort()
        let config = try Self.configuration(stream: stream, failoverMs: 2_000, listen: "127.0.0.1:\(port)", sessionsSpanShards: false)
        let quietConfig = try Self.configuration(stream: stream, failoverMs: 2_000, sessionsSpanShards: false)
        try await Self.replay(stream, shards: 2, lines: first)

        let process = Process()
        process.executableURL = sentinelBinary
        process.arguments = ["run", "--config", config]
        process.currentDirectoryURL = packageRoot
        process.environment = MotoServer.credentialsEnvironment.merging(["PATH": "/usr/bin:/bin"]) { $1 }
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try withUnblockedSignals { try process.run() }
        // Wait until the first half is consumed (as /metrics counts it).
        var consumed = 0.0
        var scrape = ""
        for _ in 0..<300 where consumed < Double(all.count / 2) || !scrape.contains("cmcd_sentinel_kinesis_iterator_age_milliseconds{shard=") {
            try await Task.sleep(for: .milliseconds(100))
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics")
            request.method = .GET
            if let response = try? await http.execute(request, timeout: .seconds(2)), let body = try? await response.body.collect(upTo: 1 << 20) {
                scrape = String(buffer: body)
                let line = scrape.split(separator: "\n").first { $0.hasPrefix("cmcd_sentinel_records_consumed_total ") }
                consumed = line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            }
        }
        #expect(consumed == Double(all.count / 2))
        // The Kinesis metrics: leases held, and each shard's iterator age (caught up: 0).
        #expect(scrape.contains("cmcd_sentinel_kinesis_leases_held 2"), "\(scrape)")
        #expect(scrape.contains("cmcd_sentinel_kinesis_iterator_age_milliseconds{shard=\"shardId-000000000000\"} 0"), "\(scrape)")
        #expect(scrape.contains("cmcd_sentinel_kinesis_throttles_total 0"), "\(scrape)")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let before = String(decoding: await readToEnd(out.fileHandleForReading), as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(try await leases(stream).values.allSatisfy { $0.owner != nil }, "a killed daemon cannot give its leases up")

        try await Self.replay(stream, shards: 2, lines: second)
        // The next daemon waits out the failover time (2 s), then reads on from the checkpoints.
        let after = try await Self.run(["run", "--config", quietConfig, "--exit-when-idle", "6"])
        #expect(after.status == 0, "\(after.stderr)")
        let expected = try await Self.expected(all.joined(separator: "\n") + "\n")
        #expect(Set(before + after.lines).isSuperset(of: expected), "lost: \(expected.subtracting(before + after.lines))")
        #expect(Set(before + after.lines).subtracting(expected).isEmpty, "invented: \(Set(before + after.lines).subtracting(expected))")
    }

    /// A daemon started in the background, its output collected; `consumed` reads /metrics.
    final class Running: @unchecked Sendable {
        let process = Process()
        let out = Pipe()
        let port: Int
        let http: HTTPClient

        init(config: String, port: Int, http: HTTPClient) throws {
            self.port = port
            self.http = http
            process.executableURL = sentinelBinary
            process.arguments = ["run", "--config", config]
            process.currentDirectoryURL = packageRoot
            process.environment = MotoServer.credentialsEnvironment.merging(["PATH": "/usr/bin:/bin"]) { $1 }
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try withUnblockedSignals { try process.run() }
        }

        func consumed() async -> Double {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics")
            request.method = .GET
            guard let response = try? await http.execute(request, timeout: .seconds(2)), let body = try? await response.body.collect(upTo: 1 << 20) else { return 0 }
            let line = String(buffer: body).split(separator: "\n").first { $0.hasPrefix("cmcd_sentinel_records_consumed_total ") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
        }

        /// SIGTERM, then its findings.
        func stop() async -> [String] {
            if process.isRunning { process.terminate() }
            let text = String(decoding: await readToEnd(out.fileHandleForReading), as: UTF8.self)
            process.waitUntilExit()
            return text.split(separator: "\n").map(String.init)
        }
    }

    /// Waits until `condition` holds, checking every 200 ms for at most `seconds`.
    func waitFor(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return try await condition()
    }

    /// Two daemons split a 4-shard stream; a third joining takes its share from them, after
    /// which the stream goes on: no finding is lost, none is invented.
    @Test func daemonsShareTheShardsAndAThirdTakesItsShare() async throws {
        let all = try String(contentsOfFile: Self.demo, encoding: .utf8).split(separator: "\n").map(String.init)
        let first = all.prefix(all.count / 2).joined(separator: "\n") + "\n"
        let second = all.suffix(from: all.count / 2).joined(separator: "\n") + "\n"
        let stream = "share-\(UUID().uuidString.prefix(8).lowercased())"
        try await Self.replay(stream, shards: 4, lines: first)
        func owners() async throws -> [String: Int] {
            var count: [String: Int] = [:]
            // Nothing before the first daemon made the table.
            for lease in ((try? await leases(stream)) ?? [:]).values { if let owner = lease.owner { count[owner, default: 0] += 1 } }
            return count
        }
        func start() throws -> Running {
            let port = freePort()
            let config = try Self.configuration(stream: stream, failoverMs: 2_000, listen: "127.0.0.1:\(port)", sessionsSpanShards: false)
            return try Running(config: config, port: port, http: http)
        }
        let a = try start()
        let b = try start()
        var running = [a, b]
        defer { for daemon in running where daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        let split = try await waitFor(40) { try await owners().values.sorted() == [2, 2] }
        let afterTwo = try await owners()
        #expect(split, "\(afterTwo)")

        let c = try start()
        running.append(c)
        let shared = try await waitFor(40) { try await owners().values.sorted() == [1, 1, 2] }
        let afterThree = try await owners()
        #expect(shared, "\(afterThree)")
        try await Self.replay(stream, shards: 4, lines: second)
        // Every shard's lease is held, so every record is read (some twice: the shard taken
        // for balance is read again from its checkpoint by its new holder).
        #expect(try await waitFor(30) {
            var total = 0.0
            for daemon in running { total += await daemon.consumed() }
            return total >= Double(all.count)
        })
        try await Task.sleep(for: .seconds(2))
        var lines: [String] = []
        for daemon in running { lines += await daemon.stop() }
        let expected = try await Self.expected(all.joined(separator: "\n") + "\n")
        #expect(Set(lines).isSuperset(of: expected), "lost: \(expected.subtracting(lines))")
        #expect(Set(lines).subtracting(expected).isEmpty, "invented: \(Set(lines).subtracting(expected))")
    }
}
