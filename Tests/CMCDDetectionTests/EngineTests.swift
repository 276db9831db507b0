import CMCDRecords
import Foundation
import SentinelJSON
import SentinelTestSupport
import Testing

@testable import CMCDDetection

struct EngineTests {
    @Test func interleavedSessionsAreIndependent() {
        let a = playing("a", buffers: [20000, 20000, 2000])
        let b = playing("b", start: t0 + 100, buffers: [20000, 20000, 19000])
        var merged = (a + b).sorted { $0.time < $1.time }
        merged.append(sample("b", at: t0 + 9000, "ot=av,bl=18000"))
        let drops = run(merged).findings.of(.bufferDrop)
        #expect(drops.map(\.sessionID) == ["a"])
    }

    @Test func outOfOrderSamplesWithinToleranceArePlacedInOrder() {
        let samples = [
            sample("s", at: t0, "ot=av,bl=9000"),
            sample("s", at: t0 + 3000, "ot=av,bl=8000"),
            sample("s", at: t0 + 1500, "ot=av,bl=20000"),  // 1.5 s behind: reordered, becomes a reference
            sample("s", at: t0 + 4000, "ot=av,bl=4000"),
        ]
        let (findings, engine) = run(samples)
        #expect(engine.statistics.reordered == 1)
        #expect(findings.of(.bufferDrop).first?.detail("reference_bl_ms") == .int(20000))
    }

    @Test func samplesOlderThanToleranceAreLateAndIgnored() {
        let samples = [
            sample("s", at: t0 + 5000, "ot=av,bl=20000"),
            sample("s", at: t0 + 2999, "ot=av,bl=0,bs"),  // 2.001 s behind
        ]
        let (findings, engine) = run(samples)
        #expect(engine.statistics.late == 1)
        #expect(findings.isEmpty)
    }

    @Test func emptyInputAndAbsurdTimesAreHarmless() {
        var engine = DetectionEngine()
        var findings: [Finding] = []
        engine.finish(into: &findings)
        engine.advance(to: .max, into: &findings)
        engine.advance(to: .min, into: &findings)
        #expect(findings.isEmpty)
        var engine2 = DetectionEngine()
        for t in [Int64.min, -1, .max, Int64(1) << 60] {
            engine2.process(sample("s", at: t, "ot=av,bl=0,bs"), into: &findings)
        }
        engine2.finish(into: &findings)
        #expect(findings.isEmpty)
        #expect(engine2.statistics.invalidTime == 4)
    }

    @Test func idleSessionsAreEvictedResolvingTheirEpisodes() {
        var samples = playing("idle", buffers: [20000, 1000])
        // Another viewer keeps the stream going, a request a minute (one far ahead alone
        // would be taken for a record dated wrongly: sessions.max_future_ms).
        for minute in 1...7 { samples.append(sample("busy", at: t0 + Int64(minute) * 60_000, "ot=av,bl=9000")) }
        let (findings, engine) = run(samples)
        #expect(engine.statistics.idleEvictions == 1)
        #expect(engine.liveSessionCount == 1)
        let resolved = findings.of(.bufferDrop).last
        #expect(resolved?.status == .resolved && resolved?.detail("resolution") == .string("session_idle"))
    }

    @Test func capacityEvictsTheLeastRecentlySeen() {
        var rules = DetectionRules()
        rules.sessions.maxLiveSessions = 2
        var engine = DetectionEngine(rules: rules)
        var findings: [Finding] = []
        engine.process(sample("a", at: t0, "ot=av,bl=9000"), into: &findings)
        engine.process(sample("b", at: t0 + 1, "ot=av,bl=9000"), into: &findings)
        engine.process(sample("a", at: t0 + 2, "ot=av,bl=9000"), into: &findings)  // b is now least recent
        engine.process(sample("c", at: t0 + 3, "ot=av,bl=9000"), into: &findings)
        #expect(engine.liveSessionCount == 2)
        #expect(engine.statistics.capacityEvictions == 1)
        // b was evicted: a new sample for it starts a new session; a is still known.
        engine.process(sample("a", at: t0 + 4, "ot=av,bl=1000"), into: &findings)
        #expect(findings.of(.bufferDrop).count == 1, "a kept its window")
        #expect(engine.statistics.sessionsStarted == 3)
    }

    /// Over many sessions seen in random order, the capacity evicts exactly the sessions a
    /// plain least-recently-seen list would (each eviction shows when its session returns
    /// and starts again).
    @Test func capacityEvictionFollowsRecency() {
        var rules = DetectionRules()
        rules.sessions.maxLiveSessions = 50
        var engine = DetectionEngine(rules: rules)
        var findings: [Finding] = []
        var recency: [String] = []  // least recent first
        var starts = 0
        var state: UInt64 = 9
        for i in 0..<5_000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            // Some sessions come back often, others rarely.
            let id = "s\((state >> 33) % (i % 3 == 0 ? 20 : 200))"
            if let k = recency.firstIndex(of: id) {
                recency.remove(at: k)
            } else {
                starts += 1
                if recency.count == 50 { recency.removeFirst() }
            }
            recency.append(id)
            engine.process(sample(id, at: t0 + Int64(i), "ot=av,bl=5000"), into: &findings)
            #expect(engine.statistics.sessionsStarted == starts, "step \(i)")
            if engine.statistics.sessionsStarted != starts { break }
        }
        #expect(engine.liveSessionCount == 50)
    }

    @Test func memoryStaysBoundedUnderManySessions() {
        var rules = DetectionRules()
        rules.sessions.maxLiveSessions = 1000
        var engine = DetectionEngine(rules: rules)
        var findings: [Finding] = []
        for i in 0..<20_000 {
            engine.process(sample("s\(i)", at: t0 + Int64(i), "ot=av,bl=5000"), into: &findings)
        }
        #expect(engine.liveSessionCount == 1000)
        #expect(engine.statistics.capacityEvictions == 19_000)
    }

    @Test func replayProducesTheSameFindingsAndIds() {
        let samples = playing("s", buffers: [20000, 1000, 15000]) + playing("t", start: t0 + 50, buffers: [3000, 0, 9000])
        let first = run(samples, finish: true).findings
        let second = run(samples, finish: true).findings
        #expect(!first.isEmpty)
        #expect(first.map(\.jsonLine) == second.map(\.jsonLine))
        #expect(Set(first.map(\.id)).count == Set(first.map { "\($0.sessionID)|\($0.type)|\($0.startedAt)" }).count)
    }

    @Test func idsDependOnSessionTypeAndStart() {
        let a = FindingID.make(sessionID: "s", type: .bufferDrop, startedAt: 1)
        #expect(a.count == 32 && a.allSatisfy(\.isHexDigit))
        #expect(a == FindingID.make(sessionID: "s", type: .bufferDrop, startedAt: 1))
        #expect(a != FindingID.make(sessionID: "s2", type: .bufferDrop, startedAt: 1))
        #expect(a != FindingID.make(sessionID: "s", type: .bufferStarvation, startedAt: 1))
        #expect(a != FindingID.make(sessionID: "s", type: .bufferDrop, startedAt: 2))
    }

    /// Ids are stored (alerts table, webhook event ids): they must not change between
    /// versions, or an upgrade would duplicate open episodes.
    @Test func idsAreStableAcrossVersions() {
        #expect(FindingID.make(sessionID: "session_md91ykdl5yrcwq371f5", type: .bufferDrop, startedAt: 1_720_015_641_207) == "600d6e72cab59e68ac32aa4ce0ed74e4")
        #expect(FindingID.make(sessionID: "s", type: .bufferStarvation, startedAt: 0) == "a4a90c34461f262b17270f0dbca62f2e")
        #expect(FindingID.make(sessionID: "", type: .startupDelay, startedAt: -42) == "5775d4358f07274294847108a74540e9")
        #expect(FindingID.make(sessionID: "ünïcode-sïd", type: .bufferDrop, startedAt: .max) == "99da67f96daedc16707e13b14b0a0815")
        #expect(FindingID.make(sessionID: "x", type: .startupDelay, startedAt: .min) == "4933c08134ce2cfa37356a0e7f4b9f7a")
        #expect(FNV1a128.hex(of: ["a", "route", "firing", "1"]) == "d841ff72b39811616b82ce02af18c0f1")
    }

    @Test func findingJSONHasTheDocumentedShape() throws {
        let hostile = playing("s", buffers: [20000, 1000]).map { s in
            var copy = s
            copy.sessionID = "s\"\n"
            return copy
        }
        let finding = try #require(run(hostile).findings.first)
        let line = finding.jsonLine
        #expect(!line.contains("\n"))
        let parsed = try JSONParser.parse(line)
        #expect(parsed.objectMembers?.map(\.key) == [
            "id", "type", "status", "severity", "session_id", "content_id", "edge_location", "started_at", "detected_at", "summary", "details",
        ])
        #expect(parsed["session_id"] == .string("s\"\n"))
        #expect(parsed["started_at"] == .string("2024-07-03T14:06:43.000Z"))
        #expect(parsed["edge_location"] == .string("FRA56-P3"))
        let noContent = run([sample("x", at: t0, "ot=av,bl=9000", cid: nil, edge: nil), sample("x", at: t0 + 1, "ot=av,bl=0", cid: nil, edge: nil)]).findings
        #expect(try JSONParser.parse(noContent[0].jsonLine)["content_id"] == .null)
    }

    @Test func findingsAreCountedByTypeSeverityAndStatus() {
        let (_, engine) = run(playing("s", buffers: [20000, 1000, 15000]))
        #expect(engine.statistics.findings[.init(type: .bufferDrop, severity: .critical, status: .firing)] == 1)
        #expect(engine.statistics.findings[.init(type: .bufferDrop, severity: .critical, status: .resolved)] == 1)
    }

    @Test func routesMatchTheDefaultPolicy() {
        let route = DetectionRules.defaultRoute
        let findings = run(playing("s", buffers: [20000, 9000, 20000, 20000, 20000, 20000, 20000, 1000, 20000])).findings.of(.bufferDrop)
        #expect(findings.summary == [
            "buffer_drop firing warning", "buffer_drop resolved warning", "buffer_drop firing critical", "buffer_drop resolved critical",
        ])
        #expect(findings.map(route.matches) == [false, false, true, true])
    }
}

struct RestartPositionTests {
    func at(_ s: Sample, _ position: Int64) -> Sample {
        var copy = s
        copy.position = position
        return copy
    }

    @Test func restartPositionCoversWhatTheStateNeeds() {
        var engine = DetectionEngine()
        var findings: [Finding] = []
        #expect(engine.restartPosition() == nil)
        // A session still starting needs its first record.
        engine.process(at(sample("a", at: t0, "ot=m,su"), 10), into: &findings)
        engine.process(at(sample("a", at: t0 + 100, "ot=av,bl=0,su"), 11), into: &findings)
        #expect(engine.restartPosition() == 10)
        // Once playing, only the lookback window is needed.
        engine.process(at(sample("a", at: t0 + 900, "ot=av,bl=4000"), 12), into: &findings)
        #expect(engine.restartPosition() == 11)
        for i in 0..<10 { engine.process(at(sample("a", at: t0 + 2000 + Int64(i) * 2000, "ot=av,bl=9000"), 20 + Int64(i)), into: &findings) }
        #expect(engine.restartPosition()! > 12, "old window entries are no longer needed")
        // An open drop pins the request its reference came from (the last 9 s one, at 29),
        // long after the window has let it go.
        engine.process(at(sample("a", at: t0 + 22_000, "ot=av,bl=1000"), 40), into: &findings)
        for i in 0..<10 { engine.process(at(sample("a", at: t0 + 24_000 + Int64(i) * 2000, "ot=av,bl=1000"), 41 + Int64(i)), into: &findings) }
        #expect(engine.restartPosition() == 29)
    }

    /// What a daemon without usable checkpoints relies on (Kinesis, `checkpoints: false`, a
    /// checkpoint of another version): a fresh engine replaying from the committed restart
    /// position goes on as the one that ran before, so every episode open at the cut is
    /// carried on under its id and resolved, not left firing for ever.
    @Test func aReplayFromTheRestartPositionCarriesEveryOpenEpisodeOn() {
        var rng = SplitMix64(seed: 26)
        for round in 0..<40 {
            let samples = ViewerStreams.random(sessions: 6, seconds: 240, using: &rng)
            var cuts = [samples.count / 4, samples.count / 2]
            for _ in 0..<3 { cuts.append(Int.random(in: 1..<samples.count, using: &rng)) }
            var before = DetectionEngine()
            var findings: [Finding] = []
            var snapshots: [(cut: Int, restart: Int64?, findings: Int)] = []
            for (i, s) in samples.enumerated() {
                if cuts.contains(i) { snapshots.append((i, before.restartPosition(), findings.count)) }
                before.process(s, into: &findings)
            }
            before.finish(into: &findings)
            func identity(_ f: Finding) -> String { "\(f.id) \(f.type.rawValue) \(f.status.rawValue) \(f.severity.rawValue)" }
            for snapshot in snapshots {
                var after = DetectionEngine()
                var repeated: [Finding] = []
                let from = Int(snapshot.restart ?? Int64(snapshot.cut))
                for s in samples[from..<snapshot.cut] { after.process(s, into: &repeated) }
                var replayed: [Finding] = []
                for s in samples[snapshot.cut...] { after.process(s, into: &replayed) }
                after.finish(into: &replayed)
                let expected = findings[snapshot.findings...].map(identity)
                let got = replayed.map(identity)
                #expect(got == expected, "round \(round), cut at \(snapshot.cut) of \(samples.count), replayed from \(from)")
                if got != expected { return }
            }
        }
    }

    @Test func restartPositionReadsWindowsInlineAndSpilled() {
        var engine = DetectionEngine()
        var findings: [Finding] = []
        // Playing, with a request every 400 ms: the lookback window outgrows its inline room.
        engine.process(at(sample("a", at: t0, "ot=av,bl=4000"), 100), into: &findings)
        for i in 1..<60 { engine.process(at(sample("a", at: t0 + Int64(i) * 400, "ot=av,bl=9000"), 100 + Int64(i)), into: &findings) }
        // The window keeps 10 s of lookback and 2 s of reorder tolerance before the newest
        // request (at 23.6 s): from the one at 11.6 s, the 29th.
        #expect(engine.restartPosition() == 129)
        // A second session with a short window (inline) whose oldest record is older.
        engine.process(at(sample("b", at: t0 + 23_000, "ot=av,bl=6000"), 50), into: &findings)
        engine.process(at(sample("b", at: t0 + 23_500, "ot=av,bl=6000"), 51), into: &findings)
        #expect(engine.restartPosition() == 50)
    }

    @Test func aSessionReplayedFromMidStreamIsNotJudgedForStartup() {
        // What a restarted daemon sees when it replays from a committed offset past the
        // session's manifest request: no startup finding, rather than a wrong one.
        let samples = [sample("s", at: t0 + 300, "ot=av,bl=0,su"), sample("s", at: t0 + 3400, "ot=av,bl=4000")]
        #expect(run(samples).findings.of(.startupDelay).isEmpty)
    }

    @Test func aSampleFromBeforeAnEpisodeNeitherResolvesNorWorsensIt() {
        // Reordered within the tolerance: 1 s older than the sample that began the episode.
        let drop = run(playing("d", buffers: [20000, 20000]) + [
            sample("d", at: t0 + 5000, "ot=av,bl=2000"), sample("d", at: t0 + 4000, "ot=av,bl=15000"),
            sample("d", at: t0 + 7000, "ot=av,bl=12000"),
        ]).findings.of(.bufferDrop)
        #expect(drop.summary == ["buffer_drop firing critical", "buffer_drop resolved critical"])
        #expect(drop.last?.detectedAt == t0 + 7000 && drop.last?.detail("duration_ms") == .int(2000))
        #expect(drop.last?.summary == "Buffer recovered to 12000 ms (reference 20000 ms) after 2.0 s")
        #expect(drop.first?.detail("reference_bl_ms") == .int(20000))

        let starvation = run(playing("s", buffers: [5000, 5000]) + [
            sample("s", at: t0 + 5000, "ot=av,bl=0,bs"), sample("s", at: t0 + 4000, "ot=av,bl=5000"),
            sample("s", at: t0 + 7000, "ot=av,bl=5000"),
        ]).findings.of(.bufferStarvation)
        #expect(starvation.summary == ["buffer_starvation firing critical", "buffer_starvation resolved critical"])
        #expect(starvation.last?.detail("duration_ms") == .int(2000))
        #expect(starvation.last?.summary == "Buffer recovered to 5000 ms after 2.0 s of starvation")
    }
}

struct SessionCapacityTests {
    @Test func aDaemonCanSetTheCapacityAndEvictTheLeastRecent() {
        var engine = DetectionEngine()
        engine.sessionCapacity = 2
        var findings: [Finding] = []
        for (i, sid) in ["a", "b", "c"].enumerated() { engine.process(sample(sid, at: t0 + Int64(i) * 100, "ot=av,bl=4000"), into: &findings) }
        #expect(engine.liveSessionCount == 2 && engine.statistics.capacityEvictions == 1)
        let evicted = [engine.evictLeastRecentlySeen(into: &findings)]
        #expect(evicted == [true] && engine.liveSessionCount == 1 && engine.statistics.capacityEvictions == 2)
        let more = [engine.evictLeastRecentlySeen(into: &findings), engine.evictLeastRecentlySeen(into: &findings)]
        #expect(more == [true, false] && engine.liveSessionCount == 0)
    }
}
