import CMCDDetection
import SentinelAlerts
import SentinelJSON

/// The incident and silence tools: read-only views of the alerts table's cohort incidents,
/// the viewers' findings inside them, and the operators' silences.
extension SentinelTools {
    static let incidentSpecs: [Spec] = [
        Spec(
            name: "list_incidents", title: "Incidents",
            description:
                "Cohort incidents (many viewers of one edge, content or both at once), newest first: scope, rule, value against threshold or baseline, affected and total sessions.",
            parameters: [
                ("since", "string", "How far back, like time_range (default -24h)."), ("status", "string", "firing or resolved."),
                ("edge_location", "string", "Only incidents on this edge location."), cid, limit, cursor,
            ], output: [("incidents", "[finding]"), ("since", "string")] + paged,
            run: { try await $0.incidents($1) }, group: .incidents),
        Spec(
            name: "get_incident", title: "One incident",
            description:
                "One incident by id: its finding, its notifications, and the viewers' findings inside its scope and time (counts by type, and the sessions hit hardest).",
            parameters: [("id", "string", "The incident id (32 hex digits).")], required: ["id"], output: [("incident", "finding"), ("notifications", "[object]"), ("viewer_findings", "object"), ("viewer_findings_truncated", "boolean"), ("hardest_hit_sessions", "[string]"), ("~id", "string")],
            run: { try await $0.incident($1) }, group: .incidents),
        Spec(
            name: "list_silences", title: "Silences",
            description: "Operators' silences (cmcd-sentinel silence add): matchers, start, end, creator and comment; active and coming ones unless all is true.",
            parameters: [("all", "boolean", "Also silences that ended or were expired (default false).")], output: [("silences", "[silence]")],
            run: { try await $0.silenceList($1) }, group: .silences),
    ]

    func incidents(_ input: ToolInput) async throws -> (String, JSONValue) {
        let since = try input.timeRange("since", default: "-24h")
        let (limit, offset) = try input.page()
        var query = AlertStore.Query()
        query.since = AlertStore.nowMs() - since.milliseconds
        query.type = FindingType.incident.rawValue
        query.status = try input.choice("status", ["firing", "resolved"])
        query.edgeLocation = try input.string("edge_location", maxLength: 64)
        query.contentID = try input.string("cmcd_cid")
        let page = try await alertPage(query, limit: limit, offset: offset)
        let open = page.alerts.filter { $0.status == "firing" }.count
        return (
            "\(page.alerts.count) incidents in the last \(since.text.dropFirst()), \(open) still firing\(page.more ? " (more exist)" : "").",
            .object([("status", .string("success")), ("incidents", .array(page.alerts.map(Self.alertJSON))), ("since", .string(since.text))] + page.fields)
        )
    }

    func incident(_ input: ToolInput) async throws -> (String, JSONValue) {
        let id = try input.requiredString("id", maxLength: 64)
        let store = try requireStore()
        guard let alert = try await store.alert(id: id), alert.type == FindingType.incident.rawValue else {
            return ("No incident with id \(id).", .object([("status", .string("not_found")), ("id", .string(id))]))
        }
        let notifications: [JSONValue] = try await store.notifications(alertID: id).map { n in
            .object([
                ("event_id", .string(n.id)), ("route", .string(n.route)), ("kind", .string(n.kind)), ("state", .string(n.state.rawValue)),
                ("delivered_at", Self.time(n.deliveredAt)), ("last_error", n.lastError.map(JSONValue.string) ?? .null),
            ])
        }
        // The viewers' findings inside the incident: its scope's edge and content, from its
        // start to its end (or now).
        var query = AlertStore.Query()
        query.since = alert.startedAt
        query.edgeLocation = alert.edgeLocation
        query.contentID = alert.contentID
        query.limit = 10_001
        let end = alert.resolvedAt ?? Int64.max
        let inside = (alert.edgeLocation != nil || alert.contentID != nil ? try await store.alerts(matching: query) : []).filter {
            $0.type != FindingType.incident.rawValue && $0.startedAt <= end
        }
        var byType: [String: Int] = [:]
        var perSession: [String: Int] = [:]
        for a in inside.prefix(10_000) {
            byType[a.type, default: 0] += 1
            perSession[a.sessionID, default: 0] += a.severity == "critical" ? 2 : 1
        }
        let hardest = perSession.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(10).map { JSONValue.string($0.key) }
        return (
            "\(alert.severity) \(alert.status) incident: \(alert.summary) (\(inside.count) viewer findings inside it)",
            .object([
                ("status", .string("success")), ("incident", Self.alertJSON(alert)), ("notifications", .array(notifications)),
                ("viewer_findings", .object(byType.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
                ("viewer_findings_truncated", .bool(inside.count > 10_000)), ("hardest_hit_sessions", .array(Array(hardest))),
            ])
        )
    }

    func silenceList(_ input: ToolInput) async throws -> (String, JSONValue) {
        let all = try input.bool("all") ?? false
        let now = AlertStore.nowMs()
        let silences = try await requireStore().silences(activeAt: all ? nil : now, limit: Self.cap)
        let items = silences.map { $0.jsonValue(at: now) }
        return ("\(items.count) \(all ? "" : "active or coming ")silences.", .object([("status", .string("success")), ("silences", .array(items))]))
    }
}

extension SentinelTools {
    /// Offered only with `--allow-writes`.
    static let writeSpecs: [Spec] = [
        Spec(
            name: "create_silence", title: "Silence notifications",
            description:
                "Holds back the webhook notifications of alerts matching every matcher given (type, severity, edge_location, cmcd_cid, cmcd_sid, scope) for a duration; findings are still recorded. The same call within a minute returns the same silence.",
            parameters: [
                ("type", "string", "A finding type, e.g. incident or buffer_drop."), ("severity", "string", "warning or critical."),
                ("edge_location", "string", "CloudFront edge location."), cid, sid,
                ("scope", "string", "An incident's cohort, e.g. stream_type=live or content_id=news,edge_location=FRA56-C2."),
                ("duration", "string", "How long: 30m, 2h, 1d (at most 30d)."),
                ("created_by", "string", "Who asks (recorded as mcp:TOKEN:NAME, TOKEN the bearer token's name over HTTP, stdio otherwise)."), ("comment", "string", "Why (recorded)."),
            ], required: ["duration", "created_by"], output: [("silence", "silence")],
            run: { try await $0.createSilence($1) }, writes: true, group: .silences),
        Spec(
            name: "expire_silence", title: "End a silence", description: "Ends a silence now; ending one already ended changes nothing.",
            parameters: [("id", "string", "The silence id.")], required: ["id"], output: [("id", "string")],
            run: { try await $0.expireSilence($1) }, writes: true, group: .silences),
    ]

    func createSilence(_ input: ToolInput) async throws -> (String, JSONValue) {
        var matchers: [String: String] = [:]
        for (argument, key) in [
            ("type", "type"), ("severity", "severity"), ("edge_location", "edge_location"), ("cmcd_cid", "content_id"), ("cmcd_sid", "session_id"),
            ("scope", "scope"),
        ] {
            if let value = try input.string(argument) { matchers[key] = value }
        }
        let durationText = try input.requiredString("duration", maxLength: 16)
        let duration = try TimeRange("-" + durationText)
        guard duration.milliseconds <= 30 * 86_400_000 else { throw BadArgument("duration must be at most 30d") }
        let creator = "mcp:\(caller):" + (try input.requiredString("created_by", maxLength: 64))
        let comment = try input.string("comment", maxLength: 1_024) ?? ""
        let now = AlertStore.nowMs()
        // The same request within a minute is the same silence (idempotent).
        let id = "sil_" + FNV1a128.hex(of: matchers.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] } + [durationText, creator, comment, String(now / 60_000)]).prefix(20)
        let store = try requireStore()
        if let existing = try await store.silences(activeAt: now).first(where: { $0.id == id }) {
            return ("Silence \(id) already exists.", .object([("status", .string("success")), ("silence", existing.jsonValue(at: now))]))
        }
        let silence: Silence
        do {
            silence = try Silence(
                id: id, matchers: matchers, startsAt: now, endsAt: now + duration.milliseconds, createdBy: creator, comment: comment, createdAt: now)
        } catch {
            throw BadArgument("\(error)")
        }
        try await store.addSilence(silence)
        return ("Silence \(id) holds back \(silence.matchers.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")) for \(durationText).",
            .object([("status", .string("success")), ("silence", silence.jsonValue(at: now))]))
    }

    func expireSilence(_ input: ToolInput) async throws -> (String, JSONValue) {
        let id = try input.requiredString("id", maxLength: 64)
        let ended = try await requireStore().expireSilence(id: id)
        return (ended ? "Silence \(id) ended." : "No active silence \(id): nothing to end.", .object([("status", .string(ended ? "success" : "not_found")), ("id", .string(id))]))
    }
}
