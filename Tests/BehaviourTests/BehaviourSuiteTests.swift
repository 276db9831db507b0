import CMCDDetection
import CMCDRecords
import Foundation
import SentinelTestSupport
import Testing

/// Our own behaviour suite: simulated viewers of four players over four carriers, ordinary
/// viewing and real trouble, scored against the truth of what happened to each viewer.
/// Prints precision and recall per finding type and per behaviour (figures in docs/detection.md).
@Suite(.ownThread) struct BehaviourSuiteTests {
    typealias Sim = PlayerSimulator

    /// Variants of every (behaviour, player, carrier): 12 x 4 x 4 x 5 = 960 sessions.
    static let variants = 5
    static let start: Int64 = 1_764_752_400_000

    struct Score {
        var truePositives = 0, falsePositives = 0, falseNegatives = 0, severityAgreements = 0
        var precision: Double { truePositives + falsePositives == 0 ? 1 : Double(truePositives) / Double(truePositives + falsePositives) }
        var recall: Double { truePositives + falseNegatives == 0 ? 1 : Double(truePositives) / Double(truePositives + falseNegatives) }
        var severityAgreement: Double { truePositives == 0 ? 1 : Double(severityAgreements) / Double(truePositives) }
    }

    @Test func detectorsAgreeWithWhatHappenedToTheViewers() throws {
        var random = Sim.Random(state: 0x5EED_2026)
        var sessions: [Sim.Session] = []
        var n = 0
        for variant in 0..<Self.variants {
            for behaviour in Sim.Behaviour.allCases {
                for player in Sim.Player.allCases {
                    for carrier in Sim.Carrier.allCases {
                        let id = String(format: "%08x-%04x-4%03x-a%03x-%012x", n * 2_654_435_761 & 0xFFFF_FFFF, variant, n & 0xFFF, n % 4096, n)
                        // Sessions start 0.7 s apart: the stream interleaves them as a CDN log does.
                        var session = Sim.simulate(
                            id: id, player: player, carrier: carrier, behaviour: behaviour, startMs: Self.start + Int64(n) * 700, random: &random)
                        if behaviour == .sampled, carrier != .event {
                            session.requests = session.requests.filter { _ in random.chance(0.5) }  // CloudFront at 50 %
                        }
                        session.truth.expected.merge(Self.dropTruth(session), uniquingKeysWith: { a, b in a == "critical" ? a : b })
                        sessions.append(session)
                        n += 1
                    }
                }
            }
        }

        var detected: [String: [String: String]] = [:]
        var memberErrors = 0
        for carrier in Sim.Carrier.allCases {
            let group = sessions.filter { $0.carrier == carrier }
            let (findings, statistics) = try Self.detect(group, carrier: carrier)
            memberErrors += statistics.memberErrorsTotal
            #expect(statistics.skippedTotal == 0, "\(carrier): records lost: \(statistics.skipped)")
            for finding in findings where finding.status == .firing {
                let type = finding.type.rawValue
                if detected[finding.sessionID, default: [:]][type] != "critical" {
                    detected[finding.sessionID, default: [:]][type] = finding.severity.rawValue
                }
            }
        }

        var byType: [String: Score] = [:]
        var byBehaviour: [Sim.Behaviour: (sessions: Int, falseAlarms: Int, missed: Int)] = [:]
        var falseAlarmSessions = 0
        var examples: [String] = []
        for session in sessions {
            let found = detected[session.id] ?? [:]
            var falseAlarm = false
            var missed = 0
            for type in Set(found.keys).union(session.truth.expected.keys) {
                let truth = session.truth.expected[type]
                let got = found[type]
                switch (truth, got) {
                case (let t?, let g?):
                    byType[type, default: Score()].truePositives += 1
                    if t == g { byType[type, default: Score()].severityAgreements += 1 }
                case (_?, nil):
                    byType[type, default: Score()].falseNegatives += 1
                    missed += 1
                case (nil, _?):
                    byType[type, default: Score()].falsePositives += 1
                    falseAlarm = true
                case (nil, nil): break
                }
            }
            if falseAlarm || missed > 0, examples.count < 12 {
                examples.append("\(session.behaviour.rawValue)/\(session.player.rawValue)/\(session.carrier.rawValue) \(session.id): truth \(session.truth.expected) found \(found)")
            }
            if falseAlarm { falseAlarmSessions += 1 }
            byBehaviour[session.behaviour, default: (0, 0, 0)].sessions += 1
            if falseAlarm { byBehaviour[session.behaviour, default: (0, 0, 0)].falseAlarms += 1 }
            byBehaviour[session.behaviour, default: (0, 0, 0)].missed += missed
        }

        print("behaviour suite: \(sessions.count) sessions, \(sessions.map(\.requests.count).reduce(0, +)) records, \(memberErrors) members dropped (records kept)")
        print("  finding type        TP   FP   FN  precision  recall  severity")
        for (type, s) in byType.sorted(by: { $0.key < $1.key }) {
            print("  " + type.padding(toLength: 18, withPad: " ", startingAt: 0)
                + String(format: " %4d %4d %4d     %.3f   %.3f     %.3f", s.truePositives, s.falsePositives, s.falseNegatives, s.precision, s.recall, s.severityAgreement))
        }
        print("  behaviour        sessions  with a false alarm  missed findings")
        for behaviour in Sim.Behaviour.allCases {
            let b = byBehaviour[behaviour] ?? (0, 0, 0)
            print("  " + behaviour.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %8d  %18d  %15d", b.sessions, b.falseAlarms, b.missed))
        }
        let falseAlarmShare = Double(falseAlarmSessions) / Double(sessions.count)
        print(String(format: "  sessions with a false alarm: %d of %d (%.2f%%)", falseAlarmSessions, sessions.count, falseAlarmShare * 100))
        for example in examples { print("  e.g. \(example)") }

        for (type, s) in byType {
            #expect(s.recall >= 0.99, "\(type): recall \(s.recall)")
            #expect(s.severityAgreement >= 0.98, "\(type): severity agreement \(s.severityAgreement)")
        }
        for type in ["buffer_drop", "buffer_starvation", "startup_delay", "slow_seek"] {
            #expect((byType[type]?.truePositives ?? 0) >= 20, "\(type): too few true cases to judge")
        }
        #expect(falseAlarmShare <= 0.005)
        for behaviour in Sim.Behaviour.allCases where behaviour.isOrdinary {
            #expect(byBehaviour[behaviour]?.falseAlarms == 0, "\(behaviour.rawValue) raised findings")
        }
    }

    /// What the buffer did while the viewer was watching (seeks, pauses and startup excluded),
    /// judged on the true buffer of the requests the CDN logged: a fall to half of the highest
    /// level of the last 10 s is a drop (to 30 %: critical), as an engineer reading the
    /// player's own buffer trace would call it.
    static func dropTruth(_ session: Sim.Session) -> [String: String] {
        let live = session.behaviour == .lowLatency
        let minimum = live ? 4000.0 : 1000.0
        var history: [String: [(Int64, Double)]] = [:]
        var severity: String?
        var previousPhase = Sim.Phase.starting
        for r in session.requests where ["a", "v", "av"].contains(r.objectType) {
            if r.phase == .seeking || r.phase == .paused || r.phase == .starting || r.phase == .ended {
                history.removeAll()
                previousPhase = r.phase
                continue
            }
            if previousPhase == .paused { history.removeAll() }
            previousPhase = r.phase
            let window = history[r.objectType, default: []].filter { $0.0 >= r.timeMs - 10_000 && $0.0 < r.timeMs }
            if let reference = window.map(\.1).max(), reference >= minimum {
                if r.trueBufferMs <= 0.3 * reference { severity = "critical" } else if r.trueBufferMs <= 0.5 * reference, severity == nil { severity = "warning" }
            }
            history[r.objectType, default: []].append((r.timeMs, r.trueBufferMs))
        }
        return severity.map { ["buffer_drop": $0] } ?? [:]
    }

    /// Renders a carrier's sessions as their records, in time order, and runs the detectors.
    /// The findings of `sessions` as one CDN log; with `restoreEvery`, the engine is replaced by
    /// one restored from its checkpoint after every that many records (a daemon restarting).
    static func detect(_ sessions: [Sim.Session], carrier: Sim.Carrier, restoreEvery: Int? = nil) throws -> ([Finding], ParseStatistics) {
        var parser = try parser(for: carrier)
        var engine = DetectionEngine()
        var findings: [Finding] = []
        for (position, line) in lines(sessions, carrier: carrier).enumerated() {
            parser.parse(message: line) { outcome in
                if case .sample(var sample) = outcome {
                    sample.position = Int64(position)
                    engine.process(sample, into: &findings)
                }
            }
            if let restoreEvery, position % restoreEvery == restoreEvery - 1 {
                engine = try DetectionEngine(rules: engine.rules, checkpoint: engine.checkpoint())
            }
        }
        engine.finish(into: &findings)
        return (findings, parser.statistics)
    }

    /// A carrier's records of `sessions` in time order, as the CDN logs them.
    static func lines(_ sessions: [Sim.Session], carrier: Sim.Carrier) -> [String] {
        var lines: [(Int64, String)] = []
        for session in sessions {
            for r in session.requests { lines.append((r.timeMs, render(r, carrier))) }
            if carrier == .event {
                for change in session.stateChanges {
                    lines.append((change.timeMs, "cid=\"c\",e=ps,sid=\"\(session.id)\",sta=\(sta(change.phase)),ts=\(change.timeMs),v=2"))
                }
            }
        }
        lines.sort { $0.0 < $1.0 }
        if let debug = ProcessInfo.processInfo.environment["BEHAVIOUR_DEBUG"] {
            // The records of one session, to see why the detectors and the truth differ.
            for (_, line) in lines where line.contains(debug) { print((line.removingPercentEncoding ?? line).replacingOccurrences(of: "\n", with: " | ")) }
        }
        return lines.map(\.1)
    }

    /// The parser for a carrier's records.
    static func parser(for carrier: Sim.Carrier) throws -> RecordParser {
        var configuration = RecordParser.Configuration()
        switch carrier {
        case .query, .headers: break
        case .native: configuration.fields = try CloudFrontFields(nativeFields)
        case .event: configuration.format = .cmcd
        }
        return RecordParser(configuration: configuration)
    }

    /// A daemon restored from its checkpoints finds exactly what one that never stopped finds:
    /// the same findings, ids, details and QoE, over every player, carrier and behaviour.
    @Test func restoringFromACheckpointChangesNoFinding() throws {
        var random = Sim.Random(state: 0xC4EC_2026)
        var n = 0
        var sessionsByCarrier: [Sim.Carrier: [Sim.Session]] = [:]
        for variant in 0..<2 {
            for behaviour in Sim.Behaviour.allCases {
                for player in Sim.Player.allCases {
                    for carrier in Sim.Carrier.allCases {
                        let id = String(format: "ck%06x-%04x", n, variant)
                        sessionsByCarrier[carrier, default: []].append(
                            Sim.simulate(id: id, player: player, carrier: carrier, behaviour: behaviour, startMs: Self.start + Int64(n) * 700, random: &random))
                        n += 1
                    }
                }
            }
        }
        var compared = 0
        for carrier in Sim.Carrier.allCases {
            let sessions = sessionsByCarrier[carrier] ?? []
            let (straight, _) = try Self.detect(sessions, carrier: carrier)
            for every in [1, 7, 500] {
                let (restored, _) = try Self.detect(sessions, carrier: carrier, restoreEvery: every)
                let differ = zip(restored, straight).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                #expect(
                    restored.count == straight.count && differ == nil,
                    "\(carrier), restored every \(every) records: \(restored.count) findings, \(straight.count) straight; first difference: \(differ.map { "\(restored[$0].sessionID) \(restored[$0].type) \(restored[$0].status): \(restored[$0].summary) vs \(straight[$0].summary)" } ?? "-")")
                compared += restored.count
            }
            #expect(straight.contains { $0.status == .resolved && $0.details.contains { $0.0 == "qoe" } })
        }
        #expect(compared > 300)
    }

    /// A daemon without a usable checkpoint (Kinesis, `checkpoints: false`) restarts from the
    /// committed restart position: replaying from there, it goes on as the one that never
    /// stopped would, every open episode carried on under its id, over every player, carrier
    /// and behaviour (the QoE of a resolve counts only what it read, so is left out).
    @Test func replayingFromTheRestartPositionChangesNoFinding() throws {
        var random = Sim.Random(state: 0x5EED_0026)
        var sessionsByCarrier: [Sim.Carrier: [Sim.Session]] = [:]
        var n = 0
        for behaviour in Sim.Behaviour.allCases {
            for player in Sim.Player.allCases {
                for carrier in Sim.Carrier.allCases {
                    sessionsByCarrier[carrier, default: []].append(
                        Sim.simulate(id: String(format: "rp%06x", n), player: player, carrier: carrier, behaviour: behaviour, startMs: Self.start + Int64(n) * 900, random: &random))
                    n += 1
                }
            }
        }
        func identity(_ f: Finding) -> String { "\(f.sessionID) \(f.type.rawValue) \(f.status.rawValue) \(f.severity.rawValue) \(f.id)" }
        var compared = 0
        for carrier in Sim.Carrier.allCases {
            var parser = try Self.parser(for: carrier)
            var samples: [Sample] = []
            for (position, line) in Self.lines(sessionsByCarrier[carrier] ?? [], carrier: carrier).enumerated() {
                parser.parse(message: line) { outcome in
                    if case .sample(var sample) = outcome {
                        sample.position = Int64(position)
                        samples.append(sample)
                    }
                }
            }
            for cut in stride(from: samples.count / 10, to: samples.count, by: max(1, samples.count / 10)) {
                // The daemon that never stopped: where its commit would stand at the cut.
                var straight = DetectionEngine()
                var before: [Finding] = []
                for sample in samples[..<cut] { straight.process(sample, into: &before) }
                let from = straight.restartPosition().map { position in samples.firstIndex { $0.position >= position } ?? cut } ?? cut
                var after: [Finding] = []
                for sample in samples[cut...] { straight.process(sample, into: &after) }
                // The one started after it, from the committed position.
                var restarted = DetectionEngine()
                var repeated: [Finding] = []
                for sample in samples[from..<cut] { restarted.process(sample, into: &repeated) }
                var carriedOn: [Finding] = []
                for sample in samples[cut...] { restarted.process(sample, into: &carriedOn) }
                let (want, got) = (after.map(identity), carriedOn.map(identity))
                let differ = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                #expect(
                    got == want,
                    "\(carrier), cut at \(cut) of \(samples.count), replayed from \(from): \(got.count) findings against \(want.count); first difference: \(differ.map { "\(got[$0]) vs \(want[$0])" } ?? "-")")
                compared += want.count
            }
        }
        #expect(compared > 300, "\(compared)")
    }

    static func sta(_ phase: Sim.Phase) -> String {
        switch phase {
        case .starting: "s"
        case .playing: "p"
        case .seeking: "k"
        case .stalled: "r"
        case .paused: "a"
        case .ended: "e"
        }
    }

    static let nativeFields = [
        "timestamp", "x-edge-location", "sc-status", "time-taken", "cs-uri-stem", "cmcd-session-id", "cmcd-content-id", "cmcd-object-type",
        "cmcd-buffer-length", "cmcd-buffer-starvation", "cmcd-startup", "cmcd-encoded-bitrate", "cmcd-object-duration",
        "cmcd-measured-throughput", "cmcd-playback-rate", "cmcd-stream-type", "cmcd-streaming-format", "cmcd-top-bitrate",
    ]

    /// The header each key travels in (CTA-5004's shards; unknown keys in CMCD-Request).
    static func shard(_ key: String) -> String {
        switch key {
        case "br", "d", "ot", "tb": "CMCD-Object"
        case "cid", "pr", "sf", "sid", "st", "v": "CMCD-Session"
        case "bs", "rtp": "CMCD-Status"
        default: "CMCD-Request"
        }
    }

    static func render(_ r: Sim.Request, _ carrier: Sim.Carrier) -> String {
        let seconds = String(format: "%d.%03d", r.timeMs / 1000, r.timeMs % 1000)
        let edge = "FRA56-C2"
        let stem = "/v/\(r.sessionID.prefix(4))/seg.m4s"
        func member(_ m: (key: String, value: String?)) -> String { m.value.map { "\(m.key)=\($0)" } ?? m.key }
        switch carrier {
        case .query:
            let query = "CMCD=" + encodeURIComponent(r.members.map(member).joined(separator: ","))
            return [seconds, "203.0.113.9", "200", "GET", stem, edge, "req", String(format: "%.3f", r.timeTaken), query, "-"].joined(separator: "\t")
        case .headers:
            var shards: [String: [String]] = [:]
            for m in r.members { shards[shard(m.key), default: []].append(member(m)) }
            let headers = (["Host:d1.cloudfront.net"] + shards.keys.sorted().map { "\($0):" + shards[$0]!.joined(separator: ",") })
                .map(encodeURIComponent).joined(separator: "%0A")
            return [seconds, "203.0.113.9", "200", "GET", stem, edge, "req", String(format: "%.3f", r.timeTaken), "-", headers].joined(separator: "\t")
        case .native:
            func value(_ key: String) -> String {
                guard let m = r.members.first(where: { $0.key == key }) else { return "-" }
                guard var v = m.value else { return "true" }
                if v.hasPrefix("(") { v = String(v.dropFirst().dropLast()) }
                if v.hasPrefix("\"") { v = String(v.dropFirst().dropLast()) }
                return encodeURIComponent(v)
            }
            let values: [String] = ["sid", "cid", "ot", "bl", "bs", "su", "br", "d", "mtp", "pr", "st", "sf", "tb"].map(value)
            return ([seconds, edge, "200", String(format: "%.3f", r.timeTaken), stem] + values).joined(separator: "\t")
        case .event:
            // v2 event mode: a response-received report with the state at that moment.
            var members = r.members.filter { !["su", "bs", "v", "sta"].contains($0.key) }.map { m -> (key: String, value: String?) in
                if ["bl", "br", "mtp", "tb"].contains(m.key), let v = m.value, !v.hasPrefix("(") { return (m.key, "(\(v))") }
                if m.key == "st", m.value == "l" { return (m.key, "ll") }
                return m
            }
            members.append(("e", "rr"))
            members.append(("sta", sta(r.phase)))
            members.append(("ts", "\(r.timeMs)"))
            members.append(("v", "2"))
            return members.sorted { $0.key < $1.key }.map(member).joined(separator: ",")
        }
    }

    /// JavaScript's `encodeURIComponent`, as the players use it.
    static func encodeURIComponent(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "!"), UInt8(ascii: "~"), UInt8(ascii: "*"),
                UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"):
                out.append(Character(UnicodeScalar(byte)))
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }
}
