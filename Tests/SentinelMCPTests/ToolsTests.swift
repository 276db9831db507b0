import CMCD
import CMCDDetection
import CMCDRecords
import Foundation
import Logging
import MCP
import SentinelAlerts
import SentinelConfig
import SentinelInflux
import SentinelJSON
import SentinelTestSupport
import Testing

@testable import SentinelMCP

/// Seeded history (a real influxd) and anomalies (an SQLite alerts table), served by the MCP
/// server and queried by the SDK's client over its in-memory transport.
final class Fixture: @unchecked Sendable {
    let tools: SentinelTools
    let client: Client
    let server: Server
    let store: AlertStore
    let now = AlertStore.nowMs()
    static let hostile = "x' OR 1=1 --"
    var findings: [Finding] = []
    let database: String
    let alertsPath: String

    init(allowWrites: Bool = false) async throws {
        let influx = InfluxServer.shared
        var settings = SentinelConfiguration.Influx()
        settings.url = influx.url
        database = try await influx.newDatabase()
        settings.database = database
        settings.flushIntervalMs = 50
        let logger = Logger(label: "test")
        // History: a troubled session, a healthy one, and one with a hostile id; all within the last hour.
        let t0 = now - 30 * 60_000
        var samples: [Sample] = []
        func add(_ sid: String, _ t: Int64, _ cmcd: String, cid: String = "movie-1") throws {
            samples.append(Sample(time: t, sessionID: sid, contentID: cid, edgeLocation: "FRA56-P3", cmcd: try CMCDPayload(raw: cmcd)))
        }
        try add("troubled", t0, "ot=m,su,br=9999")
        try add("troubled", t0 + 3_400, "ot=v,bl=21000,br=3000")  // slow start: 3.4 s
        try add("troubled", t0 + 5_400, "ot=v,bl=21000,br=3000")
        try add("troubled", t0 + 7_400, "ot=v,bl=3000,br=3000")  // drop 85.7%
        try add("troubled", t0 + 9_400, "ot=v,bl=0,bs,br=3000")  // starved
        try add("troubled", t0 + 11_400, "ot=v,bl=12000,br=3000")
        try add("healthy", t0 + 1_000, "ot=m,su", cid: "movie-2")
        try add("healthy", t0 + 1_500, "ot=av,bl=8000,br=5000", cid: "movie-2")
        try add("healthy", t0 + 3_500, "ot=av,bl=9000,br=5000", cid: "movie-2")
        try add(Self.hostile, t0 + 2_000, "ot=v,bl=100,br=1000", cid: "evil")
        let writer = InfluxWriter(configuration: settings, logger: logger)
        let sender = Task { await writer.run() }
        for s in samples { try writer.append { InfluxPoints.append(s, to: &$0) } }
        let flushed = try await writer.flush(waitingUpTo: 10)
        precondition(flushed, "the seed history did not reach InfluxDB")
        writer.close()
        await sender.value

        // Anomalies: what the daemon found for those sessions, and an old one.
        var engine = DetectionEngine(rules: DetectionRules())
        for s in samples.sorted(by: { $0.time < $1.time }) { engine.process(s, into: &findings) }
        let old = Finding(
            type: .bufferDrop, status: .firing, severity: .warning, sessionID: "yesterday", contentID: "movie-1", edgeLocation: "IAD89-P1",
            startedAt: now - 2 * 3_600_000, detectedAt: now - 2 * 3_600_000, summary: "old", details: [("drop_percent", .double(55))])
        alertsPath = TestScratch.directory.appendingPathComponent("mcp-\(UUID().uuidString).db").path
        store = try await AlertStore.open(url: "sqlite:\(alertsPath)", logger: logger)
        let drop = findings.first { $0.type == .bufferDrop }!
        try await store.record(
            findings + [old],
            notifications: [OutboxEntry(id: "evt_1", alertID: drop.id, route: "severe-buffer-drops", endpoint: "default", kind: .firing, payload: "{}")])
        // An incident on the edge of those sessions, and a silence an operator set for it.
        var incident = Finding(
            type: .incident, status: .firing, severity: .critical, sessionID: "", contentID: nil, edgeLocation: drop.edgeLocation,
            startedAt: now - 3_600_000, detectedAt: now - 60_000, summary: "Incident rebuffering on edge_location=\(drop.edgeLocation ?? "")",
            details: [("rule", .string("rebuffering")), ("scope", .object([("edge_location", .string(drop.edgeLocation ?? ""))]))])
        incident.id = "0123456789abcdef0123456789abcdef"
        findings.append(incident)
        try await store.record([incident], notifications: [])
        try await store.addSilence(
            try Silence(
                matchers: ["type": "incident"], startsAt: now - 1_000, endsAt: now + 3_600_000, createdBy: "ops", comment: "failover", createdAt: now - 1_000))

        tools = SentinelTools(influx: InfluxReader(configuration: settings), store: store, rules: DetectionRules(), allowWrites: allowWrites)
        server = await SentinelMCPServer.make(tools: tools, version: "test").0
        let (clientTransport, serverTransport) = await InMemoryTransport.createConnectedPair()
        try await server.start(transport: serverTransport)
        client = Client(name: "tests", version: "1")
        _ = try await client.connect(transport: clientTransport)
    }

    /// Calls a tool through the MCP client; returns the structured result and the error flag.
    func call(_ name: String, _ arguments: [String: Value] = [:]) async throws -> (result: JSONValue, isError: Bool, text: String) {
        let context: RequestContext<CallTool.Result> = try await client.callTool(name: name, arguments: arguments)
        let result = try await context.value
        let data = try JSONEncoder().encode(result.structuredContent ?? .null)
        let json = try JSONParser.parse(String(decoding: data, as: UTF8.self))
        let text = result.content.compactMap { if case .text(let t, _, _) = $0 { t } else { nil } }.joined()
        return (json, result.isError ?? false, text)
    }

    /// A configuration file for `cmcd-sentinel mcp` reading this fixture's data.
    func configFile() throws -> String {
        let path = TestScratch.directory.appendingPathComponent("mcp-\(UUID().uuidString).yaml").path
        try """
        influx: {url: "\(InfluxServer.shared.url)", database: \(database)}
        alerts: {url: "sqlite:\(alertsPath)"}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func close() async {
        await client.disconnect()
        await server.stop()
        await tools.close()
    }
}

@Suite(.serialized, .ownThread) struct ToolsTests {
    @Test func theToolListHasFourteenReadOnlyToolsWithInputAndOutputSchemas() async throws {
        let f = try await Fixture()
        let (tools, _) = try await f.client.listTools()
        #expect(
            Set(tools.map(\.name)) == [
                "get_average_bitrate", "get_session_details", "analyze_buffer_events", "identify_playback_errors", "list_session_and_content_ids",
                "list_recent_anomalies", "get_anomaly", "get_session_timeline", "anomaly_summary", "get_detection_rules",
                "list_incidents", "get_incident", "list_silences", "get_session_chart",
            ])
        for tool in tools {
            #expect(tool.annotations.readOnlyHint == true, "\(tool.name)")
            guard case .object(let output)? = tool.outputSchema, case .object(let then)? = output["then"], case .array(let required)? = then["required"] else {
                Issue.record("\(tool.name) has no output schema")
                continue
            }
            #expect(!required.isEmpty, "\(tool.name): a successful result names its members")
            #expect(tool.description?.isEmpty == false)
            guard case .object(let schema) = tool.inputSchema, case .object(let properties)? = schema["properties"] else {
                Issue.record("\(tool.name) has no input schema")
                continue
            }
            for (name, property) in properties {
                guard case .object(let p) = property, case .string(let d)? = p["description"] else {
                    Issue.record("\(tool.name).\(name) has no description")
                    continue
                }
                #expect(!d.isEmpty)
            }
        }
        await f.close()
    }

    @Test func averageBitrateCountsVideoAndMuxedSegmentsOnly() async throws {
        let f = try await Fixture()
        let all = try await f.call("get_average_bitrate", ["time_range": "-1h"])
        #expect(!all.isError, "\(all.text)")
        // 5 video segments at 3000, 2 muxed at 5000, 1 at 1000; the 9999 of a manifest is left out.
        let expected = (5.0 * 3000 + 2 * 5000 + 1000) / 8  // 3250
        #expect(all.result["average_bitrate_kbps"]?.number == expected)
        #expect(all.result["segments"] == .int(8))
        let one = try await f.call("get_average_bitrate", ["time_range": "-1h", "cmcd_sid": "healthy"])
        #expect(one.result["average_bitrate_kbps"]?.number == 5000)
        #expect(one.result["cmcd_sid"] == .string("healthy"))
        let content = try await f.call("get_average_bitrate", ["cmcd_cid": "movie-1"])
        #expect(content.result["average_bitrate_kbps"]?.number == 3000)
        await f.close()
    }

    @Test func sessionDetailsHaveRealTimesAndPages() async throws {
        let f = try await Fixture()
        let t0 = f.now - 30 * 60_000
        let page1 = try await f.call("get_session_details", ["cmcd_sid": "troubled", "time_range": "-1h", "limit": 4])
        #expect(!page1.isError, "\(page1.text)")
        let data = page1.result["session_data"]
        #expect(data?["start_time"] == .string(RFC3339.format(milliseconds: t0)))
        #expect(data?["end_time"] == .string(RFC3339.format(milliseconds: t0 + 11_400)))
        #expect(data?["requests"] == .int(6))
        // The session's QoE, from its stored requests through the detectors.
        let qoe = data?["qoe"]
        #expect(qoe?["startup_ms"] == .int(3400) && qoe?["rebuffer_count"] == .int(1) && qoe?["rebuffer_ms"] == .int(2000), "\(String(describing: qoe))")
        #expect(qoe?["watch_ms"] == .int(11_400) && qoe?["seek_count"] == .int(0))
        guard case .array(let points)? = data?["points"] else { throw BadArgument("no points") }
        #expect(points.count == 4)
        #expect(page1.result["truncated"] == .bool(true))
        guard case .string(let cursor)? = page1.result["next_cursor"] else { throw BadArgument("no cursor") }
        let page2 = try await f.call("get_session_details", ["cmcd_sid": "troubled", "time_range": "-1h", "limit": 4, "cursor": .string(cursor)])
        guard case .array(let rest)? = page2.result["session_data"]?["points"] else { throw BadArgument("no points") }
        #expect(rest.count == 2)
        #expect(page2.result["truncated"] == .bool(false))
        #expect(rest.last?["cmcd_bl"] == .int(12000))
        let missing = try await f.call("get_session_details", ["cmcd_sid": "nobody"])
        #expect(missing.result["status"] == .string("not_found"))
        await f.close()
    }

    @Test func bufferEventsNameTheirRealSessions() async throws {
        let f = try await Fixture()
        let r = try await f.call("analyze_buffer_events", ["time_range": "-1h", "threshold_ms": 500])
        #expect(r.result["total_buffer_events"] == .int(8))
        #expect(r.result["low_buffer_events"] == .int(2))
        guard case .array(let details)? = r.result["low_buffer_events_details"] else { throw BadArgument("no details") }
        #expect(Set(details.compactMap { $0["cmcd_sid"] }) == [.string(Fixture.hostile), .string("troubled")])
        await f.close()
    }

    @Test func playbackErrorsUseTheDaemonsDetectors() async throws {
        let f = try await Fixture()
        let r = try await f.call("identify_playback_errors", ["time_range": "-1h", "cmcd_sid": "troubled"])
        #expect(!r.isError, "\(r.text)")
        guard case .array(let errors)? = r.result["errors"] else { throw BadArgument("no errors") }
        let kinds = Set(errors.compactMap { e -> String? in
            guard case .string(let t)? = e["type"], case .string(let s)? = e["severity"] else { return nil }
            return "\(t) \(s)"
        })
        let expected = Set(f.findings.filter { $0.sessionID == "troubled" }.map { "\($0.type.rawValue) \($0.severity.rawValue)" })
        #expect(kinds.isSuperset(of: ["buffer_drop critical", "startup_delay warning"]), "\(kinds)")
        #expect(kinds.contains { $0.hasPrefix("buffer_starvation") })
        #expect(kinds.isSubset(of: expected.union(kinds.filter { k in expected.contains { $0.hasPrefix(k.split(separator: " ")[0]) } })))
        #expect(errors.allSatisfy { $0["cmcd_sid"] == .string("troubled") })
        await f.close()
    }

    @Test func idsAreListedAndPaged() async throws {
        let f = try await Fixture()
        let r = try await f.call("list_session_and_content_ids", ["time_range": "-1h"])
        let sids = Set(r.result["cmcd_sids"]?.arrayElements ?? [])
        #expect(sids == [.string("healthy"), .string("troubled"), .string(Fixture.hostile)])
        #expect(r.result["session_count"] == .int(3))
        #expect(r.result["content_count"] == .int(3))
        let page = try await f.call("list_session_and_content_ids", ["time_range": "-1h", "limit": 2])
        #expect(page.result["truncated"] == .bool(true))
        await f.close()
    }

    @Test func recentAnomaliesAreNewestFirstAndFiltered() async throws {
        let f = try await Fixture()
        let r = try await f.call("list_recent_anomalies", [:])
        guard case .array(let items)? = r.result["anomalies"] else { throw BadArgument("none") }
        let ids = Set(f.findings.map(\.id))
        #expect(Set(items.compactMap { if case .string(let s)? = $0["id"] { s } else { nil } }) == ids, "the 2-hour-old one is outside -1h")
        let times = items.compactMap { if case .string(let s)? = $0["detected_at"] { s } else { nil } }
        #expect(times == times.sorted(by: >))
        let drops = try await f.call("list_recent_anomalies", ["type": "buffer_drop", "severity": "critical"])
        guard case .array(let d)? = drops.result["anomalies"] else { throw BadArgument("none") }
        #expect(d.count == 1 && d[0]["session_id"] == .string("troubled"))
        let older = try await f.call("list_recent_anomalies", ["since": "-3h", "edge_location": "IAD89-P1"])
        guard case .array(let o)? = older.result["anomalies"] else { throw BadArgument("none") }
        #expect(o.count == 1 && o[0]["session_id"] == .string("yesterday"))
        await f.close()
    }

    @Test func oneAnomalyWithItsNotifications() async throws {
        let f = try await Fixture()
        let drop = f.findings.first { $0.type == .bufferDrop }!
        let r = try await f.call("get_anomaly", ["id": .string(drop.id)])
        #expect(r.result["anomaly"]?["id"] == .string(drop.id))
        #expect(r.result["anomaly"]?["details"]?["reference_bl_ms"] == .int(21000))
        guard case .array(let n)? = r.result["notifications"] else { throw BadArgument("none") }
        // The fixture's incident on the drop's edge folded its page before it was sent.
        #expect(n.count == 1 && n[0]["state"] == .string("folded") && n[0]["event_id"] == .string("evt_1"))
        #expect(n.first?["last_error"] == .string("folded into incident 0123456789abcdef0123456789abcdef"))
        #expect(try await f.call("get_anomaly", ["id": "0000"]).result["status"] == .string("not_found"))
        await f.close()
    }

    @Test func aSessionTimelineMixesRequestsAndFindingsInTimeOrder() async throws {
        let f = try await Fixture()
        let r = try await f.call("get_session_timeline", ["cmcd_sid": "troubled", "time_range": "-1h"])
        guard case .array(let events)? = r.result["events"] else { throw BadArgument("none") }
        let kinds = events.compactMap { if case .string(let k)? = $0["kind"] { k } else { nil } }
        #expect(kinds.filter { $0 == "request" }.count == 6)
        #expect(r.result["qoe"]?["startup_ms"] == .int(3400) && r.result["qoe"]?["rebuffer_count"] == .int(1))
        #expect(kinds.filter { $0 == "finding" }.count == Set(f.findings.filter { $0.sessionID == "troubled" }.map(\.id)).count)
        let times = events.compactMap { if case .string(let t)? = $0["time"] { t } else { nil } }
        #expect(times == times.sorted())
        await f.close()
    }

    @Test func theSummaryGroupsAndNamesTheWorstSessions() async throws {
        let f = try await Fixture()
        let r = try await f.call("anomaly_summary", ["time_range": "-3h", "group_by": "edge_location"])
        #expect(r.result["total_anomalies"] == .int(Int64(Set(f.findings.map(\.id)).count + 1)))
        guard case .array(let groups)? = r.result["groups"], case .array(let worst)? = r.result["worst_sessions"] else { throw BadArgument("none") }
        #expect(Set(groups.compactMap { $0["edge_location"] }) == [.string("FRA56-P3"), .string("IAD89-P1")])
        #expect(worst.first?["cmcd_sid"] == .string("troubled"))
        await f.close()
    }

    @Test func theRulesInForceAreReported() async throws {
        let f = try await Fixture()
        let r = try await f.call("get_detection_rules")
        #expect(r.result["buffer_drop"]?["critical_drop_ratio"]?.number == 0.7)
        #expect(r.result["startup_delay"]?["critical_ms"] == .int(5000))
        #expect(r.result["routes"]?.arrayElements?.first?["min_drop_percent"]?.number == 70)
        await f.close()
    }

    @Test(arguments: [
        ("get_average_bitrate", ["time_range": Value.string("-1y")], "time_range"),
        ("get_average_bitrate", ["time_range": Value.string("1h; DROP DATABASE x")], "time_range"),
        ("get_average_bitrate", ["time_range": Value.string("-9999d")], "90 days"),
        ("get_average_bitrate", ["bogus": Value.string("x")], "unknown argument"),
        ("get_session_details", [:], "cmcd_sid is required"),
        ("get_session_details", ["cmcd_sid": Value.int(5)], "must be a string"),
        ("get_session_details", ["cmcd_sid": Value.string("a"), "limit": Value.int(0)], "limit"),
        ("get_session_details", ["cmcd_sid": Value.string("a"), "limit": Value.int(5000)], "limit"),
        ("get_session_details", ["cmcd_sid": Value.string("a"), "cursor": Value.string("garbage")], "cursor"),
        ("analyze_buffer_events", ["threshold_ms": Value.string("lots")], "threshold_ms"),
        ("list_recent_anomalies", ["type": Value.string("everything")], "type"),
        ("list_recent_anomalies", ["cmcd_sid": Value.string("a\nb")], "control characters"),
        ("list_recent_anomalies", ["cmcd_sid": Value.string(String(repeating: "x", count: 10_000))], "longer than"),
        ("anomaly_summary", ["group_by": Value.string("session")], "group_by"),
        ("identify_playback_errors", ["time_range": Value.string("yesterday")], "time_range"),
        ("list_session_and_content_ids", ["limit": Value.double(2.5)], "whole number"),
        ("get_anomaly", [:], "id is required"),
        ("get_session_timeline", ["time_range": Value.string("-1h")], "cmcd_sid is required"),
        ("get_detection_rules", ["verbose": Value.bool(true)], "unknown argument"),
        ("no_such_tool", [:], "no tool"),
    ])
    func badArgumentsAreToolErrorsWithTheReason(_ name: String, _ arguments: [String: Value], _ reason: String) async throws {
        let f = try await Fixture()
        let r = try await f.call(name, arguments)
        #expect(r.isError)
        #expect(r.text.contains(reason), "\(r.text)")
        #expect(r.result["status"] == .string("error"))
        await f.close()
    }

    @Test func injectionAttemptsFindNothingButTheirOwnRows() async throws {
        let f = try await Fixture()
        let attempts = [
            "' OR 1=1 --", "troubled' OR cmcd_sid =~ /.*/ --", "\" OR \"\"=\"", "x -- comment", "troubled/*", "'; DROP MEASUREMENT cloudfront_logs; --",
            "troubled\\", "$sid",
        ]
        for sid in attempts {
            for tool in ["get_session_details", "get_session_timeline"] {
                let r = try await f.call(tool, ["cmcd_sid": .string(sid), "time_range": "-1h"])
                #expect(!JSONWriter.string(r.result).contains("\"troubled\""), "\(tool) \(sid) leaked another session")
            }
            let avg = try await f.call("get_average_bitrate", ["cmcd_sid": .string(sid), "time_range": "-1h"])
            #expect(avg.result["segments"] == .int(0), "\(sid): \(avg.text)")
            let anomalies = try await f.call("list_recent_anomalies", ["cmcd_sid": .string(sid)])
            #expect(anomalies.result["anomalies"] == .array([]), "\(sid)")
        }
        // The hostile id itself is data: its own row, and only that, comes back.
        let own = try await f.call("get_session_details", ["cmcd_sid": .string(Fixture.hostile), "time_range": "-1h"])
        #expect(own.result["session_data"]?["requests"] == .int(1))
        // The measurement is still there.
        #expect(try await f.call("get_average_bitrate", ["time_range": "-1h"]).result["segments"] == .int(8))
        await f.close()
    }

    /// Every string argument of every tool, given hostile values: an error, or an answer about
    /// nothing (no other session's data, no other content, no other anomaly).
    @Test func everyStringArgumentResistsInjection() async throws {
        let f = try await Fixture()
        let hostile = [
            "' OR 1=1 --", "\" OR \"1\"=\"1", "x\nSELECT * FROM cloudfront_logs", "troubled -- comment", "troubled /* c */", "/.*/",
            String(repeating: "A", count: 5_000), "'; DROP MEASUREMENT cloudfront_logs; --",
        ]
        for (tool, argument) in [
            ("get_average_bitrate", "cmcd_sid"), ("get_average_bitrate", "cmcd_cid"), ("get_average_bitrate", "time_range"),
            ("get_session_details", "cmcd_sid"), ("analyze_buffer_events", "cmcd_sid"), ("identify_playback_errors", "cmcd_sid"),
            ("list_session_and_content_ids", "time_range"), ("list_session_and_content_ids", "cursor"), ("list_recent_anomalies", "cmcd_sid"),
            ("list_recent_anomalies", "cmcd_cid"), ("list_recent_anomalies", "edge_location"), ("list_recent_anomalies", "type"),
            ("list_recent_anomalies", "since"), ("get_anomaly", "id"), ("get_session_timeline", "cmcd_sid"), ("anomaly_summary", "group_by"),
        ] {
            for value in hostile {
                var arguments: [String: Value] = [argument: .string(value)]
                if argument != "time_range", ["get_average_bitrate", "get_session_details", "analyze_buffer_events", "identify_playback_errors"].contains(tool) {
                    arguments["time_range"] = "-1h"
                }
                let r = try await f.call(tool, arguments)
                if r.isError { continue }
                let text = JSONWriter.string(r.result)
                for other in ["\"troubled\"", "\"healthy\"", "movie-1", "movie-2", "FRA56-P3"] {
                    #expect(!text.contains(other), "\(tool) \(argument)=\(value.prefix(40)) answered with \(other)")
                }
            }
        }
        #expect(try await f.call("get_average_bitrate", ["time_range": "-1h"]).result["segments"] == .int(8), "nothing was dropped")
        await f.close()
    }

    @Test func anUnreachableInfluxDBIsAToolErrorNotSuccess() async throws {
        var settings = SentinelConfiguration.Influx()
        settings.url = "http://127.0.0.1:\(freePort())"
        settings.timeoutMs = 1_000
        let tools = SentinelTools(influx: InfluxReader(configuration: settings), store: nil, rules: DetectionRules())
        let r = await tools.call("get_average_bitrate", arguments: [:])
        #expect(r.isError == true)
        guard case .text(let text, _, _)? = r.content.first else { throw BadArgument("no text") }
        #expect(text.contains("unreachable"))
        let noStore = await tools.call("list_recent_anomalies", arguments: [:])
        #expect(noStore.isError == true)
        await tools.close()
    }
}

extension JSONValue {
    /// A number whichever way JSON wrote it (70.0 reads back as 70).
    var number: Double? {
        switch self {
        case .int(let n): Double(n)
        case .double(let d): d
        default: nil
        }
    }

    var arrayElements: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
}

extension ToolsTests {
    @Test func incidentsTheViewersInsideThemAndSilences() async throws {
        let f = try await Fixture()
        let incidentID = "0123456789abcdef0123456789abcdef"
        let listed = try await f.call("list_incidents", ["status": "firing"])
        #expect(listed.result["incidents"]?.arrayElements?.map { $0["id"] } == [.string(incidentID)])
        #expect(listed.result["incidents"]?.arrayElements?.first?["session_id"] == .null)
        #expect(listed.text.contains("1 incidents in the last 24h, 1 still firing"), "\(listed.text)")
        let one = try await f.call("get_incident", ["id": .string(incidentID)])
        #expect(one.result["incident"]?["details"]?["rule"] == .string("rebuffering"))
        let inside = one.result["viewer_findings"]?.objectMembers ?? []
        #expect(inside.contains { $0.key == "buffer_drop" }, "the seeded drop lies on the incident's edge: \(inside)")
        #expect(one.result["hardest_hit_sessions"]?.arrayElements?.isEmpty == false)
        let drop = f.findings.first { $0.type == .bufferDrop }!
        #expect(try await f.call("get_incident", ["id": .string(drop.id)]).result["status"] == .string("not_found"), "a viewer's finding is no incident")
        let silences = try await f.call("list_silences")
        #expect(silences.result["silences"]?.arrayElements?.first?["matchers"] == .object([("type", .string("incident"))]))
        #expect(silences.result["silences"]?.arrayElements?.first?["state"] == .string("active"))
        #expect(try await f.call("list_silences", ["all": "maybe"]).isError)
        #expect(try await f.call("list_incidents", ["edge_location": .string(Fixture.hostile)]).result["incidents"]?.arrayElements?.isEmpty == true)
        await f.close()
    }
}

extension ToolsTests {
    /// Silences can be made and ended through MCP only when the server allows writes.
    @Test func silencesAreWrittenOnlyWhenWritesAreAllowed() async throws {
        let readOnly = try await Fixture()
        let (offered, _) = try await readOnly.client.listTools()
        #expect(!offered.contains { $0.name == "create_silence" || $0.name == "expire_silence" })
        #expect(try await readOnly.call("create_silence", ["duration": "1h", "created_by": "bot"]).isError)
        await readOnly.close()

        let f = try await Fixture(allowWrites: true)
        let (tools, _) = try await f.client.listTools()
        let create = try #require(tools.first { $0.name == "create_silence" })
        #expect(create.annotations.readOnlyHint == false && create.annotations.destructiveHint == false && create.annotations.idempotentHint == true)
        let arguments: [String: Value] = ["edge_location": "FRA56-C2", "type": "incident", "duration": "2h", "created_by": "assistant", "comment": "PoP drill"]
        let made = try await f.call("create_silence", arguments)
        #expect(!made.isError, "\(made.text)")
        guard case .string(let id)? = made.result["silence"]?["id"] else { Issue.record("no id: \(made.text)"); return }
        #expect(made.result["silence"]?["created_by"] == .string("mcp:stdio:assistant"))
        let matchers = Dictionary(uniqueKeysWithValues: (made.result["silence"]?["matchers"]?.objectMembers ?? []).map { ($0.key, $0.value) })
        #expect(matchers == ["type": .string("incident"), "edge_location": .string("FRA56-C2")], "an object's order is not kept over MCP")
        #expect(try await f.call("create_silence", arguments).result["silence"]?["id"] == .string(id), "the same call is the same silence")
        let stored = try await f.store.silences(activeAt: AlertStore.nowMs())
        #expect(stored.filter { $0.id == id }.count == 1)
        #expect(try await f.call("create_silence", ["duration": "1h", "created_by": "bot"]).isError, "a silence needs a matcher")
        #expect(try await f.call("create_silence", ["type": "incident", "duration": "90d", "created_by": "bot"]).isError)
        #expect(try await f.call("expire_silence", ["id": .string(id)]).result["status"] == .string("success"))
        #expect(try await f.call("expire_silence", ["id": .string(id)]).result["status"] == .string("not_found"), "ending twice changes nothing")
        await f.close()
    }
}

/// Tool groups (`mcp.tools.enabled`), the byte cap on results, and the chart's SVG.
struct ToolControlTests {
    @Test func onlyTheEnabledGroupsAreOffered() {
        let tools = SentinelTools(influx: nil, store: nil, rules: DetectionRules(), allowWrites: true, groups: [.incidents, .silences])
        #expect(Set(tools.tools.map(\.name)) == ["list_incidents", "get_incident", "list_silences", "create_silence", "expire_silence"])
        let history = SentinelTools(influx: nil, store: nil, rules: DetectionRules(), groups: [.history])
        #expect(history.tools.count == 5)
        #expect(Set(SentinelTools.ToolGroup.allCases.map(\.rawValue)) == Set(SentinelConfiguration.MCP.allToolGroups))
    }

    @Test func aResultLargerThanTheCapLosesRowsAndSaysSo() {
        let rows = (0..<5_000).map { JSONValue.object([("cmcd_sid", .string("viewer-\($0)")), ("note", .string(String(repeating: "x", count: 100)))]) }
        let big = JSONValue.object([("status", .string("success")), ("anomalies", .array(rows)), ("truncated", .bool(false)), ("next_cursor", .null)])
        let (cut, wasCut) = SentinelTools.capped(big, maxBytes: 65_536)
        #expect(wasCut)
        #expect(JSONWriter.string(cut).utf8.count <= 65_536)
        #expect(cut["truncated"] == .bool(true) && cut["next_cursor"] == .null && cut["truncated_by_bytes"] == .int(65_536))
        if case .array(let kept)? = cut["anomalies"] { #expect(kept.count > 100 && kept.count < 5_000) } else { Issue.record("no rows") }
        let small = JSONValue.object([("status", .string("success"))])
        #expect(SentinelTools.capped(small).1 == false)
    }

    @Test func theChartEscapesWhatViewersSent() {
        let chart = SessionChart(
            sessionID: "<script>alert(1)</script>&\"",
            points: [.init(time: 0, bufferMs: 20_000, bitrateKbps: 3_000, throughputKbps: 9_000), .init(time: 4_000, bufferMs: 0, bitrateKbps: 3_000, throughputKbps: nil)],
            marks: [.init(type: "buffer_starvation", severity: "critical", start: 2_000, end: nil)])
        let svg = chart.svg
        #expect(svg.hasPrefix("<svg") && svg.contains("</svg>"))
        #expect(!svg.contains("<script>") && svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;"))
        #expect(svg.contains("buffer_starvation") && svg.contains("<polyline"))
        #expect(SessionChart(sessionID: "s", points: [], marks: []).svg.contains("No requests"))
    }

    /// librsvg and cairo (`.ci/run` installs them) draw the chart as a PNG of the chart's size.
    @Test func theChartIsAlsoAPNG() throws {
        let chart = SessionChart(
            sessionID: "viewer", points: [.init(time: 0, bufferMs: 20_000, bitrateKbps: 3_000, throughputKbps: 9_000), .init(time: 4_000, bufferMs: 0, bitrateKbps: 3_000, throughputKbps: 8_000)],
            marks: [.init(type: "buffer_starvation", severity: "critical", start: 2_000, end: nil)])
        let png = try #require(PNGRasteriser.png(svg: chart.svg, width: 800, height: 320), "librsvg-2.so.2 or libcairo.so.2 is missing")
        let bytes = [UInt8](png)
        #expect(bytes.prefix(8) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // IHDR: width and height, big-endian, at bytes 16 to 23.
        #expect(bytes[16..<20] == [0, 0, 0x03, 0x20] && bytes[20..<24] == [0, 0, 0x01, 0x40])
        #expect(png.count > 2_000, "a real picture, not an empty canvas")
        #expect(PNGRasteriser.png(svg: "not svg at all", width: 800, height: 320) == nil)
    }
}
