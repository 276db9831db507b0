import CMCDDetection
import SentinelJSON

/// The viewers' notifications an incident folded: how many, of whom, and a few examples,
/// for the incident's webhook.
public struct FoldedSummary: Sendable, Equatable {
    public var notifications = 0
    public var sessions = 0
    public var byType: [String: Int] = [:]
    /// The most severe first, then the earliest.
    public var examples: [AlertRecord] = []

    public init() {}

    /// `{"notifications","sessions","by_type":{...},"examples":[{"session_id",...}]}`.
    public var jsonValue: JSONValue {
        .object([
            ("notifications", .int(Int64(notifications))), ("sessions", .int(Int64(sessions))),
            ("by_type", .object(byType.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
            (
                "examples",
                .array(
                    examples.map { a in
                        .object([
                            ("id", .string(a.id)), ("type", .string(a.type)), ("severity", .string(a.severity)),
                            ("session_id", .string(a.sessionID)), ("content_id", a.contentID.map(JSONValue.string) ?? .null),
                            ("edge_location", a.edgeLocation.map(JSONValue.string) ?? .null), ("summary", .string(a.summary)),
                        ])
                    })
            ),
        ])
    }
}

/// Groups, incident updates and rate limits: the outbox queries behind a route's `group_by`,
/// `group_interval_ms` and `max_per_hour`.
extension AlertStore {
    /// Most members one group webhook carries; the rest form the next group.
    public static let maxGroupMembers = 100

    /// Takes a claimed notification's group: every pending member of its group not yet in a
    /// delivery (or, when it was in one before, exactly that delivery's members, whatever
    /// joined the group since), leased to
    /// `owner` and stamped with the delivery's webhook id, which stays theirs across retries and
    /// restarts. Rows this owner holds (claimed in the same round) join; the caller skips them
    /// afterwards. The conditions are checked again on each row as it is updated, so a
    /// dispatcher that waited for another's lock takes nothing the other just took (PostgreSQL
    /// re-reads only the outer WHERE). Returns the members, the claimed one among them.
    public func claimGroup(of leader: NotificationRecord, owner: String, now: Int64, leaseUntil: Int64) async throws -> [NotificationRecord] {
        guard let key = leader.groupKey else { return [leader] }
        let event = leader.groupEvent ?? "evt_" + FNV1a128.hex(of: ["group", key, leader.id])
        // A member added since the round's silencing ran is checked here: a silence that
        // matches it leaves it to be silenced next round.
        let openWindows = try await openMaintenanceWindows(now: now)
        let rows = try await database.query(
            """
            UPDATE notifications SET group_event = $1, lease_until = $2, lease_owner = $3
            WHERE id IN (
                SELECT n.id FROM notifications n
                WHERE n.state = 'pending' AND n.kind = $4
                  AND (n.group_event = $1 OR ($8 = 0 AND n.group_event IS NULL AND n.group_key = $5))
                  AND (n.lease_until <= $6 OR n.lease_owner = $3)
                  AND (n.kind <> 'resolved' OR NOT EXISTS (
                      SELECT 1 FROM notifications f
                      WHERE f.alert_id = n.alert_id AND f.route = n.route AND f.kind = 'firing' AND f.state = 'pending'))
                  AND NOT EXISTS (
                      SELECT 1 FROM silences s, alerts a
                      WHERE a.id = n.alert_id AND \(Self.silenceMatches(now: "$6", openWindows: openWindows.indices.map { $0 + 9 })))
                ORDER BY CASE WHEN n.group_event = $1 THEN 0 ELSE 1 END, n.created_at, n.id
                LIMIT $7)
            AND state = 'pending' AND (group_event = $1 OR ($8 = 0 AND group_event IS NULL AND group_key = $5))
            AND (lease_until <= $6 OR lease_owner = $3)
            RETURNING \(Self.notificationColumns)
            """,
            [
                .text(event), .int(leaseUntil), .text(owner), .text(leader.kind), .text(key), .int(now),
                .int(Int64(Self.maxGroupMembers)), .int(leader.groupEvent == nil ? 0 : 1),
            ] + openWindows.map(SQLValue.text))
        let members = rows.map(Self.notification).sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        return members.isEmpty ? [leader] : members
    }

    /// When the group's last webhook was delivered (nil: never).
    public func lastGroupDelivery(groupKey: String) async throws -> Int64? {
        try await database.query(
            "SELECT MAX(delivered_at) FROM notifications WHERE group_key = $1 AND state = 'delivered'", [.text(groupKey)]
        ).first?.first?.int
    }

    /// Gives a lease back unsent, to be claimed again at `nextAttemptAt`.
    public func release(id: String, owner: String, nextAttemptAt: Int64) async throws {
        try await database.query(
            "UPDATE notifications SET lease_until = 0, next_attempt_at = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'pending'",
            [.int(nextAttemptAt), .text(id), .text(owner)])
    }

    /// Webhooks delivered on `route` since `since` (a group's members count once).
    public func deliveredWebhooks(route: String, since: Int64) async throws -> Int {
        Int(
            try await database.query(
                "SELECT COUNT(DISTINCT COALESCE(group_event, id)) FROM notifications WHERE route = $1 AND state = 'delivered' AND delivered_at > $2",
                [.text(route), .int(since)]
            ).first?.first?.int ?? 0)
    }

    /// Keeps leased notifications as `rate_limited` (not sent), with the resolves of their
    /// episodes already queued on the same route, so no receiver hears an end without a start.
    public func markRateLimited(ids: [String], owner: String, reason: String) async throws {
        let reason = SQLValue.text(String(reason.prefix(1000)))
        try await database.run([
            SQLStatement(
                """
                UPDATE notifications SET state = 'rate_limited', last_error = $1
                WHERE state = 'pending' AND kind = 'resolved'
                  AND (alert_id, route) IN (
                    SELECT alert_id, route FROM notifications WHERE kind = 'firing' AND lease_owner = $2 AND state = 'pending'
                    AND id IN (\(Self.placeholders(ids.count, from: 3))))
                """, [reason, .text(owner)] + ids.map(SQLValue.text)),
            SQLStatement(
                """
                UPDATE notifications SET state = 'rate_limited', last_error = $1, lease_until = 0
                WHERE lease_owner = $2 AND state = 'pending' AND id IN (\(Self.placeholders(ids.count, from: 3)))
                """, [reason, .text(owner)] + ids.map(SQLValue.text)),
        ])
    }

    /// Replaces a notification's body before its first attempt (an incident's, with the
    /// viewers folded into it), so that retries send the same one.
    public func updatePayload(id: String, owner: String, payload: String) async throws {
        try await database.query(
            "UPDATE notifications SET payload = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'pending' AND attempts = 0",
            [.text(payload), .text(id), .text(owner)])
    }

    /// The viewers' notifications folded into an incident.
    public func foldedSummary(incidentID: String, examples: Int = 5) async throws -> FoldedSummary {
        let results = try await database.run([
            SQLStatement(
                """
                SELECT a.type, COUNT(*) FROM notifications n JOIN alerts a ON a.id = n.alert_id
                WHERE n.folded_into = $1 AND n.kind = 'firing' GROUP BY a.type
                """, [.text(incidentID)]),
            SQLStatement(
                """
                SELECT COUNT(DISTINCT a.session_id) FROM notifications n JOIN alerts a ON a.id = n.alert_id
                WHERE n.folded_into = $1 AND n.kind = 'firing'
                """, [.text(incidentID)]),
            SQLStatement(
                """
                SELECT \(Self.alertColumns) FROM alerts WHERE id IN (
                    SELECT alert_id FROM notifications WHERE folded_into = $1 AND kind = 'firing')
                ORDER BY CASE WHEN severity = 'critical' THEN 0 ELSE 1 END, started_at, id LIMIT $2
                """, [.text(incidentID), .int(Int64(examples))]),
        ])
        var summary = FoldedSummary()
        for row in results[0] {
            if let type = row[0].text {
                summary.byType[type] = Int(row[1].int ?? 0)
                summary.notifications += Int(row[1].int ?? 0)
            }
        }
        summary.sessions = Int(results[1].first?.first?.int ?? 0)
        summary.examples = results[2].map(Self.alert)
        return summary
    }

    /// Firing incidents on `route` whose last webhook went out before `before` and into which
    /// viewers' notifications were folded since: due an `update`. Returns each with the number
    /// of updates so far.
    public func incidentsDueForUpdate(route: String, before: Int64, limit: Int) async throws -> [(alert: AlertRecord, updates: Int)] {
        let rows = try await database.query(
            """
            SELECT \(Self.alertColumns.split(separator: ",").map { "a." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")),
                (SELECT COUNT(*) FROM notifications u WHERE u.alert_id = a.id AND u.route = $1 AND u.kind = 'update')
            FROM alerts a
            WHERE a.type = 'incident' AND a.status = 'firing'
              AND NOT EXISTS (SELECT 1 FROM notifications p WHERE p.alert_id = a.id AND p.route = $1 AND p.state = 'pending')
              AND EXISTS (
                  SELECT 1 FROM notifications v WHERE v.folded_into = a.id AND v.kind = 'firing' AND v.created_at > (
                      SELECT MAX(d.delivered_at) FROM notifications d WHERE d.alert_id = a.id AND d.route = $1 AND d.state = 'delivered'))
              AND (SELECT MAX(d.delivered_at) FROM notifications d WHERE d.alert_id = a.id AND d.route = $1 AND d.state = 'delivered') < $2
            ORDER BY a.started_at, a.id
            LIMIT $3
            """, [.text(route), .int(before), .int(Int64(limit))])
        return rows.map { (Self.alert($0), Int($0[13].int ?? 0)) }
    }
}

extension AlertStore {
    /// One alert written since a point in time: what a resource subscription needs to know.
    public struct Change: Sendable, Equatable {
        public var id: String
        public var type: String
        public var sessionID: String
        /// Wall clock of the write, ms: taken before the write commits, so a concurrent
        /// write (another daemon's, a retried one) may commit later with an earlier time
        /// (`ChangeCursor` reads again behind the newest).
        public var updatedAt: Int64

        public init(id: String, type: String, sessionID: String, updatedAt: Int64) {
            (self.id, self.type, self.sessionID, self.updatedAt) = (id, type, sessionID, updatedAt)
        }
    }

    /// Alerts written after `since` (wall clock, ms), oldest first: the first `limit`, and the
    /// rest of the last one's millisecond. A batch's alerts share one time, so a caller that
    /// goes on from the newest one returned skips none.
    public func changes(since: Int64, limit: Int = 1_000) async throws -> [Change] {
        // `status IN` lets the alerts_status index (status, updated_at) find them: every alert
        // is firing or resolved, and a scan of the whole table per subscriber and tick would not do.
        let page = try await database.query(Self.changesPageSQL, [.int(since), .int(Int64(max(limit, 1)))]).map(Self.change)
        guard page.count >= limit, let last = page.last?.updatedAt else { return page }
        let tied = try await database.query(Self.changesAtSQL, [.int(last)]).map(Self.change)
        return page.filter { $0.updatedAt < last } + tied
    }

    private static let changeColumns = "SELECT id, type, session_id, updated_at FROM alerts WHERE status IN ('firing', 'resolved')"
    static let changesPageSQL = "\(changeColumns) AND updated_at > $1 ORDER BY updated_at LIMIT $2"
    static let changesAtSQL = "\(changeColumns) AND updated_at = $1"

    static func change(_ row: SQLRow) -> Change {
        Change(id: row[0].text ?? "", type: row[1].text ?? "", sessionID: row[2].text ?? "", updatedAt: row[3].int ?? 0)
    }

    /// Every change after the cursor's position, read page by page (`changes(since:limit:)`),
    /// each reported once (`ChangeCursor.take`).
    /// A failed read leaves the cursor where it was.
    public func changes(after cursor: inout ChangeCursor, limit: Int = 1_000) async throws -> [Change] {
        var next = cursor
        var from = next.readFrom
        var fresh: [Change] = []
        while true {
            let page = try await changes(since: from, limit: limit)
            fresh += next.take(page)
            guard page.count >= limit, let last = page.last?.updatedAt, last > from else { break }
            from = last
        }
        cursor = next
        return fresh
    }
}

/// Where a poller of the alerts table's changes is (a resource subscription). A write's
/// `updated_at` is taken before it commits, so a write that commits later with an earlier
/// time (another daemon's on the shared table, one held by a lock) would be skipped by a
/// poller that went on from the newest time it saw. So each read starts `overlapMs` behind the
/// newest change seen, and the changes seen since then are remembered, so that each is
/// reported once. Pure: the poller reads, the cursor decides.
public struct ChangeCursor: Sendable {
    /// How far behind the newest change each read starts: longer than a write takes to
    /// commit once its time is taken.
    public let overlapMs: Int64
    /// Changes at or before this (the subscription's start) are never reported.
    let floor: Int64
    /// The newest change seen.
    private(set) var newest: Int64
    /// Changes seen within `overlapMs` of `newest`: id and time.
    private var seen: Set<Seen> = []

    struct Seen: Hashable {
        var id: String
        var updatedAt: Int64
    }

    /// A cursor reporting changes written after `since` (ms).
    public init(since: Int64, overlapMs: Int64 = 30_000) {
        (floor, newest, self.overlapMs) = (since, since, max(overlapMs, 0))
    }

    /// Where the next read starts (exclusive).
    public var readFrom: Int64 { max(floor, newest - overlapMs) }

    /// The changes of a read not reported before, in their order.
    public mutating func take(_ changes: [AlertStore.Change]) -> [AlertStore.Change] {
        var fresh: [AlertStore.Change] = []
        for change in changes where change.updatedAt > floor {
            guard seen.insert(Seen(id: change.id, updatedAt: change.updatedAt)).inserted else { continue }
            fresh.append(change)
            newest = max(newest, change.updatedAt)
        }
        let horizon = newest - overlapMs
        if seen.contains(where: { $0.updatedAt <= horizon }) { seen = seen.filter { $0.updatedAt > horizon } }
        return fresh
    }
}
