import CMCDDetection
import Foundation
import SentinelJSON

/// An operator's silence: while it is active (wall clock), notifications of the alerts it
/// matches are not sent but kept in the outbox as `silenced`. Every matcher given must hold
/// (equality); those left nil match anything.
public struct Silence: Sendable, Equatable {
    public var id: String
    public var type: String?
    public var severity: String?
    public var edgeLocation: String?
    public var contentID: String?
    public var sessionID: String?
    /// An incident's scope, `dimension=value` pairs joined by commas, sorted by dimension
    /// (`content_id=news,edge_location=FRA56-C2`): only incidents of exactly that cohort.
    public var scope: String?
    /// Wall clock, ms.
    public var startsAt: Int64
    public var endsAt: Int64
    public var createdBy: String
    public var comment: String
    public var createdAt: Int64
    /// When it was expired by hand (nil: runs until `endsAt`).
    public var expiredAt: Int64?
    /// A maintenance window: between `startsAt` and `endsAt` it is active only inside it.
    public var recurrence: MaintenanceWindow?

    /// The matcher keys, as `silence add --match KEY=VALUE` takes them.
    public static let matcherKeys = ["type", "severity", "edge_location", "content_id", "session_id", "scope"]

    /// `edge_location=FRA56-C2,content_id=news` in the canonical order (dimensions sorted), or
    /// an error naming what is wrong. A comma starts a pair only when a name (`[a-z_]+`) and
    /// `=` follow it, so a value may hold commas (`content_id=Film, Part 2`), as titles do.
    public static func canonicalScope(_ text: String) throws -> String {
        var parts: [Substring] = []
        var start = text.startIndex
        for comma in text.indices where text[comma] == "," {
            let rest = text[text.index(after: comma)...]
            let name = rest.prefix { ("a"..."z").contains($0) || $0 == "_" }
            if !name.isEmpty, rest.dropFirst(name.count).first == "=" {
                parts.append(text[start..<comma])
                start = text.index(after: comma)
            }
        }
        parts.append(text[start...])
        var pairs: [(String, String)] = []
        for part in parts {
            guard let equals = part.firstIndex(of: "="), !part[part.index(after: equals)...].isEmpty else {
                throw SQLError("scope '\(text.prefix(60))' is not dimension=value[,dimension=value]")
            }
            let key = String(part[..<equals]).trimmingCharacters(in: .whitespaces)
            guard CohortDimension(rawValue: key) != nil else {
                throw SQLError("'\(key.prefix(40))' is not a cohort dimension (\(CohortDimension.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard !pairs.contains(where: { $0.0 == key }) else { throw SQLError("scope names \(key) twice") }
            pairs.append((key, String(part[part.index(after: equals)...])))
        }
        return pairs.sorted { $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
    }

    public init(
        id: String = "sil_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20),
        matchers: [String: String], startsAt: Int64, endsAt: Int64, createdBy: String, comment: String, createdAt: Int64,
        recurrence: MaintenanceWindow? = nil
    ) throws {
        for key in matchers.keys where !Self.matcherKeys.contains(key) {
            throw SQLError("'\(key.prefix(40))' is not a silence matcher (\(Self.matcherKeys.joined(separator: ", ")))")
        }
        guard !matchers.isEmpty else { throw SQLError("a silence needs at least one matcher (\(Self.matcherKeys.joined(separator: ", ")))") }
        for value in matchers.values where value.isEmpty || value.utf8.count > 256 {
            throw SQLError("a matcher value must be 1 to 256 bytes")
        }
        if let type = matchers["type"], FindingType(rawValue: type) == nil {
            throw SQLError("type '\(type.prefix(40))' is not a finding type (\(FindingType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        if let severity = matchers["severity"], Severity(rawValue: severity) == nil {
            throw SQLError("severity must be warning or critical")
        }
        guard endsAt > startsAt else { throw SQLError("a silence must end after it starts") }
        guard !createdBy.isEmpty, createdBy.utf8.count <= 128 else { throw SQLError("the creator must be 1 to 128 bytes") }
        guard comment.utf8.count <= 4_096 else { throw SQLError("the comment must be at most 4096 bytes") }
        self.id = String(id)
        scope = try matchers["scope"].map(Self.canonicalScope)
        type = matchers["type"]
        severity = matchers["severity"]
        edgeLocation = matchers["edge_location"]
        contentID = matchers["content_id"]
        sessionID = matchers["session_id"]
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.createdBy = createdBy
        self.comment = comment
        self.createdAt = createdAt
        self.recurrence = recurrence
    }

    /// The matchers as `key=value` pairs, in a stable order.
    public var matchers: [(key: String, value: String)] {
        zip(Self.matcherKeys, [type, severity, edgeLocation, contentID, sessionID, scope]).compactMap { key, value in value.map { (key, $0) } }
    }

    /// `active`, `waiting` (a maintenance window between its openings), `pending` (not started),
    /// `ended` or `expired`.
    public func state(at now: Int64) -> String {
        if expiredAt != nil { return "expired" }
        if now >= endsAt { return "ended" }
        if now < startsAt { return "pending" }
        return isActive(at: now) ? "active" : "waiting"
    }

    public func isActive(at now: Int64) -> Bool {
        expiredAt == nil && startsAt <= now && now < endsAt && (recurrence?.contains(now) ?? true)
    }

    /// The silence as JSON, as the HTTP API and the MCP tools show it.
    public func jsonValue(at now: Int64) -> JSONValue {
        let time = { (ms: Int64?) in ms.map { JSONValue.string(RFC3339.format(milliseconds: $0)) } ?? .null }
        return .object([
            ("id", .string(id)), ("matchers", .object(matchers.map { ($0.key, .string($0.value)) })), ("state", .string(state(at: now))),
            ("every", recurrence.map { .string("\($0.text) \($0.timeZone.identifier)") } ?? .null), ("starts_at", time(startsAt)),
            ("ends_at", time(endsAt)), ("expired_at", time(expiredAt)), ("created_by", .string(createdBy)), ("comment", .string(comment)),
        ])
    }

    /// `90s`, `30m`, `2h`, `1d` (or plain milliseconds) in milliseconds, at most 366 days.
    public static func milliseconds(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000]
        if let unit = text.last.flatMap({ units[$0] }), let n = Int64(text.dropLast()), n > 0, n <= 366 * 86_400_000 / unit { return n * unit }
        if let n = Int64(text), n > 0, n <= 366 * 86_400_000 { return n }
        return nil
    }

    public static func == (a: Silence, b: Silence) -> Bool {
        a.id == b.id && a.matchers.map(\.key) == b.matchers.map(\.key) && a.matchers.map(\.value) == b.matchers.map(\.value)
            && a.startsAt == b.startsAt && a.endsAt == b.endsAt && a.createdBy == b.createdBy && a.comment == b.comment
            && a.createdAt == b.createdAt && a.expiredAt == b.expiredAt && a.recurrence == b.recurrence
    }
}

extension AlertStore {
    static let silenceColumns =
        "id, type, severity, edge_location, content_id, session_id, starts_at, ends_at, created_by, comment, created_at, expired_at, recurrence, time_zone, scope"

    /// Adds a silence (it applies from the next delivery round of every daemon sharing the table).
    public func addSilence(_ silence: Silence) async throws {
        let optional = { (value: String?) in value.map(SQLValue.text) ?? .null }
        try await database.query(
            "INSERT INTO silences (\(Self.silenceColumns)) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13, $14)",
            [
                .text(silence.id), optional(silence.type), optional(silence.severity), optional(silence.edgeLocation), optional(silence.contentID),
                optional(silence.sessionID), .int(silence.startsAt), .int(silence.endsAt), .text(silence.createdBy), .text(silence.comment),
                .int(silence.createdAt), optional(silence.recurrence?.text), optional(silence.recurrence?.timeZone.identifier), optional(silence.scope),
            ])
    }

    /// Silences, newest first: those active or still to come at `now`, or all of them.
    public func silences(activeAt now: Int64? = nil, limit: Int = 1_000) async throws -> [Silence] {
        if let now {
            return try await silenceRows(
                "SELECT \(Self.silenceColumns) FROM silences WHERE expired_at IS NULL AND ends_at > $1 ORDER BY created_at DESC, id LIMIT $2",
                [.int(now), .int(Int64(limit))])
        }
        return try await silenceRows("SELECT \(Self.silenceColumns) FROM silences ORDER BY created_at DESC, id LIMIT $1", [.int(Int64(limit))])
    }

    /// The silences a query's rows describe.
    func silenceRows(_ sql: String, _ values: [SQLValue]) async throws -> [Silence] {
        try await database.query(sql, values).compactMap(Self.silence(row:))
    }

    static func silence(row: SQLRow) -> Silence? {
        guard row.count == 15 else { return nil }
        var matchers: [String: String] = [:]
        for (key, value) in zip(Silence.matcherKeys, row[1...5]) { if let text = value.text { matchers[key] = text } }
        if let scope = row[14].text { matchers["scope"] = scope }
        let recurrence = row[12].text.flatMap { text in row[13].text.flatMap { try? MaintenanceWindow(text, timeZone: $0) } }
        guard
            var silence = try? Silence(
                id: row[0].text ?? "", matchers: matchers, startsAt: row[6].int ?? 0, endsAt: row[7].int ?? 0, createdBy: row[8].text ?? "",
                comment: row[9].text ?? "", createdAt: row[10].int ?? 0, recurrence: recurrence)
        else { return nil }
        silence.expiredAt = row[11].int
        return silence
    }

    /// Ends a silence now; false when there is no such silence or it had already ended.
    @discardableResult
    public func expireSilence(id: String, now: Int64 = AlertStore.nowMs()) async throws -> Bool {
        let rows = try await database.query(
            "UPDATE silences SET expired_at = $1 WHERE id = $2 AND expired_at IS NULL AND ends_at > $1 RETURNING id", [.int(now), .text(id)])
        return !rows.isEmpty
    }

    /// The recurring silences (maintenance windows) whose window is open now: their local
    /// time is worked out here, not in SQL.
    func openMaintenanceWindows(now: Int64) async throws -> [String] {
        try await silences(activeAt: now).filter { $0.recurrence != nil && $0.isActive(at: now) }.map(\.id)
    }

    /// SQL that marks the endpoint's pending notifications whose alert an active silence
    /// matches as `silenced`, naming the silence. `openWindows`: the recurring silences open now.
    static func silencing(endpoint: String, now: Int64, openWindows: [String]) -> SQLStatement {
        let match = silenceMatches(now: "$2", openWindows: openWindows.indices.map { $0 + 3 })
        return SQLStatement(
            """
            UPDATE notifications SET state = 'silenced', last_error = (
                SELECT 'silenced by ' || s.id FROM silences s, alerts a WHERE a.id = notifications.alert_id AND \(match) ORDER BY s.id LIMIT 1)
            WHERE state = 'pending' AND endpoint = $1 AND lease_until <= $2 AND EXISTS (
                SELECT 1 FROM silences s, alerts a WHERE a.id = notifications.alert_id AND \(match))
            """, [.text(endpoint), .int(now)] + openWindows.map(SQLValue.text))
    }

    /// SQL true when an active silence `s` matches the alert `a`: `now` names the parameter
    /// holding the time, `openWindows` the parameters naming the recurring silences open now.
    static func silenceMatches(now: String, openWindows: [Int]) -> String {
        let windows = openWindows.map { "$\($0)" }.joined(separator: ", ")
        return """
            s.expired_at IS NULL AND s.starts_at <= \(now) AND s.ends_at > \(now)
            AND (s.recurrence IS NULL\(windows.isEmpty ? "" : " OR s.id IN (\(windows))"))
            AND (s.type IS NULL OR s.type = a.type) AND (s.severity IS NULL OR s.severity = a.severity)
            AND (s.edge_location IS NULL OR s.edge_location = a.edge_location) AND (s.content_id IS NULL OR s.content_id = a.content_id)
            AND (s.session_id IS NULL OR s.session_id = a.session_id) AND (s.scope IS NULL OR s.scope = a.scope)
            """
    }
}
