import CMCDDetection
import Foundation
import Logging
import ServiceLifecycle
import SentinelHTTP
import SentinelJSON
import SentinelSinks

/// A notification to put in the outbox together with its alert: written in the same
/// transaction, delivered later by the webhook dispatcher.
public struct OutboxEntry: Sendable, Equatable {
    /// `update`: more viewers' notifications were folded into an open incident since its last one.
    public enum Kind: String, Sendable { case firing, resolved, `repeat`, update }
    /// Stable event id (`webhook-id`): the same episode, route and kind always give the same id,
    /// so replays and restarts never add a second row.
    public var id: String
    public var alertID: String
    public var route: String
    public var endpoint: String
    public var kind: Kind
    /// The JSON body to send.
    public var payload: String
    /// Held back this long before the first attempt (the route's `group_wait_ms`): an
    /// incident that covers the finding meanwhile folds it.
    public var delayMs: Int64
    /// The route's group (a hash of the route, the kind and the `group_by` values): due
    /// notifications of one group go out as one webhook. Nil: alone.
    public var groupKey: String?

    public init(
        id: String, alertID: String, route: String, endpoint: String, kind: Kind, payload: String, delayMs: Int64 = 0, groupKey: String? = nil
    ) {
        self.groupKey = groupKey
        self.id = id
        self.alertID = alertID
        self.route = route
        self.endpoint = endpoint
        self.kind = kind
        self.payload = payload
        self.delayMs = delayMs
    }
}

/// An alert row: one episode, its latest state.
public struct AlertRecord: Sendable, Equatable {
    public var id: String
    public var type: String
    public var status: String
    public var severity: String
    public var sessionID: String
    public var contentID: String?
    public var edgeLocation: String?
    public var startedAt: Int64
    public var detectedAt: Int64
    public var resolvedAt: Int64?
    public var summary: String
    /// The details object as JSON text.
    public var details: String
    public var updatedAt: Int64

    /// The alert in the finding's JSON shape.
    public var findingJSON: JSONValue {
        let parsedDetails = (try? JSONParser.parse(details, limits: .init(maxDepth: 8, maxElements: 10_000))) ?? .object([])
        return .object([
            ("id", .string(id)), ("type", .string(type)), ("status", .string(status)), ("severity", .string(severity)),
            ("session_id", sessionID.isEmpty ? .null : .string(sessionID)), ("content_id", contentID.map(JSONValue.string) ?? .null),
            ("edge_location", edgeLocation.map(JSONValue.string) ?? .null),
            ("started_at", .string(RFC3339.format(milliseconds: startedAt))),
            ("detected_at", .string(RFC3339.format(milliseconds: detectedAt))), ("summary", .string(summary)),
            ("details", parsedDetails),
        ])
    }
}

/// A notification row of the outbox.
public struct NotificationRecord: Sendable, Equatable {
    /// `folded`: not sent, part of an incident's notification instead.
    /// `silenced`: not sent, an operator's silence matched it.
    /// `rate_limited`: not sent, its route had sent `max_per_hour` webhooks in the last hour.
    public enum State: String, Sendable { case pending, delivered, dead, folded, silenced, rateLimited = "rate_limited" }
    public var id: String
    public var alertID: String
    public var route: String
    public var endpoint: String
    public var kind: String
    public var payload: String
    public var state: State
    public var attempts: Int
    /// Wall clock, ms.
    public var createdAt: Int64
    public var nextAttemptAt: Int64
    public var lastStatus: Int?
    public var lastError: String?
    public var deliveredAt: Int64?
    /// The route's group, and the webhook id of the group delivery it was taken into.
    public var groupKey: String?
    public var groupEvent: String?
    /// The incident it was folded into.
    public var foldedInto: String?
}

/// The alerts table and its notification outbox, on SQLite or PostgreSQL with the same schema.
///
/// An alert is an episode, upserted by the finding's deterministic id: a resolved alert stays
/// resolved, a firing one takes newer findings, severity only rises. So replays and several
/// daemons writing the same episode never duplicate or regress it.
public final class AlertStore: Service {
    public let database: any SQLDatabase
    let logger: Logger

    public init(database: any SQLDatabase, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// The store at `sqlite:PATH` or a `postgres://` URL, not yet migrated: for a ServiceGroup
    /// that runs it (first, so that it stops last) and calls `migrate()` before using it.
    public static func connect(url: String, logger: Logger) throws -> AlertStore {
        let database: any SQLDatabase
        if url.hasPrefix("sqlite:") {
            database = try SQLiteDatabase(path: String(url.dropFirst("sqlite:".count)))
        } else {
            database = try PostgresDatabase(url: url, logger: logger)
        }
        return AlertStore(database: database, logger: logger)
    }

    /// Opens `sqlite:PATH` or a `postgres://` URL and brings the schema up to date, for a
    /// caller without a ServiceGroup: PostgreSQL's pool runs in a task of its own until `close`.
    public static func open(url: String, logger: Logger) async throws -> AlertStore {
        let store = try connect(url: url, logger: logger)
        (store.database as? PostgresDatabase)?.runInBackground()
        do {
            try await store.migrate()
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    public func close() async { await database.close() }

    /// The database's connections (PostgreSQL's pool) while the ServiceGroup runs.
    public func run() async throws { await database.runConnections() }

    // MARK: - Schema

    /// Schema versions, applied in order, each once (recorded in `sentinel_migrations`).
    static let migrations: [(version: Int64, statements: [String])] = [
        (
            1,
            [
                """
                CREATE TABLE IF NOT EXISTS alerts (
                    id TEXT PRIMARY KEY,
                    type TEXT NOT NULL,
                    status TEXT NOT NULL,
                    severity TEXT NOT NULL,
                    session_id TEXT NOT NULL,
                    content_id TEXT,
                    edge_location TEXT,
                    started_at BIGINT NOT NULL,
                    detected_at BIGINT NOT NULL,
                    resolved_at BIGINT,
                    summary TEXT NOT NULL,
                    details TEXT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (detected_at)",
                "CREATE INDEX IF NOT EXISTS alerts_session ON alerts (session_id, started_at)",
                "CREATE INDEX IF NOT EXISTS alerts_type_status ON alerts (type, status, detected_at)",
                "CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, updated_at)",
                """
                CREATE TABLE IF NOT EXISTS notifications (
                    id TEXT PRIMARY KEY,
                    alert_id TEXT NOT NULL,
                    route TEXT NOT NULL,
                    endpoint TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    state TEXT NOT NULL,
                    attempts BIGINT NOT NULL DEFAULT 0,
                    created_at BIGINT NOT NULL,
                    next_attempt_at BIGINT NOT NULL,
                    lease_until BIGINT NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    last_status BIGINT,
                    last_error TEXT,
                    delivered_at BIGINT
                )
                """,
                "CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, endpoint, next_attempt_at)",
                "CREATE INDEX IF NOT EXISTS notifications_alert ON notifications (alert_id, route, kind)",
            ]
        ),
        (
            2,
            [
                // Each partition's detection state as of `next_offset` (see `DetectionCheckpoint`).
                """
                CREATE TABLE IF NOT EXISTS detection_checkpoints (
                    group_id TEXT NOT NULL,
                    topic TEXT NOT NULL,
                    partition_id BIGINT NOT NULL,
                    next_offset BIGINT NOT NULL,
                    state {bytes} NOT NULL,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (group_id, topic, partition_id)
                )
                """
            ]
        ),
        (
            3,
            [
                // Silences: a notification whose alert matches an active one is not sent but kept
                // as `silenced` (see `Silence`).
                """
                CREATE TABLE IF NOT EXISTS silences (
                    id TEXT PRIMARY KEY,
                    type TEXT,
                    severity TEXT,
                    edge_location TEXT,
                    content_id TEXT,
                    session_id TEXT,
                    starts_at BIGINT NOT NULL,
                    ends_at BIGINT NOT NULL,
                    created_by TEXT NOT NULL,
                    comment TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    expired_at BIGINT
                )
                """,
                "CREATE INDEX IF NOT EXISTS silences_active ON silences (ends_at)",
            ]
        ),
        (
            4,
            [
                // Maintenance windows: a silence active only inside a recurring local window.
                "ALTER TABLE silences ADD COLUMN recurrence TEXT",
                "ALTER TABLE silences ADD COLUMN time_zone TEXT",
            ]
        ),
        (
            5,
            [
                // Groups (a route's group_by): the group a notification belongs to, and the
                // webhook of the group delivery that took it (kept across restarts so that a
                // group is never sent twice with other members). Folding names the incident.
                "ALTER TABLE notifications ADD COLUMN group_key TEXT",
                "ALTER TABLE notifications ADD COLUMN group_event TEXT",
                "ALTER TABLE notifications ADD COLUMN folded_into TEXT",
                "CREATE INDEX IF NOT EXISTS notifications_group ON notifications (group_key, state)",
                "CREATE INDEX IF NOT EXISTS notifications_group_event ON notifications (group_event)",
                "CREATE INDEX IF NOT EXISTS notifications_folded ON notifications (folded_into)",
            ]
        ),
        (
            6,
            [
                // An incident's cohort as text (`Silence.canonicalScope`), for silences by scope.
                "ALTER TABLE alerts ADD COLUMN scope TEXT",
                "ALTER TABLE silences ADD COLUMN scope TEXT",
            ]
        ),
    ]

    /// The newest schema version this build knows.
    public static var schemaVersion: Int64 { migrations.last!.version }

    /// Brings the schema up to date (several daemons at once take turns on PostgreSQL).
    public func migrate() async throws {
        try await database.query("CREATE TABLE IF NOT EXISTS sentinel_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        let applied = Set(try await database.query("SELECT version FROM sentinel_migrations").compactMap { $0.first?.int })
        if let newest = applied.max(), newest > Self.schemaVersion {
            throw SQLError("the alerts table has schema version \(newest), newer than this build's \(Self.schemaVersion): upgrade cmcd-sentinel")
        }
        for migration in Self.migrations where !applied.contains(migration.version) {
            var statements: [SQLStatement] = []
            if database.backend == "postgres" {
                // Daemons starting together migrate one at a time.
                statements.append(SQLStatement("SELECT pg_advisory_xact_lock(4242424242)"))
            }
            let bytes = database.backend == "postgres" ? "BYTEA" : "BLOB"
            statements += migration.statements.map { SQLStatement($0.replacingOccurrences(of: "{bytes}", with: bytes)) }
            statements.append(
                SQLStatement(
                    "INSERT INTO sentinel_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
                    [.int(migration.version), .int(Self.nowMs())]))
            try await database.run(statements)
            logger.info("alerts table: schema version \(migration.version) applied (\(database.backend))")
        }
    }

    // MARK: - Writing findings

    /// Upserts the findings' alerts and adds their notifications to the outbox, in one
    /// transaction. A `resolved` notification is only added where its route already has a
    /// `firing` one for the same episode.
    public func record(_ findings: [Finding], notifications: [OutboxEntry], now: Int64 = AlertStore.nowMs()) async throws {
        let statements = Self.recordStatements(findings, notifications: notifications, now: now)
        guard !statements.isEmpty else { return }
        try await database.run(statements)
    }

    static func recordStatements(_ findings: [Finding], notifications: [OutboxEntry], now: Int64) -> [SQLStatement] {
        var statements: [SQLStatement] = Self.alertRows(findings).map { Self.upsert($0, now: now) }
        var findingsByID: [String: Finding] = [:]
        for finding in findings { findingsByID[finding.id] = finding }
        for entry in notifications {
            var values: [SQLValue] = [
                .text(entry.id), .text(entry.alertID), .text(entry.route), .text(entry.endpoint), .text(entry.kind.rawValue),
                .text(entry.payload), .int(now), .int(now + max(entry.delayMs, 0)), entry.groupKey.map(SQLValue.text) ?? .null,
            ]
            if entry.kind == .firing, let finding = findingsByID[entry.alertID], finding.type != .incident {
                // A viewer's finding inside an open incident's scope is folded into it.
                values += [finding.edgeLocation.map(SQLValue.text) ?? .null, finding.contentID.map(SQLValue.text) ?? .null]
                statements.append(SQLStatement(Self.insertFiringSQL, values))
            } else if entry.kind != .resolved {
                statements.append(SQLStatement(Self.insertNotificationSQL, values))
            } else {
                statements.append(SQLStatement(Self.insertResolvedSQL, values))
            }
        }
        // An incident that starts folds the viewers' notifications of its scope still waiting
        // for their first attempt (held back by group_wait_ms), but none being delivered, and
        // no resolve of an episode whose firing went out.
        for finding in findings where finding.type == .incident && finding.status == .firing && (finding.edgeLocation != nil || finding.contentID != nil) {
            statements.append(
                SQLStatement(
                    Self.foldIntoIncidentSQL,
                    [
                        .text("folded into incident \(finding.id)"), finding.edgeLocation.map(SQLValue.text) ?? .null,
                        finding.contentID.map(SQLValue.text) ?? .null, .int(now), .text(finding.id),
                    ]))
        }
        return statements
    }

    // The statements' texts are made once: a batch runs thousands of them, and the
    // connection finds each one's prepared statement by its text.
    private static let outboxColumns = "id, alert_id, route, endpoint, kind, payload, state, attempts, created_at, next_attempt_at, group_key"
    private static let openIncidentCover =
        "(SELECT i.id FROM alerts i WHERE \(openIncidentCovers(edge: "$10", content: "$11")) ORDER BY i.started_at, i.id LIMIT 1)"
    /// A viewer's firing notification, folded when an open incident's scope covers it.
    private static let insertFiringSQL = """
        INSERT INTO notifications (\(outboxColumns), folded_into)
        SELECT $1, $2, $3, $4, $5, $6, CASE WHEN \(openIncidentCover) IS NULL THEN 'pending' ELSE 'folded' END, 0, $7, $8, CAST($9 AS TEXT), \(openIncidentCover)
        ON CONFLICT (id) DO NOTHING
        """
    private static let insertNotificationSQL =
        "INSERT INTO notifications (\(outboxColumns)) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $9) ON CONFLICT (id) DO NOTHING"
    /// A resolve, only where the route has a firing notification of the episode that went on.
    private static let insertResolvedSQL = """
        INSERT INTO notifications (\(outboxColumns))
        SELECT $1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, CAST($9 AS TEXT)
        WHERE EXISTS (SELECT 1 FROM notifications f WHERE f.alert_id = $2 AND f.route = $3 AND f.kind = 'firing'
            AND f.state NOT IN ('folded', 'silenced', 'rate_limited'))
        ON CONFLICT (id) DO NOTHING
        """
    static let foldIntoIncidentSQL = """
        UPDATE notifications SET state = 'folded', last_error = $1, folded_into = $5
        WHERE state = 'pending' AND lease_until <= $4 AND \(unsent("notifications"))
        AND alert_id IN (
            SELECT a.id FROM alerts a WHERE a.type <> 'incident'
            AND (CAST($2 AS TEXT) IS NULL OR a.edge_location = CAST($2 AS TEXT))
            AND (CAST($3 AS TEXT) IS NULL OR a.content_id = CAST($3 AS TEXT)))
        """

    /// SQL: the alert row `i` is an open incident whose scope (edge, content) covers a
    /// finding with this edge and content (parameters, never values).
    static func openIncidentCovers(edge: String, content: String) -> String {
        """
        i.type = 'incident' AND i.status = 'firing' AND (i.edge_location IS NOT NULL OR i.content_id IS NOT NULL) \
        AND (i.edge_location IS NULL OR i.edge_location = CAST(\(edge) AS TEXT)) AND (i.content_id IS NULL OR i.content_id = CAST(\(content) AS TEXT))
        """
    }

    /// A firing row takes a resolving finding, or a newer firing one; a resolved row is final.
    private static let upsertSQL: String = {
        let take = "(alerts.status = 'firing' AND (excluded.status = 'resolved' OR excluded.detected_at >= alerts.detected_at))"
        return """
            INSERT INTO alerts (id, type, status, severity, session_id, content_id, edge_location, started_at, detected_at,
                resolved_at, summary, details, updated_at, scope)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            ON CONFLICT (id) DO UPDATE SET
                status = CASE WHEN \(take) THEN excluded.status ELSE alerts.status END,
                severity = CASE WHEN alerts.severity = 'critical' THEN alerts.severity ELSE excluded.severity END,
                detected_at = CASE WHEN \(take) THEN excluded.detected_at ELSE alerts.detected_at END,
                resolved_at = CASE WHEN \(take) THEN excluded.resolved_at ELSE alerts.resolved_at END,
                summary = CASE WHEN \(take) THEN excluded.summary ELSE alerts.summary END,
                details = CASE WHEN \(take) THEN excluded.details ELSE alerts.details END,
                content_id = COALESCE(excluded.content_id, alerts.content_id),
                edge_location = COALESCE(excluded.edge_location, alerts.edge_location),
                scope = COALESCE(excluded.scope, alerts.scope),
                updated_at = excluded.updated_at
            """
    }()

    /// One alert's findings of a batch, folded into the row its upsert writes.
    struct AlertRow {
        /// The first finding: what an insert takes and an update keeps (id, type, session,
        /// start).
        var first: Finding
        /// The finding whose status, times, summary and details the row holds.
        var taken: Finding
        var severity: Severity
        var contentID: String?
        var edgeLocation: String?
        var scope: String?

        init(_ finding: Finding) {
            (first, taken, severity) = (finding, finding, finding.severity)
            (contentID, edgeLocation, scope) = (finding.contentID, finding.edgeLocation, AlertStore.scopeText(finding))
        }

        /// Folds a later finding of the alert in as `upsertSQL`'s update would.
        mutating func fold(_ next: Finding) {
            if taken.status == .firing, next.status == .resolved || next.detectedAt >= taken.detectedAt { taken = next }
            if severity != .critical { severity = next.severity }
            contentID = next.contentID ?? contentID
            edgeLocation = next.edgeLocation ?? edgeLocation
            scope = AlertStore.scopeText(next) ?? scope
        }
    }

    /// The batch's rows, one per alert, in the order of each alert's first finding: an alert
    /// with several findings in one batch (a drop that fires and resolves between two
    /// writes, a quarter of the rows of a busy batch) is written once, as the upserts one
    /// after the other would leave it (`upsertSQL` applies the same rules to the row stored).
    static func alertRows(_ findings: [Finding]) -> [AlertRow] {
        var rows: [AlertRow] = []
        rows.reserveCapacity(findings.count)
        var index: [String: Int] = [:]
        for finding in findings {
            if let at = index[finding.id] {
                rows[at].fold(finding)
            } else {
                index[finding.id] = rows.count
                rows.append(AlertRow(finding))
            }
        }
        return rows
    }

    static func upsert(_ row: AlertRow, now: Int64) -> SQLStatement {
        let (first, taken) = (row.first, row.taken)
        return SQLStatement(
            upsertSQL,
            [
                .text(first.id), .text(first.type.rawValue), .text(taken.status.rawValue), .text(row.severity.rawValue),
                .text(first.sessionID), row.contentID.map(SQLValue.text) ?? .null, row.edgeLocation.map(SQLValue.text) ?? .null,
                .int(first.startedAt), .int(taken.detectedAt), taken.status == .resolved ? .int(taken.detectedAt) : .null,
                .text(taken.summary), .text(JSONWriter.string(.object(taken.details))), .int(now), row.scope.map(SQLValue.text) ?? .null,
            ])
    }

    /// An incident's scope as a silence's `scope` matcher reads it (dimensions sorted).
    static func scopeText(_ finding: Finding) -> String? {
        guard finding.type == .incident, case .object(let scope)? = finding.detail("scope") else { return nil }
        return scope.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.stringValue ?? "")" }.joined(separator: ",")
    }

    // MARK: - Detection checkpoints

    /// Saves each partition's checkpoint in one transaction, replacing the previous one.
    public func saveCheckpoints(group: String, _ checkpoints: [DetectionCheckpoint], now: Int64 = AlertStore.nowMs()) async throws {
        guard !checkpoints.isEmpty else { return }
        let statements = checkpoints.map { c in
            SQLStatement(
                """
                INSERT INTO detection_checkpoints (group_id, topic, partition_id, next_offset, state, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET
                    next_offset = excluded.next_offset, state = excluded.state, updated_at = excluded.updated_at
                """, [.text(group), .text(c.topic), .int(Int64(c.partition)), .int(c.nextOffset), .bytes(c.state), .int(now)])
        }
        try await database.run(statements)
    }

    /// The checkpoint of a partition, if one was saved.
    public func checkpoint(group: String, topic: String, partition: Int32) async throws -> DetectionCheckpoint? {
        let rows = try await database.run([
            SQLStatement(
                "SELECT next_offset, state FROM detection_checkpoints WHERE group_id = $1 AND topic = $2 AND partition_id = $3",
                [.text(group), .text(topic), .int(Int64(partition))])
        ])[0]
        guard let row = rows.first, row.count == 2, let offset = row[0].int, let state = row[1].bytes else { return nil }
        return DetectionCheckpoint(topic: topic, partition: partition, nextOffset: offset, state: state)
    }

    /// Forgets a partition's checkpoint (it could not be restored).
    public func deleteCheckpoint(group: String, topic: String, partition: Int32) async throws {
        try await database.run([
            SQLStatement(
                "DELETE FROM detection_checkpoints WHERE group_id = $1 AND topic = $2 AND partition_id = $3",
                [.text(group), .text(topic), .int(Int64(partition))])
        ])
    }

    // MARK: - The outbox

    /// Leases up to `limit` due notifications of `endpoint` to `owner` until `leaseUntil`, oldest
    /// due first. A notification whose episode still has an undelivered `firing` one on the same
    /// route waits for it, so a receiver never hears of the end before the start. Two
    /// dispatchers never lease the same row.
    public func claimDue(endpoint: String, owner: String, limit: Int, now: Int64, leaseUntil: Int64) async throws -> [NotificationRecord] {
        guard limit > 0 else { return [] }
        // Silences first: what an active one matches is kept as `silenced`, not claimed.
        let openWindows = try await openMaintenanceWindows(now: now)
        let results = try await database.run([
            Self.silencing(endpoint: endpoint, now: now, openWindows: openWindows),
            Self.foldingCovered(endpoint: endpoint, now: now),
            Self.claiming(endpoint: endpoint, owner: owner, limit: limit, now: now, leaseUntil: leaseUntil, openWindows: openWindows),
        ])
        return (results.last ?? []).map(Self.notification).sorted { ($0.nextAttemptAt, $0.createdAt, $0.id) < ($1.nextAttemptAt, $1.createdAt, $1.id) }
    }

    /// SQL: the open incident that covers the viewer's alert of notification `n` (nil for an
    /// incident's own notification, or when none covers it).
    static func coveringIncident(of n: String) -> String {
        """
        (SELECT i.id FROM alerts a, alerts i WHERE a.id = \(n).alert_id AND a.type <> 'incident' \
        AND \(openIncidentCovers(edge: "a.edge_location", content: "a.content_id")) ORDER BY i.started_at, i.id LIMIT 1)
        """
    }

    /// SQL that folds the due viewers' notifications an open incident covers, before their
    /// first attempt, as the incident's start folds those waiting then. An incident committed
    /// by another daemon while a viewer's notification was being written did not see it, nor
    /// it the incident: without this, it would be sent. (`claiming` passes over the ones an
    /// incident committed since this ran covers, as it does for silences.)
    static func foldingCovered(endpoint: String, now: Int64) -> SQLStatement {
        let cover = coveringIncident(of: "notifications")
        return SQLStatement(
            """
            UPDATE notifications SET state = 'folded', folded_into = \(cover), last_error = 'folded into incident ' || \(cover)
            WHERE state = 'pending' AND endpoint = $1 AND next_attempt_at <= $2 AND lease_until <= $2 AND \(foldable("notifications"))
            """, [.text(endpoint), .int(now)])
    }

    /// SQL: notification `n` would be folded by an open incident: one covers its viewer, and
    /// nothing of its episode went out (`unsent`).
    static func foldable(_ n: String) -> String { "\(unsent(n)) AND \(coveringIncident(of: n)) IS NOT NULL" }

    /// SQL: notification `n`, not attempted yet, is a firing, or a resolve whose firing did not
    /// go out: what an incident may fold.
    static func unsent(_ n: String) -> String {
        """
        \(n).attempts = 0 AND (\(n).kind = 'firing' OR NOT EXISTS (
            SELECT 1 FROM notifications f WHERE f.alert_id = \(n).alert_id AND f.route = \(n).route
            AND f.kind = 'firing' AND f.state IN ('delivered', 'dead')))
        """
    }

    /// SQL that leases due notifications (see `claimDue`). It passes over what an active silence
    /// matches itself: on PostgreSQL each statement of a transaction sees the rows committed
    /// when it starts, so one added after `silencing` ran is seen only here, and is silenced
    /// in the next round instead of sent.
    static func claiming(endpoint: String, owner: String, limit: Int, now: Int64, leaseUntil: Int64, openWindows: [String]) -> SQLStatement {
        SQLStatement(
            """
            UPDATE notifications SET lease_until = $1, lease_owner = $2
            WHERE id IN (
                SELECT n.id FROM notifications n
                WHERE n.state = 'pending' AND n.endpoint = $3 AND n.next_attempt_at <= $4 AND n.lease_until <= $4
                  AND (n.kind = 'firing' OR NOT EXISTS (
                      SELECT 1 FROM notifications f
                      WHERE f.alert_id = n.alert_id AND f.route = n.route AND f.kind = 'firing' AND f.state = 'pending'))
                  AND NOT EXISTS (
                      SELECT 1 FROM silences s, alerts a
                      WHERE a.id = n.alert_id AND \(silenceMatches(now: "$4", openWindows: openWindows.indices.map { $0 + 6 })))
                  AND NOT (\(foldable("n")))
                ORDER BY n.next_attempt_at, n.created_at, n.id
                LIMIT $5)
            AND state = 'pending' AND lease_until <= $4
            RETURNING \(Self.notificationColumns)
            """, [.int(leaseUntil), .text(owner), .text(endpoint), .int(now), .int(Int64(limit))] + openWindows.map(SQLValue.text))
    }

    /// Records a delivery (of one notification, or of a group's members together). Only the
    /// lease holder's word counts.
    public func markDelivered(ids: [String], owner: String, status: Int, now: Int64) async throws {
        try await database.query(
            """
            UPDATE notifications SET state = 'delivered', attempts = attempts + 1, last_status = $1, last_error = NULL,
                delivered_at = $2, lease_until = 0
            WHERE lease_owner = $3 AND state = 'pending' AND id IN (\(Self.placeholders(ids.count, from: 4)))
            """, [.int(Int64(status)), .int(now), .text(owner)] + ids.map(SQLValue.text))
    }

    /// Records a failed attempt to be retried at `nextAttemptAt`.
    public func markRetry(ids: [String], owner: String, status: Int?, error: String, nextAttemptAt: Int64) async throws {
        try await database.query(
            """
            UPDATE notifications SET attempts = attempts + 1, last_status = $1, last_error = $2, next_attempt_at = $3, lease_until = 0
            WHERE lease_owner = $4 AND state = 'pending' AND id IN (\(Self.placeholders(ids.count, from: 5)))
            """,
            [status.map { .int(Int64($0)) } ?? .null, .text(String(error.prefix(1000))), .int(nextAttemptAt), .text(owner)] + ids.map(SQLValue.text))
    }

    /// Gives notifications up: they will not be sent again.
    public func markDead(ids: [String], owner: String, status: Int?, error: String) async throws {
        try await database.query(
            """
            UPDATE notifications SET state = 'dead', attempts = attempts + 1, last_status = $1, last_error = $2, lease_until = 0
            WHERE lease_owner = $3 AND state = 'pending' AND id IN (\(Self.placeholders(ids.count, from: 4)))
            """, [status.map { .int(Int64($0)) } ?? .null, .text(String(error.prefix(1000))), .text(owner)] + ids.map(SQLValue.text))
    }

    /// `$from, $from+1, ...`: `count` bound parameters.
    static func placeholders(_ count: Int, from first: Int) -> String {
        (0..<max(count, 1)).map { "$\(first + $0)" }.joined(separator: ", ")
    }

    /// Marks pending notifications of `endpoint` created before `createdBefore` (and not
    /// leased) dead: they could not be delivered in time.
    @discardableResult
    public func expirePending(endpoint: String, createdBefore: Int64, now: Int64) async throws -> Int {
        try await database.query(
            """
            UPDATE notifications SET state = 'dead', last_error = COALESCE(last_error, '') || ' (expired undelivered)'
            WHERE state = 'pending' AND endpoint = $1 AND created_at < $2 AND lease_until <= $3
            RETURNING id
            """, [.text(endpoint), .int(createdBefore), .int(now)]
        ).count
    }

    /// Firing alerts on `route` whose newest notification is older than `before`: candidates
    /// for a repeat notification. Returns each alert with the number of repeats sent so far.
    public func alertsDueForRepeat(route: String, before: Int64, limit: Int) async throws -> [(alert: AlertRecord, repeats: Int)] {
        let rows = try await database.query(
            """
            SELECT \(Self.alertColumns.split(separator: ",").map { "a." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")),
                   SUM(CASE WHEN n.kind = 'repeat' THEN 1 ELSE 0 END)
            FROM alerts a JOIN notifications n ON n.alert_id = a.id AND n.route = $1
            WHERE a.status = 'firing'
            GROUP BY \(Self.alertColumns.split(separator: ",").map { "a." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", "))
            HAVING MAX(n.created_at) < $2 AND SUM(CASE WHEN n.kind = 'firing' THEN 1 ELSE 0 END) > 0
            LIMIT $3
            """, [.text(route), .int(before), .int(Int64(limit))])
        return rows.map { (Self.alert($0), Int($0[13].int ?? 0)) }
    }

    /// Deletes resolved alerts last updated before `before` with their finished notifications.
    @discardableResult
    public func purgeResolved(before: Int64) async throws -> Int {
        let results = try await database.run([
            SQLStatement(
                """
                DELETE FROM notifications WHERE state <> 'pending'
                  AND alert_id IN (SELECT id FROM alerts WHERE status = 'resolved' AND updated_at < $1)
                """, [.int(before)]),
            SQLStatement(
                """
                DELETE FROM alerts WHERE status = 'resolved' AND updated_at < $1
                  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.alert_id = alerts.id)
                RETURNING id
                """, [.int(before)]),
        ])
        return results[1].count
    }

    // MARK: - Reading

    static let alertColumns =
        "id, type, status, severity, session_id, content_id, edge_location, started_at, detected_at, resolved_at, summary, details, updated_at"
    static let notificationColumns =
        "id, alert_id, route, endpoint, kind, payload, state, attempts, created_at, next_attempt_at, last_status, last_error, delivered_at, group_key, group_event, folded_into"

    static func alert(_ row: SQLRow) -> AlertRecord {
        AlertRecord(
            id: row[0].text ?? "", type: row[1].text ?? "", status: row[2].text ?? "", severity: row[3].text ?? "",
            sessionID: row[4].text ?? "", contentID: row[5].text, edgeLocation: row[6].text, startedAt: row[7].int ?? 0,
            detectedAt: row[8].int ?? 0, resolvedAt: row[9].int, summary: row[10].text ?? "", details: row[11].text ?? "{}",
            updatedAt: row[12].int ?? 0)
    }

    static func notification(_ row: SQLRow) -> NotificationRecord {
        NotificationRecord(
            id: row[0].text ?? "", alertID: row[1].text ?? "", route: row[2].text ?? "", endpoint: row[3].text ?? "",
            kind: row[4].text ?? "", payload: row[5].text ?? "", state: NotificationRecord.State(rawValue: row[6].text ?? "") ?? .pending,
            attempts: Int(row[7].int ?? 0), createdAt: row[8].int ?? 0, nextAttemptAt: row[9].int ?? 0,
            lastStatus: row[10].int.map(Int.init), lastError: row[11].text, deliveredAt: row[12].int,
            groupKey: row.count > 13 ? row[13].text : nil, groupEvent: row.count > 14 ? row[14].text : nil, foldedInto: row.count > 15 ? row[15].text : nil)
    }

    /// One alert by id.
    public func alert(id: String) async throws -> AlertRecord? {
        try await database.query("SELECT \(Self.alertColumns) FROM alerts WHERE id = $1", [.text(id)]).first.map(Self.alert)
    }

    /// Alerts detected at or after `since` (event time, ms), newest first.
    public func alerts(since: Int64 = .min, sessionID: String? = nil, limit: Int = 100) async throws -> [AlertRecord] {
        var sql = "SELECT \(Self.alertColumns) FROM alerts WHERE detected_at >= $1"
        var binds: [SQLValue] = [.int(since)]
        if let sessionID {
            sql += " AND session_id = $2"
            binds.append(.text(sessionID))
        }
        sql += " ORDER BY detected_at DESC, id LIMIT $\(binds.count + 1)"
        binds.append(.int(Int64(limit)))
        return try await database.query(sql, binds).map(Self.alert)
    }

    /// Filters for `alerts(matching:)`; nil matches anything. Every value is bound.
    public struct Query: Sendable {
        /// Event time, ms.
        public var since: Int64?
        public var type: String?
        public var severity: String?
        public var status: String?
        public var sessionID: String?
        public var contentID: String?
        public var edgeLocation: String?
        public var limit = 100
        public var offset = 0
        public init() {}
    }

    /// Alerts matching the query, newest first (by detection time, then id).
    public func alerts(matching query: Query) async throws -> [AlertRecord] {
        var conditions: [String] = []
        var binds: [SQLValue] = []
        func add(_ column: String, _ op: String, _ value: SQLValue?) {
            guard let value else { return }
            binds.append(value)
            conditions.append("\(column) \(op) $\(binds.count)")
        }
        add("detected_at", ">=", query.since.map(SQLValue.int))
        add("type", "=", query.type.map(SQLValue.text))
        add("severity", "=", query.severity.map(SQLValue.text))
        add("status", "=", query.status.map(SQLValue.text))
        add("session_id", "=", query.sessionID.map(SQLValue.text))
        add("content_id", "=", query.contentID.map(SQLValue.text))
        add("edge_location", "=", query.edgeLocation.map(SQLValue.text))
        var sql = "SELECT \(Self.alertColumns) FROM alerts"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        binds += [.int(Int64(query.limit)), .int(Int64(query.offset))]
        sql += " ORDER BY detected_at DESC, id LIMIT $\(binds.count - 1) OFFSET $\(binds.count)"
        return try await database.query(sql, binds).map(Self.alert)
    }

    /// The notifications of one alert (all when nil), oldest first.
    public func notifications(alertID: String? = nil) async throws -> [NotificationRecord] {
        if let alertID {
            return try await database.query(
                "SELECT \(Self.notificationColumns) FROM notifications WHERE alert_id = $1 ORDER BY created_at, id", [.text(alertID)]
            ).map(Self.notification)
        }
        return try await database.query("SELECT \(Self.notificationColumns) FROM notifications ORDER BY created_at, id").map(Self.notification)
    }

    /// Notification counts by state, for `/metrics`.
    public func notificationCounts() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await database.query("SELECT state, COUNT(*) FROM notifications GROUP BY state") {
            if let state = row[0].text { counts[state] = Int(row[1].int ?? 0) }
        }
        return counts
    }

    /// Milliseconds since the Unix epoch, wall clock.
    public static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
