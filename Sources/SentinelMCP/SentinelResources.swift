import Foundation
import MCP
import SentinelAlerts
import SentinelJSON

/// The MCP resources: what an assistant (or its user) can attach as context without a tool
/// call, each read through the tool that answers the same question, as JSON.
public enum SentinelResources {
    static let json = "application/json"

    public static let resources: [Resource] = [
        Resource(
            name: "recent-anomalies", uri: "cmcd://anomalies/recent", title: "Anomalies of the last hour",
            description: "The newest findings in the alerts table (at most 100), as list_recent_anomalies gives them.", mimeType: json),
        Resource(
            name: "open-incidents", uri: "cmcd://incidents/open", title: "Open incidents",
            description: "Cohort incidents still firing (started in the last 7 days), as list_incidents gives them.", mimeType: json),
        Resource(
            name: "rules", uri: "cmcd://rules", title: "Detection rules", description: "The thresholds, cohort incident rules and routes in force.",
            mimeType: json),
    ]

    public static let templates: [Resource.Template] = [
        Resource.Template(
            uriTemplate: "cmcd://sessions/{session_id}", name: "session", title: "A viewer's session",
            description: "One session's summary (first and last request, requests, quality of experience) and its findings.", mimeType: json),
        Resource.Template(
            uriTemplate: "cmcd://sessions/{session_id}/timeline", name: "session-timeline", title: "A viewer's session, request by request",
            description: "The session's requests and findings in time order (the newest 500).", mimeType: json),
        Resource.Template(
            uriTemplate: "cmcd://sessions/{session_id}/chart.svg", name: "session-chart", title: "A viewer's session as a chart",
            description: "Buffer length, bitrate and throughput over time with the findings marked (SVG).", mimeType: "image/svg+xml"),
    ]

    /// What a URI names: a fixed resource, or a session's (id percent-decoded and checked like a
    /// tool's `cmcd_sid`).
    enum Target: Equatable {
        case recentAnomalies, openIncidents, rules
        case session(String), timeline(String), chart(String)
    }

    static func target(_ uri: String) throws -> Target {
        switch uri {
        case "cmcd://anomalies/recent": return .recentAnomalies
        case "cmcd://incidents/open": return .openIncidents
        case "cmcd://rules": return .rules
        default: break
        }
        let prefix = "cmcd://sessions/"
        guard uri.hasPrefix(prefix), uri.utf8.count <= 1_024 else { throw MCPError.invalidParams("no resource \(uri.prefix(100))") }
        var rest = String(uri.dropFirst(prefix.count))
        var kind = Target.session
        for (suffix, make) in [("/timeline", Target.timeline), ("/chart.svg", Target.chart)] where rest.hasSuffix(suffix) {
            rest = String(rest.dropLast(suffix.count))
            kind = make
        }
        guard !rest.isEmpty, !rest.contains("/"), let sid = rest.removingPercentEncoding, !sid.isEmpty, sid.utf8.count <= 256,
            !sid.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { throw MCPError.invalidParams("no resource \(uri.prefix(100)): a session id is 1 to 256 bytes, percent-encoded") }
        return kind(sid)
    }

    /// Reads a resource through the tools.
    static func read(_ uri: String, tools: SentinelTools) async throws -> ReadResource.Result {
        func run(_ tool: String, _ arguments: [String: Value]) async throws -> JSONValue {
            do {
                return SentinelTools.capped(try await tools.run(tool, arguments).1).0
            } catch let error as BadArgument {
                throw MCPError.invalidParams("\(error)")
            } catch let error as QueryFailure {
                throw MCPError.internalError(error.description)
            }
        }
        let value: JSONValue
        switch try target(uri) {
        case .recentAnomalies: value = try await run("list_recent_anomalies", ["since": "-1h", "limit": 100])
        case .openIncidents: value = try await run("list_incidents", ["since": "-7d", "status": "firing", "limit": 100])
        case .rules: value = try await run("get_detection_rules", [:])
        case .session(let sid):
            let details = try await run("get_session_details", ["cmcd_sid": .string(sid), "time_range": "-7d", "limit": 1])
            let findings = try await run("list_recent_anomalies", ["cmcd_sid": .string(sid), "since": "-7d", "limit": 100])
            var session = details["session_data"] ?? .null
            if case .object(var members) = session { members.removeAll { $0.key == "points" }; session = .object(members) }
            value = .object([("cmcd_sid", .string(sid)), ("session", session), ("findings", findings["anomalies"] ?? .array([]))])
        case .timeline(let sid): value = try await run("get_session_timeline", ["cmcd_sid": .string(sid), "time_range": "-7d", "limit": 500])
        case .chart(let sid):
            let chart = try await tools.sessionChart(sid: sid, range: try TimeRange("-7d"))
            return ReadResource.Result(contents: [.text(chart.svg, uri: uri, mimeType: "image/svg+xml")])
        }
        return ReadResource.Result(contents: [.text(JSONWriter.string(value), uri: uri, mimeType: json)])
    }
}

/// A session's resource subscriptions: polls the alerts table (once a second at most, so a
/// subscriber gets at most one `notifications/resources/updated` a second per resource) and
/// tells the client which subscribed resources changed: the recent anomalies on any new or
/// changed finding, the open incidents on an incident's, a session's resources on that
/// session's.
actor ResourceWatcher {
    let store: AlertStore?
    let intervalMs: Int64
    private var subscribed: Set<String> = []
    private var notify: (@Sendable (String) async -> Bool)?
    private var task: Task<Void, Never>?

    init(store: AlertStore?, intervalMs: Int64 = 1_000) {
        self.store = store
        self.intervalMs = intervalMs
    }

    /// Where updates go (the session's server); false from it stops the watch.
    func deliver(to notify: @escaping @Sendable (String) async -> Bool) { self.notify = notify }

    func subscribe(_ uri: String) throws {
        _ = try SentinelResources.target(uri)
        guard store != nil else { throw MCPError.invalidParams("no alerts table is configured (alerts.url): nothing to watch") }
        guard subscribed.count < 100 else { throw MCPError.invalidParams("at most 100 subscriptions per session") }
        subscribed.insert(uri)
        if task == nil {
            let since = AlertStore.nowMs()
            task = Task { await self.watch(since: since) }
        }
    }

    func unsubscribe(_ uri: String) { subscribed.remove(uri) }

    func stop() {
        task?.cancel()
        task = nil
    }

    private func watch(since start: Int64) async {
        var cursor = ChangeCursor(since: start)
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(intervalMs))
            guard !Task.isCancelled, let store, let notify else { continue }
            // A failed read is tried again at the next tick (the subscription outlives an outage).
            guard let changes = try? await store.changes(after: &cursor), !changes.isEmpty else { continue }
            for uri in subscribed.sorted() where Self.affected(uri, by: changes) {
                if !(await notify(uri)) {
                    task = nil
                    return
                }
            }
        }
    }

    static func affected(_ uri: String, by changes: [AlertStore.Change]) -> Bool {
        switch try? SentinelResources.target(uri) {
        case .recentAnomalies?: return !changes.isEmpty
        case .openIncidents?: return changes.contains { $0.type == "incident" }
        case .session(let sid)?, .timeline(let sid)?, .chart(let sid)?: return changes.contains { $0.sessionID == sid }
        case .rules?, nil: return false
        }
    }
}
