import CMCDRecords
import SentinelJSON
import SentinelYAML
import Testing

@testable import CMCDDetection

/// Cohort windows and incidents, driven synchronously through the engine as the daemon does.
struct CohortTests {
    /// A viewer on `edge` watching `cid`: a quick startup, then a segment request every 2 s
    /// with a full buffer; between `stallFrom` and `stallUntil` the buffer is empty (the first
    /// request after the stall began says `bs`, as v1 players do), and the player keeps
    /// requesting; afterwards the buffer refills.
    static func viewer(
        _ sid: String, edge: String, cid: String, start: Int64 = t0, until end: Int64, stall: Range<Int64>? = nil, status: Int = 200
    ) -> [Sample] {
        var out = [sample(sid, at: start, "ot=m,su", cid: cid, edge: edge), sample(sid, at: start + 400, "ot=av,bl=800,su", cid: cid, edge: edge)]
        var t = start + 1_000
        var saidStarved = false
        while t < end {
            var s: Sample
            if let stall, stall.contains(t) {
                s = sample(sid, at: t, saidStarved ? "ot=av,bl=0" : "ot=av,bl=0,bs", cid: cid, edge: edge)
                saidStarved = true
            } else {
                s = sample(sid, at: t, "ot=av,bl=20000,br=3000,mtp=25000", cid: cid, edge: edge)
            }
            s.httpStatus = status
            out.append(s)
            t += 2_000
        }
        return out
    }

    /// Engine and tracker over samples in time order; returns the incident findings.
    static func incidents(_ samples: [Sample], rules: DetectionRules = DetectionRules(), finish: Bool = true) -> (findings: [Finding], tracker: CohortTracker) {
        var engine = DetectionEngine(rules: rules)
        var tracker = CohortTracker(rules: rules)
        var findings: [Finding] = []
        feed(samples.sorted(by: { ($0.time, $0.sessionID) < ($1.time, $1.sessionID) }), &engine, &tracker, into: &findings)
        if finish { tracker.finish(into: &findings) }
        return (findings.of(.incident), tracker)
    }

    /// Samples, in the order given, through the engine and the tracker as a file's are.
    static func feed(_ samples: some Sequence<Sample>, _ engine: inout DetectionEngine, _ tracker: inout CohortTracker, into findings: inout [Finding]) {
        for s in samples {
            engine.process(s, into: &findings)
            tracker.observe(s, engine.lastObservation, into: &findings)
            tracker.advance(to: engine.watermark - 2_000, into: &findings)
        }
    }

    static let contents = ["news", "film", "match", "quiz"]

    /// `perEdge` viewers on each edge, spread over the contents, for four minutes; viewers
    /// for whom `stalls` says so stall from minute one to minute two.
    static func audience(edges: [String], perEdge: Int, stalls: (String, String) -> Bool) -> [Sample] {
        var samples: [Sample] = []
        for edge in edges {
            for i in 0..<perEdge {
                let cid = contents[i % contents.count]
                let offset = Int64(i * 37 % 2_000)
                samples += viewer(
                    "\(edge)-\(i)", edge: edge, cid: cid, start: t0 + offset, until: t0 + 240_000,
                    stall: stalls(edge, cid) ? (t0 + 60_000)..<(t0 + 120_000) : nil)
            }
        }
        return samples
    }

    @Test func anEdgeOutageIsOneIncidentOnTheEdgeThatResolves() throws {
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 60) { edge, _ in edge == "FRA56-C2" }
        let (found, tracker) = Self.incidents(samples)
        #expect(found.summary == ["incident firing critical", "incident resolved critical"])
        let firing = try #require(found.first)
        #expect(firing.detail("scope") == .object([("edge_location", .string("FRA56-C2"))]))
        #expect(firing.edgeLocation == "FRA56-C2" && firing.contentID == nil)
        #expect(firing.detail("rule") == .string("rebuffering"))
        // The README's worked example.
        #expect(firing.summary == "Incident rebuffering on edge_location=FRA56-C2: rebuffer ratio 1.0 above 0.02, 60 of 60 sessions affected")
        #expect(firing.detail("value") == .double(1))
        #expect(firing.detectedAt == firing.startedAt + 20_000)
        #expect(firing.detail("affected_sessions") == .int(60))
        #expect(firing.detail("total_sessions") == .int(60))
        #expect(firing.detail("explains_share") == .double(1))
        guard case .array(let top)? = firing.detail("top_sessions") else { Issue.record("no top sessions"); return }
        #expect(top.count == 5)
        // The breach began in the window of minute one; `for` (20 s) fired it two windows on.
        #expect(firing.startedAt == CohortTracker.floor(t0 + 60_000, 10_000))
        #expect(firing.detectedAt >= firing.startedAt + 20_000 && firing.detectedAt <= firing.startedAt + 30_000)
        #expect(found[1].id == firing.id, "the resolve is the same incident")
        #expect(found[1].detectedAt >= t0 + 120_000 + 60_000 - 10_000, "resolved only after resolve_after_ms without a breach")
        // Each of the four contents breached too (half its viewers are on the edge): folded
        // into the edge's incident. Their per-edge cohorts (15 viewers) are too small to judge.
        #expect(tracker.statistics.incidentsFolded == 4)
        #expect(tracker.statistics.incidentsFired == 1)
    }

    @Test func aBrokenTitleIsOneIncidentOnTheTitle() throws {
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1", "LHR3-C1"], perEdge: 60) { _, cid in cid == "match" }
        let (found, _) = Self.incidents(samples)
        #expect(found.summary == ["incident firing critical", "incident resolved critical"])
        #expect(found.first?.detail("scope") == .object([("content_id", .string("match"))]))
        #expect(found.first?.detail("affected_sessions") == .int(45))
    }

    @Test func oneTitleOnOneEdgeIsNamedByBoth() throws {
        var rules = DetectionRules()
        rules.cohorts.minSessions = 10
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 60) { edge, cid in edge == "FRA56-C2" && cid == "news" }
        let (found, _) = Self.incidents(samples, rules: rules)
        #expect(found.first?.detail("scope") == .object([("edge_location", .string("FRA56-C2")), ("content_id", .string("news"))]))
        #expect(found.summary == ["incident firing critical", "incident resolved critical"])
    }

    @Test func healthyViewersAndSmallCohortsRaiseNothing() {
        let healthy = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 60) { _, _ in false }
        let (none, tracker) = Self.incidents(healthy)
        #expect(none.isEmpty)
        #expect(tracker.statistics.windowsClosed >= 18)
        // Twenty stalled viewers are fewer than min_sessions (25): no cohort is judged.
        let few = Self.audience(edges: ["FRA56-C2"], perEdge: 20) { _, _ in true }
        #expect(Self.incidents(few).findings.isEmpty)
    }

    @Test func aBreachShorterThanForDoesNotFire() {
        var samples: [Sample] = []
        for i in 0..<40 {
            samples += Self.viewer(
                "s\(i)", edge: "FRA56-C2", cid: "news", start: t0 + Int64(i * 37), until: t0 + 120_000, stall: (t0 + 60_000)..<(t0 + 66_000))
        }
        #expect(Self.incidents(samples).findings.isEmpty)
    }

    @Test func errorsFireTheirOwnRule() {
        var samples: [Sample] = []
        for i in 0..<40 {
            samples += Self.viewer("s\(i)", edge: "FRA56-C2", cid: "news", start: t0 + Int64(i * 37), until: t0 + 60_000, status: i < 10 ? 503 : 200)
        }
        let (found, _) = Self.incidents(samples)
        #expect(found.first?.detail("rule") == .string("request-errors"))
        #expect(found.first?.detail("metric") == .string("error_share"))
    }

    @Test func idsAreDeterministicAcrossReplays() {
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 30) { edge, _ in edge == "AMS1-C1" }
        #expect(Self.incidents(samples).findings.map(\.id) == Self.incidents(samples).findings.map(\.id))
        #expect(!Self.incidents(samples).findings.isEmpty)
    }

    @Test func aDeviationFromTheBaselineFires() throws {
        var rules = DetectionRules()
        rules.cohorts.groups = [[.edgeLocation]]
        rules.cohorts.baselineWarmupWindows = 3
        var slow = CohortRules.Incident(name: "startup-regression", metric: .startupP50)
        slow.deviationSigmas = 3
        slow.forMs = 0
        slow.resolveAfterMs = 10_000
        rules.cohorts.incidents = [slow]
        // Thirty viewers start every 10 s window: in 1 s for five windows, then in 4 s.
        var samples: [Sample] = []
        for w in 0..<8 {
            let startup: Int64 = w < 5 ? 1_000 : 4_000
            for i in 0..<30 {
                let start = t0 + Int64(w) * 10_000 + Int64(i * 100)
                let sid = "w\(w)-\(i)"
                samples += [
                    sample(sid, at: start, "ot=m,su", cid: "news", edge: "FRA56-C2"),
                    sample(sid, at: start + startup - 200, "ot=av,bl=800,su", cid: "news", edge: "FRA56-C2"),
                    sample(sid, at: start + startup, "ot=av,bl=5000", cid: "news", edge: "FRA56-C2"),
                ]
            }
        }
        let (found, _) = Self.incidents(samples, rules: rules, finish: false)
        let firing = try #require(found.first)
        #expect(firing.status == .firing)
        #expect(firing.detail("threshold") == .null)
        guard case .object(let baseline)? = firing.detail("baseline") else { Issue.record("no baseline"); return }
        #expect(baseline.first { $0.key == "mean" }?.value == .double(1_000))
    }

    @Test func cohortsAreBoundedAndCounted() {
        var rules = DetectionRules()
        rules.cohorts.maxCohorts = 3
        rules.cohorts.groups = [[.contentID]]
        var samples: [Sample] = []
        for i in 0..<10 { samples += Self.viewer("s\(i)", edge: "FRA56-C2", cid: "title-\(i)", until: t0 + 5_000) }
        let (_, tracker) = Self.incidents(samples, rules: rules, finish: false)
        #expect(tracker.statistics.liveCohorts == 3)
        #expect(tracker.statistics.cohortsRefused > 0)
    }

    @Test func rulesAreParsedAndChecked() throws {
        let rules = try DetectionRules.parse(
            yaml: """
                cohorts:
                  groups: [[content_id, edge_location], [stream_type]]
                  window_ms: 5000
                  min_sessions: 50
                  incidents:
                    - name: stalls
                      metric: starving_share
                      above: 0.1
                      deviation_sigmas: 4
                      severity: warning
                """, file: "r.yaml")
        #expect(rules.cohorts.groups == [[.edgeLocation, .contentID], [.streamType]])
        #expect(rules.cohorts.windowMs == 5_000 && rules.cohorts.minSessions == 50)
        #expect(rules.cohorts.incidents.map(\.name) == ["stalls"])
        #expect(rules.cohorts.incidents[0].deviationSigmas == 4 && rules.cohorts.incidents[0].severity == .warning)
        for (bad, message) in [
            ("cohorts:\n  groups: [[pop]]", "unknown cohort dimension 'pop'"),
            ("cohorts:\n  incidents:\n    - name: x\n      metric: rebuffer_ratio", "needs 'above', 'deviation_sigmas' or both"),
            ("cohorts:\n  incidents:\n    - name: x\n      metric: joy\n      above: 1", "unknown cohort metric 'joy'"),
            ("cohorts:\n  groups: [[content_id], [content_id]]", "listed twice"),
        ] {
            #expect(throws: ValidationError.self) { try DetectionRules.parse(yaml: bad, file: "r.yaml") }
            do {
                _ = try DetectionRules.parse(yaml: bad, file: "r.yaml")
            } catch {
                #expect(error.description.contains(message), "\(error.description)")
            }
        }
        #expect(try DetectionRules.parse(yaml: "cohorts:\n  groups: []", file: "r.yaml").cohorts.enabled == false)
    }
}

extension CohortTests {
    /// A restart in the middle of an incident takes it back from the alerts table's row: it
    /// neither fires a second time nor stays open for ever, and the cohorts folded into it
    /// before the restart (each title on the edge) are not reported on their own after it,
    /// wherever in the stall the restart falls: at its start, in it, or as it ends (the
    /// stall's last seconds counted in the window after it).
    @Test(arguments: [85_000, 100_000, 111_000, 115_000, 119_000] as [Int64])
    func anIncidentTakenBackAfterARestartResolvesUnderItsId(_ restartAt: Int64) throws {
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 60) { edge, _ in edge == "FRA56-C2" }
        let (whole, _) = Self.incidents(samples)
        let firing = try #require(whole.first)
        // The first run stops in the stall; the second starts from there with the engine's
        // checkpoint and nothing but the open incident of the tracker's.
        let cut = t0 + restartAt
        let rules = DetectionRules()
        var engine = DetectionEngine(rules: rules)
        var tracker = CohortTracker(rules: rules)
        var findings: [Finding] = []
        let ordered = samples.sorted(by: { ($0.time, $0.sessionID) < ($1.time, $1.sessionID) })
        Self.feed(ordered.lazy.filter { $0.time < cut }, &engine, &tracker, into: &findings)
        #expect(findings.of(.incident).map(\.id) == [firing.id])
        let open = try #require(OpenIncident(details: .object(firing.details), startedAt: firing.startedAt))
        #expect(open.rule == "rebuffering" && open.scope.map(\.value) == ["FRA56-C2"])
        engine = try DetectionEngine(rules: rules, checkpoint: engine.checkpoint())
        var restarted = CohortTracker(rules: rules)
        var after: [Finding] = []
        #expect(restarted.restore([open], at: cut, into: &after) == 1)
        #expect(after.isEmpty)
        Self.feed(ordered.lazy.filter { $0.time >= cut }, &engine, &restarted, into: &after)
        restarted.finish(into: &after)
        #expect(after.of(.incident).summary == ["incident resolved critical"])
        #expect(after.of(.incident).first?.id == firing.id)
        // A restart with no checkpoint re-reads the stream from its start: the minute before
        // the stall does not resolve the incident taken back, so it does not fire again.
        var fromScratch = DetectionEngine(rules: rules)
        var again = CohortTracker(rules: rules)
        var reread: [Finding] = []
        #expect(again.restore([open], at: cut, into: &reread) == 1)
        Self.feed(ordered, &fromScratch, &again, into: &reread)
        again.finish(into: &reread)
        #expect(reread.of(.incident).summary == ["incident resolved critical"])
        #expect(reread.of(.incident).first?.id == firing.id)
    }

    /// An incident taken back at start into a stream that stays quiet (its edge, or all
    /// traffic, gone) resolves on empty windows as it would have without the restart.
    @Test func anIncidentTakenBackIntoAQuietStreamResolves() throws {
        let open = OpenIncident(rule: "rebuffering", scope: [(.edgeLocation, "FRA56-C2")], startedAt: t0)
        var tracker = CohortTracker(rules: DetectionRules())
        var findings: [Finding] = []
        #expect(tracker.restore([open], at: t0 + 30_000, into: &findings) == 1)
        var watermark = t0 + 30_000
        while watermark < t0 + 120_000, findings.isEmpty {
            tracker.advance(to: watermark, into: &findings)
            watermark += 1_000
        }
        #expect(findings.map(\.summary).first?.hasPrefix("Incident rebuffering on edge_location=FRA56-C2 resolved") == true, "\(findings.map(\.summary))")
        #expect(findings.map(\.id) == [FindingID.make(sessionID: "incident\u{0}rebuffering\u{0}edge_location=FRA56-C2", type: .incident, startedAt: t0)])
        // Resolve after 60 s clear, counted from the first window after the restart.
        #expect((t0 + 90_000...t0 + 101_000).contains(watermark), "\(watermark - t0)")
    }

    /// What cannot be taken back is resolved at once under its id, or its row would stay open
    /// for ever (and fold every viewer's page of its scope): an incident of a rule or cohort
    /// group no longer configured, or with cohorts turned off, and a second open incident of
    /// a cohort and rule (left by an older build).
    @Test func anOpenIncidentThatCannotBeTakenBackIsResolved() throws {
        let rules = DetectionRules()
        let gone = OpenIncident(rule: "gone", scope: [(.edgeLocation, "FRA56-C2")], startedAt: t0, id: "row-1", severity: .warning)
        let ungrouped = OpenIncident(rule: "rebuffering", scope: [(.streamType, "live")], startedAt: t0)
        let kept = OpenIncident(rule: "rebuffering", scope: [(.edgeLocation, "FRA56-C2")], startedAt: t0 + 10_000, id: "row-2")
        let twice = OpenIncident(rule: "rebuffering", scope: [(.edgeLocation, "FRA56-C2")], startedAt: t0 + 20_000, id: "row-3")
        var tracker = CohortTracker(rules: rules)
        var findings: [Finding] = []
        #expect(tracker.restore([gone, ungrouped, kept, twice], at: t0 + 60_000, into: &findings) == 1)
        #expect(findings.map(\.status) == [.resolved, .resolved, .resolved])
        #expect(findings.map(\.type) == [.incident, .incident, .incident])
        #expect(findings.map(\.id) == ["row-1", ungrouped.retired(at: 0, resolution: "", because: "").id, "row-3"])
        #expect(findings.map { $0.detail("resolution")?.stringValue } == ["not_configured", "not_configured", "duplicate"])
        #expect(findings[0].severity == .warning && findings[0].edgeLocation == "FRA56-C2" && findings[0].detectedAt == t0 + 60_000)
        #expect(findings[0].summary == "Incident gone on edge_location=FRA56-C2 resolved: its rule is no longer configured")
        #expect(tracker.statistics.findings[.init(type: .incident, severity: .warning, status: .resolved)] == 1)
        // The id an incident without its row's id resolves under is the one it fired under.
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 60) { edge, _ in edge == "FRA56-C2" }
        let firing = try #require(Self.incidents(samples).findings.first)
        let open = try #require(OpenIncident(details: .object(firing.details), startedAt: firing.startedAt))
        var off = CohortTracker(rules: try DetectionRules.parse(yaml: "cohorts:\n  groups: []", file: "r.yaml"))
        var resolved: [Finding] = []
        #expect(off.restore([open], at: t0 + 300_000, into: &resolved) == 0)
        #expect(resolved.map(\.id) == [firing.id])
    }
}

extension CohortTests {
    /// Two partitions read unevenly from a backlog (the healthy edge's to the end before the
    /// failing edge's first record), with windows closed by the slower one's event time as the
    /// daemon does: the same single incident as in order.
    @Test func aPartitionReadBehindTheOthersCountsInTheRightWindows() throws {
        let samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 60) { edge, _ in edge == "FRA56-C2" }
        let inOrder = Self.incidents(samples).findings
        let rules = DetectionRules()
        var partitions = [DetectionEngine(rules: rules), DetectionEngine(rules: rules)]
        var tracker = CohortTracker(rules: rules)
        var findings: [Finding] = []
        let ordered = samples.sorted(by: { ($0.time, $0.sessionID) < ($1.time, $1.sessionID) })
        for p in [1, 0] {
            for s in ordered where (s.edgeLocation == "FRA56-C2") == (p == 0) {
                partitions[p].process(s, into: &findings)
                tracker.observe(s, partitions[p].lastObservation, into: &findings)
                // A partition with records still to read and none read yet holds the windows.
                let marks = partitions.map(\.watermark)
                if !marks.contains(Int64.min) { tracker.advance(to: marks.min()! - 2_000, into: &findings) }
            }
        }
        tracker.finish(into: &findings)
        #expect(findings.of(.incident).map(\.jsonLine) == inOrder.map(\.jsonLine))
        #expect(tracker.statistics.lateSamples == 0)
    }

    @Test func partitionsReadInAlternateBatchesCountInTheRightWindows() throws {
        // Two partitions two minutes apart in event time, read seven records at a time each:
        // the samples hop between windows twelve apart, and each partition opens windows
        // before or after those already open.
        var samples = Self.audience(edges: ["FRA56-C2", "AMS1-C1"], perEdge: 30) { edge, _ in edge == "FRA56-C2" }
        for i in samples.indices where samples[i].edgeLocation == "AMS1-C1" { samples[i].time += 120_000 }
        let ordered = samples.sorted(by: { ($0.time, $0.sessionID) < ($1.time, $1.sessionID) })
        func windowsAndIncidents(_ partitions: [[Sample]]) -> (windows: [String], incidents: [String], late: Int) {
            let rules = DetectionRules()
            var engines = partitions.map { _ in DetectionEngine(rules: rules) }
            var tracker = CohortTracker(rules: rules)
            tracker.collectsRollups = true
            var findings: [Finding] = []
            var read = partitions.map { _ in 0 }
            while zip(read, partitions).contains(where: { $0 < $1.count }) {
                for p in partitions.indices {
                    let batch = partitions[p][read[p]..<min(read[p] + 7, partitions[p].count)]
                    for s in batch {
                        engines[p].process(s, into: &findings)
                        tracker.observe(s, engines[p].lastObservation, into: &findings)
                    }
                    read[p] += batch.count
                    // As the daemon does: the slowest partition with records left holds the windows.
                    let marks = partitions.indices.map { read[$0] < partitions[$0].count ? engines[$0].watermark : Int64.max }
                    if !marks.contains(Int64.min) { tracker.advance(to: marks.min()! - 2_000, into: &findings) }
                }
            }
            tracker.finish(into: &findings)
            let windows = tracker.takeRollups().map { "\($0.scope.map(\.value)) \($0.window.start) \($0.window.requests) \($0.window.sessions)" }
            return (windows.sorted(), findings.of(.incident).map(\.jsonLine), tracker.statistics.lateSamples)
        }
        let inOrder = windowsAndIncidents([ordered])
        let alternating = windowsAndIncidents([ordered.filter { $0.edgeLocation == "FRA56-C2" }, ordered.filter { $0.edgeLocation == "AMS1-C1" }])
        #expect(inOrder.windows.count > 40 && !inOrder.incidents.isEmpty)
        #expect(alternating.late == 0)
        // Every window holds the same requests and viewers (the first that differs, if any).
        #expect(alternating.windows.count == inOrder.windows.count)
        let differing = zip(alternating.windows, inOrder.windows).first { $0 != $1 }
        #expect(differing == nil, "read in alternate batches, then in order: \(String(describing: differing))")
        #expect(alternating.incidents == inOrder.incidents)
    }

    @Test func beyondMaxOpenWindowsTheOldestClosesWithWhatItHas() {
        var rules = DetectionRules()
        rules.cohorts.maxOpenWindows = 3
        var engine = DetectionEngine(rules: rules)
        var tracker = CohortTracker(rules: rules)
        var findings: [Finding] = []
        for s in Self.viewer("s", edge: "FRA56-C2", cid: "news", until: t0 + 60_000) {
            engine.process(s, into: &findings)
            tracker.observe(s, engine.lastObservation, into: &findings)
        }
        // Never advanced: six windows of samples, at most three open.
        #expect(tracker.statistics.windowsClosed == 3)
        let late = sample("s", at: t0 + 1_000, "ot=av,bl=20000", cid: "news", edge: "FRA56-C2")
        engine.process(late, into: &findings)
        tracker.observe(late, SessionObservation(), into: &findings)
        #expect(tracker.statistics.lateSamples == 1, "a sample for a closed window is counted as late")
    }
}

extension CohortTests {
    @Test func closedWindowsAreKeptForRollupsWhenAsked() {
        let samples = Self.audience(edges: ["FRA56-C2"], perEdge: 30) { _, _ in false }
        var engine = DetectionEngine(rules: DetectionRules())
        var tracker = CohortTracker(rules: DetectionRules())
        tracker.collectsRollups = true
        var findings: [Finding] = []
        for s in samples.sorted(by: { $0.time < $1.time }) {
            engine.process(s, into: &findings)
            tracker.observe(s, engine.lastObservation, into: &findings)
            tracker.advance(to: engine.watermark - 2_000, into: &findings)
        }
        let rollups = tracker.takeRollups()
        let edge = rollups.filter { $0.scope.map(\.dimension) == [.edgeLocation] }
        #expect(edge.count == tracker.statistics.windowsClosed)
        #expect(edge.dropFirst().allSatisfy { $0.window.sessions == 30 && $0.window.rebufferRatio == 0 }, "every viewer in every full window")
        #expect(tracker.takeRollups().isEmpty, "taken once")
    }
}
