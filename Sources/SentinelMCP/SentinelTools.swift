import CMCD
import CMCDDetection
import CMCDRecords
import Foundation
import Logging
import MCP
import SentinelAlerts
import SentinelConfig
import SentinelJSON

/// The MCP tools: the five historical questions of the old Python server (same names and
/// parameters, its defects fixed), five about what happens now, and three about incidents
/// and silences. Read-only.
public final class SentinelTools: Sendable {
    let influx: InfluxReader?
    /// The alerts table, if configured.
    public let store: AlertStore?
    let rules: DetectionRules
    /// Hard cap on rows any tool returns.
    static let cap = 1_000

    /// Whether the write tools (`create_silence`, `expire_silence`) are offered: only when the
    /// server is started with `--allow-writes`.
    let allowWrites: Bool
    /// The tool groups offered (`mcp.tools.enabled`).
    let groups: Set<ToolGroup>
    /// Who calls: the bearer token's name over HTTP, `stdio` on standard input and output
    /// (recorded as a silence's creator).
    public let caller: String

    init(
        influx: InfluxReader?, store: AlertStore?, rules: DetectionRules, allowWrites: Bool = false, groups: Set<ToolGroup> = Set(ToolGroup.allCases),
        caller: String = "stdio"
    ) {
        self.influx = influx
        self.store = store
        self.rules = rules
        self.allowWrites = allowWrites
        self.groups = groups
        self.caller = caller
    }

    /// The same tools for another caller (one per MCP session over HTTP).
    public func forCaller(_ caller: String) -> SentinelTools {
        SentinelTools(influx: influx, store: store, rules: rules, allowWrites: allowWrites, groups: groups, caller: caller)
    }

    /// The tools over what the configuration names (InfluxDB reader, alerts table), without IO:
    /// the caller runs `store` (first in its ServiceGroup) and migrates it before serving.
    public static func connect(
        configuration: SentinelConfiguration, rules: DetectionRules, allowWrites: Bool = false, logger: Logger
    ) throws -> SentinelTools {
        var store: AlertStore?
        if let alerts = configuration.alerts { store = try AlertStore.connect(url: alerts.url, logger: logger) }
        return SentinelTools(
            influx: configuration.influx.map(InfluxReader.init), store: store, rules: rules, allowWrites: allowWrites,
            groups: Set(configuration.mcp.toolGroups.compactMap(ToolGroup.init(rawValue:))))
    }

    /// The tool groups `mcp.tools.enabled` names.
    public enum ToolGroup: String, Sendable, CaseIterable {
        case history, anomalies, incidents, silences, charts
    }

    public func close() async {
        await influx?.shutdown()
        await store?.close()
    }

    // MARK: - Definitions

    static func schema(_ properties: [(String, String, String)], required: [String] = []) -> Value {
        var props: [String: Value] = [:]
        for (name, type, description) in properties {
            props[name] = .object(["type": .string(type), "description": .string(description)])
        }
        return .object(["type": "object", "properties": .object(props), "required": .array(required.map { .string($0) }), "additionalProperties": false])
    }

    static let timeRange = ("time_range", "string", "How far back: -30m, -1h, -24h, -7d (s, m, h, d, w; at most 90 days). Default -24h.")
    static let limit = ("limit", "integer", "Most rows to return (default 100, at most 1000).")
    static let cursor = ("cursor", "string", "Opaque cursor from a previous answer's next_cursor, for the next page.")
    static let sid = ("cmcd_sid", "string", "CMCD session id.")
    static let cid = ("cmcd_cid", "string", "CMCD content id.")

    /// One tool, declared once: what `tools/list` shows and what `tools/call` accepts (its
    /// parameters are the only arguments allowed) and runs.
    struct Spec: Sendable {
        var name: String
        var title: String
        var description: String
        var parameters: [(String, String, String)]
        var required: [String] = []
        /// The members of its successful result (`outputSchema`).
        var output: [Member]
        var run: @Sendable (SentinelTools, ToolInput) async throws -> (String, JSONValue)
        /// It changes the alerts table (offered only with `--allow-writes`); never destructive,
        /// and calling it twice does what calling it once does.
        var writes = false
        /// The group `mcp.tools.enabled` switches it with.
        var group = ToolGroup.anomalies

        var tool: Tool {
            Tool(
                name: name, title: title, description: description, inputSchema: SentinelTools.schema(parameters, required: required),
                annotations: writes
                    ? Tool.Annotations(readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false)
                    : Tool.Annotations(readOnlyHint: true, openWorldHint: false),
                outputSchema: SentinelTools.outputSchema(output))
        }
    }

    static let specs: [Spec] = [
        Spec(
            name: "get_average_bitrate", title: "Average bitrate",
            description:
                "Average encoded bitrate (cmcd_br, kbps) of video and muxed segment requests (cmcd_ot v or av) over a time range, optionally for one session or content.",
            parameters: [timeRange, sid, cid], output: [("average_bitrate_kbps", "number?"), ("segments", "integer"), ("averaged_over", "string"), ("time_range", "string"), ("cmcd_sid", "string?"), ("cmcd_cid", "string?")],
            run: { try await $0.averageBitrate($1) }, group: .history),
        Spec(
            name: "get_session_details", title: "Session details",
            description:
                "A session's real start and end time and its metrics over time (buffer length, bitrates, throughput, startup and starvation flags), paged.",
            parameters: [sid, timeRange, limit, cursor], required: ["cmcd_sid"], output: [("session_data", "object"), ("~cmcd_sid", "string"), ("~time_range", "string")] + paged,
            run: { try await $0.sessionDetails($1) }, group: .history),
        Spec(
            name: "analyze_buffer_events", title: "Low-buffer events",
            description: "Counts buffer-length reports and lists those below threshold_ms, with their session ids, paged.",
            parameters: [timeRange, sid, ("threshold_ms", "integer", "Buffer length below which a report is low (default 500)."), limit, cursor],
            output: [("total_buffer_events", "integer"), ("low_buffer_events", "integer"), ("low_buffer_events_details", "[object]"), ("threshold_ms", "integer"), ("time_range", "string")] + paged,
            run: { try await $0.bufferEvents($1) }, group: .history),
        Spec(
            name: "identify_playback_errors", title: "Playback problems in history",
            description:
                "Runs the daemon's detectors (the rules in force) over the stored requests and lists buffer_drop, buffer_starvation and startup_delay episodes with severities, paged.",
            parameters: [timeRange, sid, limit, cursor], output: [("total_errors", "integer"), ("by_type", "object"), ("errors", "[object]"), ("sessions_analyzed", "integer"), ("sessions_capped", "boolean"), ("time_range", "string")] + paged,
            run: { try await $0.playbackErrors($1) }, group: .history),
        Spec(
            name: "list_session_and_content_ids", title: "Sessions and contents", description: "Session ids and content ids seen in a time range, paged.",
            parameters: [timeRange, limit, cursor], output: [("cmcd_sids", "[string]"), ("cmcd_cids", "[string]"), ("session_count", "integer"), ("content_count", "integer"), ("time_range", "string")] + paged,
            run: { try await $0.ids($1) }, group: .history),
        Spec(
            name: "list_recent_anomalies", title: "Recent anomalies",
            description: "Findings from the alerts table, newest first, filtered by type, severity, status, session, content or edge location.",
            parameters: [
                ("since", "string", "How far back, like time_range (default -1h)."),
                ("type", "string", "buffer_drop, buffer_starvation or startup_delay."), ("severity", "string", "warning or critical."),
                ("status", "string", "firing or resolved."), sid, cid, ("edge_location", "string", "CloudFront edge location, e.g. FRA56-P3."), limit, cursor,
            ], output: [("anomalies", "[finding]"), ("since", "string")] + paged,
            run: { try await $0.recentAnomalies($1) }),
        Spec(
            name: "get_anomaly", title: "One anomaly", description: "One finding by id with its details and the state of its webhook notifications.",
            parameters: [("id", "string", "The finding id (32 hex digits).")], required: ["id"], output: [("anomaly", "finding"), ("notifications", "[object]"), ("~id", "string")],
            run: { try await $0.anomaly($1) }),
        Spec(
            name: "get_session_timeline", title: "Session timeline", description: "A session's requests (metrics) and findings in time order, bounded.",
            parameters: [sid, timeRange, limit], required: ["cmcd_sid"], output: [("cmcd_sid", "string"), ("qoe", "object?"), ("events", "[object]"), ("truncated", "boolean"), ("time_range", "string")],
            run: { try await $0.timeline($1) }),
        Spec(
            name: "anomaly_summary", title: "Anomaly summary",
            description: "Counts of findings over a time range grouped by type, severity, content or edge location, with affected and worst sessions.",
            parameters: [timeRange, ("group_by", "string", "type (default), severity, content or edge_location.")], output: [("total_anomalies", "integer"), ("affected_sessions", "integer"), ("group_by", "string"), ("groups", "[object]"), ("worst_sessions", "[object]"), ("truncated", "boolean"), ("time_range", "string")],
            run: { try await $0.summary($1) }),
        Spec(
            name: "get_session_chart", title: "Session chart",
            description:
                "A picture of one session: buffer length, encoded bitrate and measured throughput over time with its findings shaded, as a PNG image (where librsvg is installed) and an SVG one (also the resource cmcd://sessions/{session_id}/chart.svg).",
            parameters: [sid, ("session_id", "string", "Same as cmcd_sid."), timeRange],
            output: [("cmcd_sid", "string"), ("time_range", "string"), ("points", "integer"), ("findings", "integer"), ("truncated", "boolean"), ("svg_uri", "string"), ("mime_type", "string"), ("png", "string?"), ("svg", "string")],
            run: { try await $0.chart($1) }, group: .charts),
        Spec(
            name: "get_detection_rules", title: "Detection rules", description: "The thresholds and routes in force, to explain a finding.", parameters: [],
            output: [("buffer_drop", "object"), ("buffer_starvation", "object"), ("startup_delay", "object"), ("sessions", "object"), ("cohorts", "object"), ("routes", "[object]")],
            run: { tools, _ in ("Detection rules in force (times in ms of event time).", tools.rulesJSON) }),
    ]

    /// Every tool: the historical and anomaly ones, then incidents and silences.
    static let allSpecs: [Spec] = specs + incidentSpecs

    /// The tools this server offers: the read-only ones, and the write ones when allowed.
    var specs: [Spec] { (allowWrites ? Self.allSpecs + Self.writeSpecs : Self.allSpecs).filter { groups.contains($0.group) } }

    public var tools: [Tool] { specs.map(\.tool) }

    // MARK: - Calling

    /// Runs a tool. Bad arguments and failed queries come back as tool errors with the reason.
    public func call(_ name: String, arguments: [String: Value]?) async -> CallTool.Result {
        do {
            let (summary, full) = try await run(name, arguments)
            let (structured, cut) = Self.capped(full)
            let text = cut ? summary + " (Cut to \(Self.maxResultBytes / 1024) KiB: ask for a smaller limit or a narrower time range.)" : summary
            // The structured result again as text, for clients that read only text; a chart
            // also as images (PNG where it could be drawn, and SVG).
            var content = [Self.text(text), Self.text(JSONWriter.string(structured))]
            if case .string(let png)? = structured["png"] { content.append(.image(data: png, mimeType: "image/png", annotations: nil, _meta: nil)) }
            if case .string(let svg)? = structured["svg"] {
                content.append(.image(data: Data(svg.utf8).base64EncodedString(), mimeType: "image/svg+xml", annotations: nil, _meta: nil))
            }
            return CallTool.Result(content: content, structuredContent: Optional(structured.mcpValue), isError: false)
        } catch let error as BadArgument {
            return Self.failure("bad argument: \(error)")
        } catch let error as QueryFailure {
            return Self.failure(error.description)
        } catch {
            return Self.failure("\(name) failed: \(error)")
        }
    }

    static func failure(_ message: String) -> CallTool.Result {
        CallTool.Result(content: [text(message)], structuredContent: Optional(Value.object(["status": "error", "error": .string(message)])), isError: true)
    }

    static func text(_ text: String) -> Tool.Content {
        .text(text: text, annotations: nil, _meta: nil)
    }

    func run(_ name: String, _ arguments: [String: Value]?) async throws -> (String, JSONValue) {
        guard let spec = specs.first(where: { $0.name == name }) else { throw BadArgument("no tool named '\(name.prefix(64))'") }
        return try await spec.run(self, ToolInput(arguments, tool: name, allowed: Set(spec.parameters.map(\.0))))
    }

    func requireInflux() throws -> InfluxReader {
        guard let influx else { throw QueryFailure(description: "InfluxDB is not configured (influx section)") }
        return influx
    }

    func requireStore() throws -> AlertStore {
        guard let store else { throw QueryFailure(description: "the alerts table is not configured (alerts.url)") }
        return store
    }

    static func str(_ v: JSONValue?) -> String? { if case .string(let s)? = v { s } else { nil } }
    /// A number InfluxDB answered as an integer or a float.
    static func double(_ v: JSONValue?) -> Double? {
        switch v {
        case .double(let d)?: d
        case .int(let n)?: Double(n)
        default: nil
        }
    }
    static func int(_ v: JSONValue?) -> Int64? {
        switch v {
        case .int(let n)?: n
        case .double(let d)?: Int64(d)
        default: nil
        }
    }
    static func time(_ ms: Int64?) -> JSONValue { ms.map { .string(RFC3339.format(milliseconds: $0)) } ?? .null }

    /// `AND cmcd_sid = $sid` etc. for the ids given, with their bound values.
    static func idFilter(sid: String?, cid: String? = nil) -> (String, [String: String]) {
        var clause = ""
        var params: [String: String] = [:]
        if let sid {
            clause += " AND cmcd_sid = $sid"
            params["sid"] = sid
        }
        if let cid {
            clause += " AND cmcd_cid = $cid"
            params["cid"] = cid
        }
        return (clause, params)
    }

    /// `truncated` and `next_cursor` for a page read with `limit + 1` rows.
    static func page(count: Int, limit: Int, offset: Int) -> [(String, JSONValue)] {
        let truncated = count > limit
        return [
            ("truncated", .bool(truncated)), ("next_cursor", truncated ? .string(ToolInput.cursor(offset: offset + limit)) : .null),
        ]
    }

    // MARK: - Historical tools

    func averageBitrate(_ input: ToolInput) async throws -> (String, JSONValue) {
        let range = try input.timeRange(default: "-24h")
        let sid = try input.string("cmcd_sid", maxLength: 256)
        let cid = try input.string("cmcd_cid", maxLength: 256)
        let (filter, params) = Self.idFilter(sid: sid, cid: cid)
        let series = try await requireInflux().query(
            "SELECT MEAN(cmcd_br), COUNT(cmcd_br) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND (cmcd_ot = 'v' OR cmcd_ot = 'av')\(filter)",
            params: params)
        let record = series.first?.records.first
        let mean = Self.double(record?["mean"])
        let count = Self.int(record?["count"]) ?? 0
        let rounded = mean.map { ($0 * 10).rounded() / 10 }
        let text =
            rounded.map { "Average bitrate \($0) kbps over \(count) video/muxed segment requests in the last \(range.text.dropFirst())." }
            ?? "No video or muxed segment requests with a bitrate in the last \(range.text.dropFirst())."
        return (
            text,
            .object([
                ("status", .string("success")), ("average_bitrate_kbps", rounded.map(JSONValue.double) ?? .null), ("segments", .int(count)),
                ("averaged_over", .string("cmcd_br of video and muxed segment requests (cmcd_ot v or av)")), ("time_range", .string(range.text)),
                ("cmcd_sid", sid.map(JSONValue.string) ?? .null), ("cmcd_cid", cid.map(JSONValue.string) ?? .null),
            ])
        )
    }

    static let metricFields = ["cmcd_bl", "cmcd_br", "cmcd_mtp", "cmcd_tb", "cmcd_d", "cmcd_su", "cmcd_bs", "cmcd_ot", "cmcd_cid", "edge_location"]

    func sessionDetails(_ input: ToolInput) async throws -> (String, JSONValue) {
        let sid = try input.requiredString("cmcd_sid")
        let range = try input.timeRange(default: "-24h")
        let (limit, offset) = try input.page()
        let influx = try requireInflux()
        let counts = try await influx.query(
            "SELECT COUNT(cmcd_v) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid", params: ["sid": sid])
        let total = Self.int(counts.first?.records.first?["count"]) ?? 0
        guard total > 0 else {
            return ("No requests of session \(sid) in the last \(range.text.dropFirst()).", .object([("status", .string("not_found")), ("cmcd_sid", .string(sid)), ("time_range", .string(range.text))]))
        }
        // FIRST and LAST answer with the time of their point.
        let first = try await influx.query(
            "SELECT FIRST(cmcd_v) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid", params: ["sid": sid])
        let last = try await influx.query(
            "SELECT LAST(cmcd_v) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid", params: ["sid": sid])
        let rows = try await influx.query(
            "SELECT \(Self.metricFields.joined(separator: ", ")) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid ORDER BY time LIMIT \(limit + 1) OFFSET \(offset)",
            params: ["sid": sid])
        let records = rows.first?.records ?? []
        let points: [JSONValue] = records.prefix(limit).map { r in
            .object(
                [("time", Self.time(Self.int(r["time"])))]
                    + Self.metricFields.compactMap { f in r[f].flatMap { $0 == .null ? nil : (f, $0) } })
        }
        let start = Self.int(first.first?.records.first?["time"])
        let end = Self.int(last.first?.records.first?["time"])
        let qoe = try await sessionQoE(sid: sid, range: range)
        return (
            "Session \(sid): \(total) requests from \(RFC3339.format(milliseconds: start ?? 0)) to \(RFC3339.format(milliseconds: end ?? 0)); \(points.count) shown.",
            .object(
                [
                    ("status", .string("success")),
                    ("session_data", .object([
                        ("cmcd_sid", .string(sid)), ("start_time", Self.time(start)), ("end_time", Self.time(end)), ("requests", .int(total)),
                        ("qoe", qoe ?? .null), ("points", .array(points)),
                    ])),
                ] + Self.page(count: records.count, limit: limit, offset: offset))
        )
    }

    func bufferEvents(_ input: ToolInput) async throws -> (String, JSONValue) {
        let range = try input.timeRange(default: "-24h")
        let sid = try input.string("cmcd_sid")
        let threshold = try input.integer("threshold_ms", in: 0...600_000) ?? 500
        let (limit, offset) = try input.page()
        let (filter, params) = Self.idFilter(sid: sid)
        let influx = try requireInflux()
        let totals = try await influx.query(
            "SELECT COUNT(cmcd_bl) FROM cloudfront_logs WHERE time > now() - \(range.literal)\(filter)", params: params)
        let lows = try await influx.query(
            "SELECT COUNT(cmcd_bl) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_bl < \(threshold)\(filter)", params: params)
        let rows = try await influx.query(
            "SELECT cmcd_bl, cmcd_sid, cmcd_ot FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_bl < \(threshold)\(filter) ORDER BY time LIMIT \(limit + 1) OFFSET \(offset)",
            params: params)
        let total = Self.int(totals.first?.records.first?["count"]) ?? 0
        let low = Self.int(lows.first?.records.first?["count"]) ?? 0
        let records = rows.first?.records ?? []
        let details: [JSONValue] = records.prefix(limit).map { r in
            .object([
                ("time", Self.time(Self.int(r["time"]))), ("buffer_level_ms", r["cmcd_bl"] ?? .null), ("cmcd_sid", r["cmcd_sid"] ?? .null),
                ("cmcd_ot", r["cmcd_ot"] ?? .null),
            ])
        }
        return (
            "\(low) of \(total) buffer-length reports were below \(threshold) ms in the last \(range.text.dropFirst()).",
            .object(
                [
                    ("status", .string("success")), ("total_buffer_events", .int(total)), ("low_buffer_events", .int(low)),
                    ("low_buffer_events_details", .array(details)), ("threshold_ms", .int(Int64(threshold))), ("time_range", .string(range.text)),
                ] + Self.page(count: records.count, limit: limit, offset: offset))
        )
    }

    /// The session's quality of experience (startup, seeks, rebuffering; `Finding` details'
    /// `qoe`), from its stored requests replayed through the detectors (at most
    /// `replayPointsPerSession` of them, oldest first).
    func sessionQoE(sid: String, range: TimeRange) async throws -> JSONValue? {
        guard let influx else { return nil }
        let rows = try await influx.query(
            "SELECT cmcd_bl, cmcd_su, cmcd_bs, cmcd_ot, cmcd_bsa, cmcd_bsd, cmcd_msd, cmcd_sta, cmcd_cid, edge_location FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid ORDER BY time LIMIT \(Self.replayPointsPerSession)",
            params: ["sid": sid])
        var engine = DetectionEngine(rules: rules)
        var findings: [Finding] = []
        for r in rows.first?.records ?? [] {
            guard let sample = Self.sample(session: sid, r) else { continue }
            engine.process(sample, into: &findings)
            findings.removeAll(keepingCapacity: true)
        }
        return engine.qualityOfExperience(sessionID: sid)
    }

    /// Sessions and points read at most, for replaying history through the detectors.
    static let replaySessions = 1_000
    static let replayPointsPerSession = 5_000

    func playbackErrors(_ input: ToolInput) async throws -> (String, JSONValue) {
        let range = try input.timeRange(default: "-24h")
        let sid = try input.string("cmcd_sid")
        let (limit, offset) = try input.page()
        let (filter, params) = Self.idFilter(sid: sid)
        let series = try await requireInflux().query(
            "SELECT cmcd_bl, cmcd_su, cmcd_bs, cmcd_ot, cmcd_bsa, cmcd_bsd, cmcd_msd, cmcd_sta, cmcd_cid, edge_location FROM cloudfront_logs WHERE time > now() - \(range.literal)\(filter) GROUP BY cmcd_sid ORDER BY time LIMIT \(Self.replayPointsPerSession) SLIMIT \(Self.replaySessions)",
            params: params)
        var engine = DetectionEngine(rules: rules)
        var findings: [Finding] = []
        // Sessions one after another, each in time order: the engine keys state by session.
        for s in series {
            guard let session = s.tags["cmcd_sid"], !session.isEmpty else { continue }
            for r in s.records {
                guard let sample = Self.sample(session: session, r) else { continue }
                engine.process(sample, into: &findings)
            }
        }
        // One entry per episode, in its latest state.
        var episodes: [String: Finding] = [:]
        var order: [String] = []
        for f in findings {
            if episodes[f.id] == nil { order.append(f.id) }
            if let old = episodes[f.id], old.status == .resolved { continue }
            var merged = f
            if let old = episodes[f.id], old.severity > f.severity { merged.severity = old.severity }
            episodes[f.id] = merged
        }
        let errors: [JSONValue] = order.dropFirst(offset).prefix(limit).compactMap { id in
            guard let f = episodes[id] else { return nil }
            return .object([
                ("type", .string(f.type.rawValue)), ("severity", .string(f.severity.rawValue)),
                ("status", .string(f.status == .resolved ? "resolved" : "ongoing")), ("time", Self.time(f.startedAt)),
                ("detected_at", Self.time(f.detectedAt)), ("cmcd_sid", .string(f.sessionID)), ("cmcd_cid", f.contentID.map(JSONValue.string) ?? .null),
                ("summary", .string(f.summary)), ("details", .object(f.details)),
            ])
        }
        var byType: [(String, JSONValue)] = []
        for type in FindingType.allCases {
            byType.append((type.rawValue, .int(Int64(episodes.values.filter { $0.type == type }.count))))
        }
        return (
            "\(episodes.count) playback problems in \(series.count) sessions over the last \(range.text.dropFirst()) (the daemon's detectors over stored requests).",
            .object([
                ("status", .string("success")), ("total_errors", .int(Int64(episodes.count))), ("by_type", .object(byType)), ("errors", .array(errors)),
                ("sessions_analyzed", .int(Int64(series.count))),
                ("sessions_capped", .bool(series.count >= Self.replaySessions)), ("time_range", .string(range.text)),
            ] + Self.page(count: order.count - offset, limit: limit, offset: offset))
        )
    }

    /// A stored request back as a sample for the detectors.
    static func sample(session: String, _ r: [String: JSONValue]) -> Sample? {
        guard let time = int(r["time"]) else { return nil }
        var parts: [String] = []
        if let bl = int(r["cmcd_bl"]) { parts.append("bl=\(bl)") }
        if r["cmcd_su"] == .bool(true) { parts.append("su") }
        if r["cmcd_bs"] == .bool(true) { parts.append("bs") }
        if let ot = str(r["cmcd_ot"]), CMCDObjectType(rawValue: ot) != nil { parts.append("ot=\(ot)") }
        if let bsa = int(r["cmcd_bsa"]) { parts.append("bsa=\(bsa)") }
        if let bsd = int(r["cmcd_bsd"]) { parts.append("bsd=\(bsd)") }
        if let msd = int(r["cmcd_msd"]) { parts.append("msd=\(msd)") }
        if let sta = str(r["cmcd_sta"]), sta.count == 1, sta.first!.isLetter { parts.append("sta=\(sta)") }
        if parts.contains(where: { $0.hasPrefix("bsa=") || $0.hasPrefix("bsd=") || $0.hasPrefix("msd=") || $0.hasPrefix("sta=") }) { parts.append("v=2") }
        guard let payload = try? CMCDPayload(raw: parts.joined(separator: ",")) else { return nil }
        return Sample(time: time, sessionID: session, contentID: str(r["cmcd_cid"]), edgeLocation: str(r["edge_location"]), cmcd: payload)
    }

    func ids(_ input: ToolInput) async throws -> (String, JSONValue) {
        let range = try input.timeRange(default: "-24h")
        let (limit, offset) = try input.page()
        let influx = try requireInflux()
        func values(_ tag: String) async throws -> [String] {
            let series = try await influx.query(
                "SELECT COUNT(cmcd_v) FROM cloudfront_logs WHERE time > now() - \(range.literal) GROUP BY \(tag) SLIMIT \(limit + 1) SOFFSET \(offset)")
            return series.compactMap { $0.tags[tag] }.filter { !$0.isEmpty }
        }
        let sids = try await values("cmcd_sid")
        let cids = try await values("cmcd_cid")
        let truncated = sids.count > limit || cids.count > limit
        return (
            "\(min(sids.count, limit)) sessions and \(min(cids.count, limit)) contents in the last \(range.text.dropFirst())\(truncated ? " (more exist)" : "").",
            .object([
                ("status", .string("success")), ("cmcd_sids", .array(sids.prefix(limit).map(JSONValue.string))),
                ("cmcd_cids", .array(cids.prefix(limit).map(JSONValue.string))), ("session_count", .int(Int64(min(sids.count, limit)))),
                ("content_count", .int(Int64(min(cids.count, limit)))), ("truncated", .bool(truncated)),
                ("next_cursor", truncated ? .string(ToolInput.cursor(offset: offset + limit)) : .null), ("time_range", .string(range.text)),
            ])
        )
    }

    // MARK: - Real-time tools

    static func alertJSON(_ a: AlertRecord) -> JSONValue {
        guard case .object(var members) = a.findingJSON else { return .null }
        if let resolved = a.resolvedAt { members.append(("resolved_at", time(resolved))) }
        return .object(members)
    }

    func recentAnomalies(_ input: ToolInput) async throws -> (String, JSONValue) {
        let since = try input.timeRange("since", default: "-1h")
        let (limit, offset) = try input.page()
        var query = AlertStore.Query()
        query.since = AlertStore.nowMs() - since.milliseconds
        query.type = try input.choice("type", FindingType.allCases.map(\.rawValue))
        query.severity = try input.choice("severity", ["warning", "critical"])
        query.status = try input.choice("status", ["firing", "resolved"])
        query.sessionID = try input.string("cmcd_sid")
        query.contentID = try input.string("cmcd_cid")
        query.edgeLocation = try input.string("edge_location", maxLength: 64)
        let page = try await alertPage(query, limit: limit, offset: offset)
        return (
            "\(page.alerts.count) anomalies detected in the last \(since.text.dropFirst())\(page.more ? " (more exist)" : "").",
            .object([("status", .string("success")), ("anomalies", .array(page.alerts.map(Self.alertJSON))), ("since", .string(since.text))] + page.fields)
        )
    }

    /// One page of the alerts a query matches: at most `limit` from `offset`, whether more
    /// exist, and the page's `truncated` and `next_cursor` fields.
    func alertPage(_ query: AlertStore.Query, limit: Int, offset: Int) async throws -> (alerts: [AlertRecord], more: Bool, fields: [(String, JSONValue)]) {
        var query = query
        query.limit = limit + 1
        query.offset = offset
        let alerts = try await requireStore().alerts(matching: query)
        return (Array(alerts.prefix(limit)), alerts.count > limit, Self.page(count: alerts.count, limit: limit, offset: offset))
    }

    func anomaly(_ input: ToolInput) async throws -> (String, JSONValue) {
        let id = try input.requiredString("id", maxLength: 64)
        let store = try requireStore()
        guard let alert = try await store.alert(id: id) else {
            return ("No anomaly with id \(id).", .object([("status", .string("not_found")), ("id", .string(id))]))
        }
        let notifications: [JSONValue] = try await store.notifications(alertID: id).map { n in
            .object([
                ("event_id", .string(n.id)), ("route", .string(n.route)), ("endpoint", .string(n.endpoint)), ("kind", .string(n.kind)),
                ("state", .string(n.state.rawValue)), ("attempts", .int(Int64(n.attempts))), ("created_at", Self.time(n.createdAt)),
                ("delivered_at", Self.time(n.deliveredAt)), ("last_status", n.lastStatus.map { .int(Int64($0)) } ?? .null),
                ("last_error", n.lastError.map(JSONValue.string) ?? .null),
            ])
        }
        return (
            "\(alert.type) \(alert.severity) \(alert.status) for session \(alert.sessionID): \(alert.summary)",
            .object([("status", .string("success")), ("anomaly", Self.alertJSON(alert)), ("notifications", .array(notifications))])
        )
    }

    func timeline(_ input: ToolInput) async throws -> (String, JSONValue) {
        let sid = try input.requiredString("cmcd_sid")
        let range = try input.timeRange(default: "-24h")
        let limit = try input.integer("limit", in: 1...Self.cap) ?? 200
        var events: [(Int64, JSONValue)] = []
        var truncated = false
        if let influx {
            let rows = try await influx.query(
                "SELECT \(Self.metricFields.joined(separator: ", ")) FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid ORDER BY time DESC LIMIT \(limit + 1)",
                params: ["sid": sid])
            let records = rows.first?.records ?? []
            truncated = records.count > limit
            for r in records.prefix(limit) {
                guard let t = Self.int(r["time"]) else { continue }
                events.append(
                    (t, .object([("time", Self.time(t)), ("kind", .string("request"))] + Self.metricFields.compactMap { f in r[f].flatMap { $0 == .null ? nil : (f, $0) } })))
            }
        }
        if let store {
            var query = AlertStore.Query()
            query.sessionID = sid
            query.since = AlertStore.nowMs() - range.milliseconds
            query.limit = limit + 1
            let alerts = try await store.alerts(matching: query)
            truncated = truncated || alerts.count > limit
            for a in alerts.prefix(limit) {
                events.append((a.startedAt, .object([("time", Self.time(a.startedAt)), ("kind", .string("finding")), ("finding", Self.alertJSON(a))])))
            }
        }
        guard influx != nil || store != nil else { throw QueryFailure(description: "neither InfluxDB nor the alerts table is configured") }
        events.sort { $0.0 < $1.0 }
        let shown = events.suffix(limit)
        return (
            "Session \(sid): \(shown.count) events (requests and findings) in time order\(truncated || events.count > limit ? ", the newest shown" : "").",
            .object([
                ("status", .string("success")), ("cmcd_sid", .string(sid)), ("qoe", try await sessionQoE(sid: sid, range: range) ?? .null),
                ("events", .array(shown.map(\.1))),
                ("truncated", .bool(truncated || events.count > limit)), ("time_range", .string(range.text)),
            ])
        )
    }

    func summary(_ input: ToolInput) async throws -> (String, JSONValue) {
        let range = try input.timeRange(default: "-24h")
        let groupBy = try input.choice("group_by", ["type", "severity", "content", "edge_location"]) ?? "type"
        var query = AlertStore.Query()
        query.since = AlertStore.nowMs() - range.milliseconds
        query.limit = 10_001
        let alerts = try await requireStore().alerts(matching: query)
        let considered = alerts.prefix(10_000)
        func key(_ a: AlertRecord) -> String {
            switch groupBy {
            case "severity": a.severity
            case "content": a.contentID ?? "(unknown)"
            case "edge_location": a.edgeLocation ?? "(unknown)"
            default: a.type
            }
        }
        var groups: [String: (count: Int, critical: Int, sessions: Set<String>)] = [:]
        var perSession: [String: (count: Int, critical: Int)] = [:]
        for a in considered {
            groups[key(a), default: (0, 0, [])].count += 1
            if a.severity == "critical" { groups[key(a), default: (0, 0, [])].critical += 1 }
            groups[key(a), default: (0, 0, [])].sessions.insert(a.sessionID)
            perSession[a.sessionID, default: (0, 0)].count += 1
            if a.severity == "critical" { perSession[a.sessionID, default: (0, 0)].critical += 1 }
        }
        let grouped: [JSONValue] = groups.sorted { ($0.value.count, $1.key) > ($1.value.count, $0.key) }.map { k, v in
            .object([
                (groupBy, .string(k)), ("anomalies", .int(Int64(v.count))), ("critical", .int(Int64(v.critical))),
                ("affected_sessions", .int(Int64(v.sessions.count))),
            ])
        }
        let worst: [JSONValue] = perSession.sorted { ($0.value.critical, $0.value.count, $1.key) > ($1.value.critical, $1.value.count, $0.key) }.prefix(10)
            .map { k, v in .object([("cmcd_sid", .string(k)), ("anomalies", .int(Int64(v.count))), ("critical", .int(Int64(v.critical)))]) }
        return (
            "\(considered.count) anomalies in \(perSession.count) sessions over the last \(range.text.dropFirst()), grouped by \(groupBy).",
            .object([
                ("status", .string("success")), ("total_anomalies", .int(Int64(considered.count))), ("affected_sessions", .int(Int64(perSession.count))),
                ("group_by", .string(groupBy)), ("groups", .array(grouped)), ("worst_sessions", .array(worst)),
                ("truncated", .bool(alerts.count > 10_000)), ("time_range", .string(range.text)),
            ])
        )
    }

    var rulesJSON: JSONValue {
        let r = rules
        return .object([
            ("status", .string("success")),
            ("buffer_drop", .object([
                ("enabled", .bool(r.bufferDrop.enabled)), ("lookback_ms", .int(r.bufferDrop.lookbackMs)),
                ("min_reference_ms", .int(r.bufferDrop.minReferenceMs)), ("warning_drop_ratio", .double(r.bufferDrop.warningDropRatio)),
                ("critical_drop_ratio", .double(r.bufferDrop.criticalDropRatio)), ("recovery_ratio", .double(r.bufferDrop.recoveryRatio)),
                ("object_types", .array(r.bufferDrop.objectTypes.map(\.rawValue).sorted().map(JSONValue.string))),
            ])),
            ("buffer_starvation", .object([
                ("enabled", .bool(r.bufferStarvation.enabled)), ("low_buffer_ms", .int(r.bufferStarvation.lowBufferMs)),
                ("recovered_buffer_ms", .int(r.bufferStarvation.recoveredBufferMs)),
            ])),
            ("startup_delay", .object([
                ("enabled", .bool(r.startupDelay.enabled)), ("warning_ms", .int(r.startupDelay.warningMs)), ("critical_ms", .int(r.startupDelay.criticalMs)),
            ])),
            ("sessions", .object([
                ("reorder_tolerance_ms", .int(r.sessions.reorderToleranceMs)), ("idle_timeout_ms", .int(r.sessions.idleTimeoutMs)),
                ("max_live_sessions", .int(Int64(r.sessions.maxLiveSessions))),
            ])),
            ("cohorts", .object([
                ("enabled", .bool(r.cohorts.enabled)),
                ("groups", .array(r.cohorts.groups.map { .array($0.map { .string($0.rawValue) }) })),
                ("window_ms", .int(r.cohorts.windowMs)), ("min_sessions", .int(Int64(r.cohorts.minSessions))),
                ("incidents", .array(r.cohorts.incidents.map { rule in
                    .object([
                        ("name", .string(rule.name)), ("metric", .string(rule.metric.rawValue)), ("severity", .string(rule.severity.rawValue)),
                        ("above", rule.above.map(JSONValue.double) ?? .null), ("deviation_sigmas", rule.deviationSigmas.map(JSONValue.double) ?? .null),
                        ("for_ms", .int(rule.forMs)), ("resolve_after_ms", .int(rule.resolveAfterMs)),
                    ])
                })),
            ])),
            ("routes", .array(r.routes.map { route in
                .object([
                    ("name", .string(route.name)), ("webhook", .string(route.webhook)),
                    ("types", .array(route.types.map(\.rawValue).sorted().map(JSONValue.string))), ("min_severity", .string(route.minSeverity.rawValue)),
                    ("min_drop_percent", route.minDropPercent.map(JSONValue.double) ?? .null), ("send_resolved", .bool(route.sendResolved)),
                    ("repeat_interval_ms", route.repeatIntervalMs.map(JSONValue.int) ?? .null), ("group_wait_ms", .int(route.groupWaitMs)),
                    ("group_by", .array(route.groupBy.map { .string($0.rawValue) })),
                    ("group_interval_ms", route.groupIntervalMs.map(JSONValue.int) ?? .null),
                    ("max_per_hour", route.maxPerHour.map { .int(Int64($0)) } ?? .null),
                ])
            })),
        ])
    }
}

extension JSONValue {
    /// The same value as the MCP SDK's `Value`.
    var mcpValue: Value {
        switch self {
        case .null: .null
        case .bool(let b): .bool(b)
        case .int(let n): .int(Int(n))
        case .double(let d): .double(d)
        case .string(let s): .string(s)
        case .array(let a): .array(a.map(\.mcpValue))
        case .object(let members): .object(Dictionary(members.map { ($0.key, $0.value.mcpValue) }, uniquingKeysWith: { _, last in last }))
        }
    }
}
