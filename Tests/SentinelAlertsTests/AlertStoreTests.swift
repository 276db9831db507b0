import CMCDDetection
import Foundation
import Logging
import SentinelJSON
import SentinelTestSupport
import Testing

@testable import SentinelAlerts
import SentinelSinks

/// The alerts table and its outbox, the same tests on a real SQLite file and a real PostgreSQL
/// server (started by the tests with scripts/postgres/postgres.sh).
@Suite(.ownThread) struct AlertStoreTests {
    static let backends = ["sqlite", "postgres"]
    let logger = Logger(label: "test")

    func open(_ backend: String) async throws -> AlertStore {
        switch backend {
        case "sqlite":
            let path = TestScratch.directory.appendingPathComponent("alerts-\(UUID().uuidString).db").path
            return try await AlertStore.open(url: "sqlite:\(path)", logger: logger)
        default:
            return try await AlertStore.open(url: try PostgresServer.shared.newDatabase(), logger: logger)
        }
    }

    func finding(
        _ status: FindingStatus, _ severity: Severity = .critical, session: String = "s1", started: Int64 = 1_000, detected: Int64,
        drop: Double = 85.7
    ) -> Finding {
        Finding(
            type: .bufferDrop, status: status, severity: severity, sessionID: session, contentID: "movie", edgeLocation: "FRA56-P3",
            startedAt: started, detectedAt: detected, summary: "\(status) at \(detected)", details: [("drop_percent", .double(drop))])
    }

    func entry(for finding: Finding, kind: OutboxEntry.Kind, route: String = "r", endpoint: String = "default") -> OutboxEntry {
        OutboxEntry(
            id: "evt_\(finding.id)_\(route)_\(kind.rawValue)", alertID: finding.id, route: route, endpoint: endpoint, kind: kind,
            payload: #"{"kind":"\#(kind.rawValue)"}"#)
    }

    @Test(arguments: backends) func migrationsApplyOnceAndReopeningKeepsData(_ backend: String) async throws {
        let store = try await open(backend)
        try await store.record([finding(.firing, detected: 2_000)], notifications: [])
        try await store.migrate()  // again: nothing to do, nothing lost
        let versions = try await store.database.query("SELECT version FROM sentinel_migrations")
        #expect(versions.map { $0[0] }.sorted { ($0.int ?? 0) < ($1.int ?? 0) } == (1...AlertStore.schemaVersion).map { .int($0) })
        #expect(try await store.alerts().count == 1)
        await store.close()
    }

    @Test(arguments: backends) func anEpisodeIsOneRowThatResolvesAndNeverRegresses(_ backend: String) async throws {
        let store = try await open(backend)
        let firing = finding(.firing, .warning, detected: 2_000, drop: 60)
        let escalated = finding(.firing, .critical, detected: 3_000, drop: 80)
        let resolved = finding(.resolved, .critical, detected: 9_000, drop: 80)
        try await store.record([firing], notifications: [])
        try await store.record([escalated], notifications: [])
        var alert = try #require(try await store.alert(id: firing.id))
        #expect(alert.status == "firing" && alert.severity == "critical" && alert.detectedAt == 3_000)
        try await store.record([resolved], notifications: [])
        // A replay of the whole episode after it resolved changes nothing.
        try await store.record([firing, escalated], notifications: [])
        alert = try #require(try await store.alert(id: firing.id))
        #expect(alert.status == "resolved")
        #expect(alert.severity == "critical")
        #expect(alert.resolvedAt == 9_000)
        #expect(alert.summary == resolved.summary)
        #expect(JSONWriter.string(alert.findingJSON) == resolved.jsonLine, "the stored alert reads back as the finding")
        #expect(try await store.alerts().count == 1)
        await store.close()
    }

    /// Several findings of one alert in one batch are written as one row: the same row as
    /// writing them one batch at a time, whatever their order, severities and what the
    /// table held already (random batches, against the upsert's own rules in the database).
    @Test(arguments: backends) func anAlertsFindingsInOneBatchLeaveTheRowTheyLeaveOneByOne(_ backend: String) async throws {
        let (oneByOne, batched) = (try await open(backend), try await open(backend))
        var random = SplitMix64(seed: 26)
        for alert in 0..<300 {
            let session = "s\(alert)"
            func make() -> Finding {
                var f = finding(
                    random.next() % 3 == 0 ? .resolved : .firing, random.next() % 2 == 0 ? .warning : .critical, session: session,
                    detected: 2_000 + Int64(random.next() % 5) * 1_000, drop: Double(random.next() % 100))
                if random.next() % 3 == 0 { f.contentID = nil }
                if random.next() % 4 == 0 { f.edgeLocation = "EDGE-\(random.next() % 3)" }
                return f
            }
            // What the table held before the batch, if anything.
            let before = (0..<Int(random.next() % 3)).map { _ in make() }
            let batch = (0..<(1 + Int(random.next() % 4))).map { _ in make() }
            for f in before { for store in [oneByOne, batched] { try await store.record([f], notifications: [], now: 50_000) } }
            for f in batch { try await oneByOne.record([f], notifications: [], now: 60_000) }
            try await batched.record(batch, notifications: [], now: 60_000)
        }
        let expected = try await oneByOne.database.query("SELECT \(AlertStore.alertColumns) FROM alerts ORDER BY id")
        let rows = try await batched.database.query("SELECT \(AlertStore.alertColumns) FROM alerts ORDER BY id")
        #expect(rows.count == 300)
        #expect(rows == expected)
        // A batch of one alert's findings is one upsert.
        let episode = [finding(.firing, .warning, detected: 2_000), finding(.firing, detected: 3_000), finding(.resolved, detected: 4_000)]
        #expect(AlertStore.recordStatements(episode, notifications: [], now: 0).count == 1)
        for store in [oneByOne, batched] { await store.close() }
    }

    @Test(arguments: backends) func outboxRowsAreWrittenOncePerEpisodeAndResolvedNeedsFiring(_ backend: String) async throws {
        let store = try await open(backend)
        let a = finding(.firing, detected: 2_000)
        let aResolved = finding(.resolved, detected: 5_000)
        let b = finding(.resolved, session: "s2", detected: 5_000)  // its firing was never routed
        try await store.record([a], notifications: [entry(for: a, kind: .firing)])
        try await store.record([a], notifications: [entry(for: a, kind: .firing)])  // replay
        try await store.record([aResolved, b], notifications: [entry(for: aResolved, kind: .resolved), entry(for: b, kind: .resolved)])
        let rows = try await store.notifications()
        #expect(rows.map(\.kind).sorted() == ["firing", "resolved"])
        #expect(rows.allSatisfy { $0.alertID == a.id && $0.state == .pending })
        await store.close()
    }

    @Test(arguments: backends) func leasesKeepClaimsApartAndResolvedWaitsForFiring(_ backend: String) async throws {
        let store = try await open(backend)
        let a = finding(.firing, detected: 2_000)
        let aResolved = finding(.resolved, detected: 5_000)
        try await store.record([a], notifications: [entry(for: a, kind: .firing)])
        try await store.record([aResolved], notifications: [entry(for: aResolved, kind: .resolved)])
        let now = AlertStore.nowMs()
        let first = try await store.claimDue(endpoint: "default", owner: "one", limit: 10, now: now, leaseUntil: now + 60_000)
        #expect(first.map(\.kind) == ["firing"], "the resolved one waits for its firing one")
        let second = try await store.claimDue(endpoint: "default", owner: "two", limit: 10, now: now, leaseUntil: now + 60_000)
        #expect(second.isEmpty, "leased rows are not handed out twice")
        // A failed attempt puts it back for later; the holder of a lease alone can record outcomes.
        try await store.markRetry(ids: [first[0].id], owner: "two", status: 500, error: "not mine", nextAttemptAt: now)
        #expect(try await store.notifications(alertID: a.id).first?.attempts == 0)
        try await store.markRetry(ids: [first[0].id], owner: "one", status: 503, error: "HTTP 503", nextAttemptAt: now + 1_000)
        #expect(try await store.claimDue(endpoint: "default", owner: "two", limit: 10, now: now, leaseUntil: now + 60_000).isEmpty)
        let retried = try await store.claimDue(endpoint: "default", owner: "two", limit: 10, now: now + 1_000, leaseUntil: now + 60_000)
        #expect(retried.map(\.kind) == ["firing"])
        #expect(retried.first?.attempts == 1)
        try await store.markDelivered(ids: [retried[0].id], owner: "two", status: 204, now: now + 1_001)
        let resolved = try await store.claimDue(endpoint: "default", owner: "two", limit: 10, now: now + 1_002, leaseUntil: now + 60_000)
        #expect(resolved.map(\.kind) == ["resolved"])
        try await store.markDead(ids: [resolved[0].id], owner: "two", status: 400, error: "HTTP 400")
        let rows = try await store.notifications(alertID: a.id)
        #expect(rows.map(\.state) == [.delivered, .dead])
        #expect(rows[0].lastStatus == 204 && rows[0].deliveredAt == now + 1_001 && rows[0].attempts == 2)
        #expect(rows[1].lastError == "HTTP 400")
        #expect(try await store.notificationCounts() == ["delivered": 1, "dead": 1])
        await store.close()
    }

    @Test(arguments: backends) func concurrentClaimersNeverShareARow(_ backend: String) async throws {
        let store = try await open(backend)
        var findings: [Finding] = []
        for i in 0..<40 { findings.append(finding(.firing, session: "s\(i)", detected: 2_000)) }
        try await store.record(findings, notifications: findings.map { entry(for: $0, kind: .firing) })
        let now = AlertStore.nowMs()
        let claims = try await withThrowingTaskGroup(of: [String].self) { group in
            for owner in 0..<4 {
                group.addTask {
                    var mine: [String] = []
                    while true {
                        let batch = try await store.claimDue(endpoint: "default", owner: "o\(owner)", limit: 3, now: now, leaseUntil: now + 60_000)
                        if batch.isEmpty { return mine }
                        mine += batch.map(\.id)
                    }
                }
            }
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
        #expect(claims.count == 40)
        #expect(Set(claims).count == 40)
        await store.close()
    }

    @Test(arguments: backends) func expiryRepeatsAndRetention(_ backend: String) async throws {
        let store = try await open(backend)
        let old = finding(.firing, session: "old", detected: 2_000)
        let live = finding(.firing, session: "live", detected: 2_000)
        let t = AlertStore.nowMs()
        try await store.record([old, live], notifications: [entry(for: old, kind: .firing), entry(for: live, kind: .firing)], now: t - 10_000)
        #expect(try await store.expirePending(endpoint: "default", createdBefore: t - 5_000, now: t) == 2)
        #expect(try await store.notifications().allSatisfy { $0.state == .dead })
        // Still firing, last notified 10 s ago: due for a repeat on its route.
        let due = try await store.alertsDueForRepeat(route: "r", before: t - 5_000, limit: 10)
        #expect(Set(due.map(\.alert.id)) == [old.id, live.id])
        #expect(due.allSatisfy { $0.repeats == 0 })
        // Retention: only resolved alerts past the cut-off go, with their finished notifications.
        try await store.record([finding(.resolved, session: "old", detected: 3_000)], notifications: [], now: t - 10_000)
        #expect(try await store.purgeResolved(before: t - 5_000) == 1)
        #expect(try await store.alert(id: old.id) == nil)
        #expect(try await store.alert(id: live.id) != nil)
        #expect(try await store.notifications().map(\.alertID) == [live.id])
        await store.close()
    }

    @Test(arguments: backends) func hostileIdsAreBoundNotSpliced(_ backend: String) async throws {
        let store = try await open(backend)
        let hostile = "x'); DROP TABLE alerts; --"
        try await store.record([finding(.firing, session: hostile, detected: 2_000)], notifications: [])
        try await store.record([finding(.firing, session: "other", detected: 2_000)], notifications: [])
        #expect(try await store.alerts(sessionID: hostile).map(\.sessionID) == [hostile])
        #expect(try await store.alerts(sessionID: "' OR 1=1 --").isEmpty)
        #expect(try await store.alerts().count == 2)
        await store.close()
    }

    /// Detection checkpoints: bytes in, the same bytes out (every byte value, a zero, a large
    /// state), one row per group and partition, replaced on save, gone on discard.
    @Test(arguments: backends) func checkpointsRoundTripTheirBytesPerGroupAndPartition(_ backend: String) async throws {
        let store = try await open(backend)
        let state = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ ($0 >> 8)) }
        try await store.saveCheckpoints(group: "g", [
            DetectionCheckpoint(topic: "t", partition: 0, nextOffset: 10, state: [0, 255, 0, 1]),
            DetectionCheckpoint(topic: "t", partition: 1, nextOffset: 20, state: state),
        ])
        try await store.saveCheckpoints(group: "other' OR 1=1 --", [DetectionCheckpoint(topic: "t", partition: 0, nextOffset: 99, state: [9])])
        try await store.saveCheckpoints(group: "g", [DetectionCheckpoint(topic: "t", partition: 0, nextOffset: 12, state: [0, 0, 7])])
        #expect(try await store.checkpoint(group: "g", topic: "t", partition: 0) == DetectionCheckpoint(topic: "t", partition: 0, nextOffset: 12, state: [0, 0, 7]))
        let one = try await store.checkpoint(group: "g", topic: "t", partition: 1)
        #expect(one?.nextOffset == 20)
        #expect(one?.state == state)
        #expect(try await store.checkpoint(group: "g", topic: "t", partition: 2) == nil)
        try await store.deleteCheckpoint(group: "g", topic: "t", partition: 1)
        #expect(try await store.checkpoint(group: "g", topic: "t", partition: 1) == nil)
        #expect(try await store.checkpoint(group: "other' OR 1=1 --", topic: "t", partition: 0)?.nextOffset == 99)
        await store.close()
    }

    /// SQLite keeps each statement prepared across calls: a reused statement gives what its
    /// new bindings ask for, also after one of its runs failed, and more distinct statements
    /// than the cache holds still run.
    @Test func preparedStatementsAreReusedCleanly() async throws {
        let path = TestScratch.directory.appendingPathComponent("prepared-\(UUID().uuidString).db").path
        let db = try SQLiteDatabase(path: path)
        try await db.run([SQLStatement("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")])
        let insert = "INSERT INTO t (k, v) VALUES ($1, $2)"
        for i in 0..<50 { try await db.run([SQLStatement(insert, [.text("k\(i)"), .int(Int64(i))])]) }
        // A repeated key fails (the transaction rolls back), then the same statement runs again.
        await #expect(throws: SQLError.self) {
            try await db.run([SQLStatement(insert, [.text("new"), .int(1)]), SQLStatement(insert, [.text("k0"), .int(0)])])
        }
        try await db.run([SQLStatement(insert, [.text("k50"), .null])])
        let select = "SELECT k, v FROM t WHERE v >= $1 ORDER BY k"
        // The same query with other bindings gives its own rows.
        #expect(try await db.query(select, [.int(48)]) == [[.text("k48"), .int(48)], [.text("k49"), .int(49)]])
        #expect(try await db.query(select, [.int(49)]) == [[.text("k49"), .int(49)]])
        #expect(try await db.query("SELECT count(*), count(v) FROM t") == [[.int(51), .int(50)]], "the failed run left nothing")
        for i in 0..<(SQLiteDatabase.maxPreparedStatements + 10) {
            #expect(try await db.query("SELECT v + \(i) FROM t WHERE k = $1", [.text("k1")]) == [[.int(Int64(1 + i))]])
        }
        #expect(try await db.query(select, [.int(49)]) == [[.text("k49"), .int(49)]])
        await db.close()
    }

    /// What a resource subscription polls: a batch shares one write time, and a page that ends
    /// inside it must not make the next poll (which goes on after that time) skip the rest.
    @Test(arguments: AlertStoreTests.backends) func changesSinceATimeSkipNothingOfABatch(_ backend: String) async throws {
        let s = try await open(backend)
        let folding = IncidentFoldingTests()
        let early = (0..<3).map { folding.drop("early-\($0)", edge: "FRA") }
        try await s.record(early, notifications: [], now: 10_000)
        let batch = (0..<2_500).map { folding.drop("v\($0)", edge: "FRA") }
        try await s.record(batch, notifications: [], now: 20_000)
        try await s.record([folding.drop("late", edge: "AMS")], notifications: [], now: 30_000)

        let first = try await s.changes(since: 0, limit: 1_000)
        #expect(first.count == 3 + 2_500, "the page, then the rest of its last millisecond")
        #expect(Set(first.map(\.sessionID)) == Set((early + batch).map(\.sessionID)))
        #expect(first.map(\.updatedAt) == first.map(\.updatedAt).sorted())
        let next = try await s.changes(since: try #require(first.last?.updatedAt), limit: 1_000)
        #expect(next.map(\.sessionID) == ["late"])
        #expect(try await s.changes(since: 30_000, limit: 1_000).isEmpty)
        if backend == "sqlite" {
            // Found through an index, not by reading the whole table.
            let plan = try await s.database.query("EXPLAIN QUERY PLAN " + AlertStore.changesPageSQL, [.int(0), .int(10)])
            #expect(plan.contains { $0.contains { $0.text?.contains("USING INDEX alerts_status") == true } }, "\(plan)")
        }
        await s.close()
    }

    /// A write whose time was taken before another's committed (two daemons on one table, a
    /// write held by a lock) commits later with an earlier time: a subscription's poller still
    /// reports it, and reports every change once.
    @Test(arguments: AlertStoreTests.backends) func aChangeCommittedLateWithAnEarlierTimeIsReportedOnce(_ backend: String) async throws {
        let s = try await open(backend)
        let folding = IncidentFoldingTests()
        var cursor = ChangeCursor(since: 10_000, overlapMs: 30_000)
        try await s.record([folding.drop("before", edge: "FRA")], notifications: [], now: 9_000)
        try await s.record([folding.drop("a", edge: "FRA")], notifications: [], now: 20_000)
        #expect(try await s.changes(after: &cursor).map(\.sessionID) == ["a"], "nothing from before the subscription")
        // Daemon B's write at 25,000 commits first; daemon A's, timed 21,000, after it.
        try await s.record([folding.drop("b", edge: "FRA")], notifications: [], now: 25_000)
        #expect(try await s.changes(after: &cursor).map(\.sessionID) == ["b"])
        try await s.record([folding.drop("late", edge: "AMS")], notifications: [], now: 21_000)
        #expect(try await s.changes(after: &cursor).map(\.sessionID) == ["late"])
        #expect(try await s.changes(after: &cursor).isEmpty, "each change once")
        // A row changed again is a change again; more than a page at once comes whole.
        try await s.record([folding.drop("a", edge: "FRA")], notifications: [], now: 26_000)
        let many = (0..<2_500).map { folding.drop("m\($0)", edge: "FRA") }
        try await s.record(many, notifications: [], now: 27_000)
        let changed = try await s.changes(after: &cursor, limit: 1_000)
        #expect(changed.count == 2_501 && changed.first?.sessionID == "a")
        #expect(try await s.changes(after: &cursor).isEmpty)
        // Beyond the overlap, an earlier time is no longer looked for.
        try await s.record([folding.drop("much-later", edge: "FRA")], notifications: [], now: 100_000)
        #expect(try await s.changes(after: &cursor).map(\.sessionID) == ["much-later"])
        try await s.record([folding.drop("too-late", edge: "FRA")], notifications: [], now: 60_000)
        #expect(try await s.changes(after: &cursor).isEmpty)
        await s.close()
    }

    @Test func aBadURLOrUnreachableServerIsAClearError() async throws {
        await #expect(throws: SQLError.self) { try await AlertStore.open(url: "postgres:/nohost", logger: logger) }
        let refused = RefusedPort()
        let port = refused.port
        defer { withExtendedLifetime(refused) {} }
        let started = Date()
        let error = await #expect(throws: SQLError.self) {
            let database = try PostgresDatabase(url: "postgres://u:secret@127.0.0.1:\(port)/db?sslmode=disable", logger: logger, timeout: .seconds(2))
            database.runInBackground()
            defer { Task { await database.close() } }
            try await AlertStore(database: database, logger: logger).migrate()
        }
        #expect(Date().timeIntervalSince(started) < 30, "a bounded wait (2 s, and slack for a loaded machine)")
        #expect(error?.description.contains("no answer within") == true, "\(String(describing: error))")
        #expect(error?.description.contains("secret") == false, "\(String(describing: error))")
    }
}

/// Incidents fold the viewers' notifications of their scope, durably in the outbox.
@Suite(.ownThread) struct IncidentFoldingTests {
    let store = AlertStoreTests()

    func incident(_ status: FindingStatus, edge: String, detected: Int64) -> Finding {
        var finding = Finding(
            type: .incident, status: status, severity: .critical, sessionID: "", contentID: nil, edgeLocation: edge, startedAt: 500,
            detectedAt: detected, summary: "incident on \(edge)", details: [("rule", .string("rebuffering"))])
        finding.id = FindingID.make(sessionID: "incident\u{0}rebuffering\u{0}edge_location=\(edge)", type: .incident, startedAt: 500)
        return finding
    }

    func drop(_ session: String, edge: String) -> Finding {
        Finding(
            type: .bufferDrop, status: .firing, severity: .critical, sessionID: session, contentID: "movie", edgeLocation: edge, startedAt: 1_000,
            detectedAt: 2_000, summary: "drop", details: [("drop_percent", .double(90))])
    }

    func held(_ finding: Finding) -> OutboxEntry {
        var entry = store.entry(for: finding, kind: .firing)
        entry.delayMs = 30_000
        return entry
    }

    func state(_ s: AlertStore, _ finding: Finding) async throws -> NotificationRecord.State? {
        try await s.notifications(alertID: finding.id).first { $0.kind == "firing" }?.state
    }

    @Test(arguments: AlertStoreTests.backends) func anIncidentFoldsTheViewersOfItsScope(_ backend: String) async throws {
        let s = try await store.open(backend)
        // A viewer's drop, held back by group_wait, then an incident on its edge: folded.
        let early = drop("early", edge: "FRA56-C2")
        try await s.record([early], notifications: [held(early)], now: 10_000)
        #expect(try await s.notifications(alertID: early.id).first?.nextAttemptAt == 40_000)
        // It resolved already, before the incident (its resolve waits for its firing).
        var earlyResolved = early
        earlyResolved.status = .resolved
        try await s.record([earlyResolved], notifications: [store.entry(for: earlyResolved, kind: .resolved)], now: 12_000)
        // Another viewer's drop on the edge went out before the incident; its resolve did not.
        let sent = drop("sent", edge: "FRA56-C2")
        try await s.record([sent], notifications: [store.entry(for: sent, kind: .firing)], now: 10_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 10_500, leaseUntil: 11_000)
        #expect(claimed.map(\.alertID) == [sent.id])
        try await s.markDelivered(ids: [claimed[0].id], owner: "o", status: 200, now: 10_600)
        var sentResolved = sent
        sentResolved.status = .resolved
        try await s.record([sentResolved], notifications: [store.entry(for: sentResolved, kind: .resolved)], now: 12_000)
        let elsewhere = drop("elsewhere", edge: "AMS1-C1")
        try await s.record([elsewhere], notifications: [held(elsewhere)], now: 10_000)
        let firing = incident(.firing, edge: "FRA56-C2", detected: 20_000)
        try await s.record([firing], notifications: [store.entry(for: firing, kind: .firing)], now: 20_000)
        #expect(try await state(s, early) == .folded)
        #expect(try await s.notifications(alertID: early.id).map(\.state) == [.folded, .folded], "its resolve is folded with it")
        #expect(
            try await s.notifications(alertID: sent.id).sorted { $0.kind < $1.kind }.map(\.state) == [.delivered, .pending],
            "a resolve whose firing went out is still sent")
        #expect(try await state(s, elsewhere) == .pending, "another edge is not the incident's")
        #expect(try await state(s, firing) == .pending, "the incident itself is sent")
        // While it is open, a new viewer on the edge is folded at once, and the resolve of a
        // folded episode is not sent either.
        let during = drop("during", edge: "FRA56-C2")
        try await s.record([during], notifications: [store.entry(for: during, kind: .firing)], now: 25_000)
        #expect(try await state(s, during) == .folded)
        var resolvedDrop = during
        resolvedDrop.status = .resolved
        try await s.record([resolvedDrop], notifications: [store.entry(for: resolvedDrop, kind: .resolved)], now: 26_000)
        #expect(try await s.notifications(alertID: during.id).map(\.kind) == ["firing"])
        // Nothing folded is claimed for delivery.
        let due = try await s.claimDue(endpoint: "default", owner: "o", limit: 100, now: 100_000, leaseUntil: 160_000)
        #expect(Set(due.map(\.alertID)) == [elsewhere.id, firing.id, sent.id])
        // Once the incident resolved, viewers on the edge notify again.
        try await s.record([incident(.resolved, edge: "FRA56-C2", detected: 90_000)], notifications: [], now: 90_000)
        let after = drop("after", edge: "FRA56-C2")
        try await s.record([after], notifications: [store.entry(for: after, kind: .firing)], now: 95_000)
        #expect(try await state(s, after) == .pending)
        // The incident knows whom it folded: the viewers of its edge, held or arriving while it was open.
        #expect(try await s.notifications(alertID: during.id).first?.foldedInto == firing.id)
        let folded = try await s.foldedSummary(incidentID: firing.id)
        #expect(folded.notifications == 2 && folded.sessions == 2 && folded.byType == ["buffer_drop": 2], "\(folded)")
        #expect(Set(folded.examples.map(\.sessionID)) == ["early", "during"])
        #expect(try await s.foldedSummary(incidentID: "nosuch").notifications == 0)
        await s.close()
    }
}

extension IncidentFoldingTests {
    /// Two daemons on one table: a viewer's notification written while another daemon wrote
    /// the incident that covers it, neither transaction seeing the other's row (the
    /// incident's fold ran before the viewer's row committed, the viewer's cover check before
    /// the incident's). When it falls due it is folded, not sent, and its resolve with it.
    @Test(arguments: AlertStoreTests.backends) func aViewersPageWrittenBesideAnIncidentIsFoldedWhenDue(_ backend: String) async throws {
        let s = try await store.open(backend)
        let viewer = drop("racing", edge: "FRA56-C2")
        try await s.record([viewer], notifications: [held(viewer)], now: 10_000)
        var resolved = viewer
        resolved.status = .resolved
        try await s.record([resolved], notifications: [store.entry(for: resolved, kind: .resolved)], now: 12_000)
        // The incident's row and notification, as its daemon's transaction wrote them; its
        // fold found nothing to fold.
        let firing = incident(.firing, edge: "FRA56-C2", detected: 11_000)
        let statements = AlertStore.recordStatements([firing], notifications: [store.entry(for: firing, kind: .firing)], now: 11_000)
        try await s.database.run(statements.filter { $0.sql != AlertStore.foldIntoIncidentSQL })
        #expect(try await state(s, viewer) == .pending, "the race: the viewer's page escaped the incident's fold")
        let other = drop("elsewhere", edge: "AMS1-C1")
        try await s.record([other], notifications: [held(other)], now: 10_000)
        let due = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 50_000, leaseUntil: 60_000)
        #expect(Set(due.map(\.alertID)) == [firing.id, other.id], "the incident and the other edge's viewer only")
        #expect(try await s.notifications(alertID: viewer.id).map(\.state) == [.folded, .folded])
        #expect(try await s.notifications(alertID: viewer.id).first?.foldedInto == firing.id)
        #expect(try await s.foldedSummary(incidentID: firing.id).sessions == 1)
        await s.close()
    }
}

/// A route's groups in the outbox: one delivery per group, the same members across a lost
/// lease, deliveries counted per group, rate-limited episodes with their resolves, incident updates.
@Suite(.ownThread) struct NotificationGroupTests {
    let store = AlertStoreTests()
    let folding = IncidentFoldingTests()

    func grouped(_ finding: Finding, _ kind: OutboxEntry.Kind = .firing) -> OutboxEntry {
        var entry = store.entry(for: finding, kind: kind)
        entry.groupKey = "key-" + (finding.edgeLocation ?? "") + kind.rawValue
        return entry
    }

    @Test(arguments: AlertStoreTests.backends) func aGroupIsOneDeliveryWithTheSameMembersUntilItIsSent(_ backend: String) async throws {
        let s = try await store.open(backend)
        let a = ["a1", "a2", "a3"].map { folding.drop($0, edge: "FRA") }
        let b = folding.drop("b1", edge: "AMS")
        try await s.record(a + [b], notifications: (a + [b]).map { grouped($0) }, now: 1_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 1, now: 2_000, leaseUntil: 3_000)
        #expect(claimed.count == 1)
        let members = try await s.claimGroup(of: claimed[0], owner: "o", now: 2_000, leaseUntil: 3_000)
        let expected = claimed[0].groupKey == grouped(b).groupKey ? [b.id] : a.map(\.id)
        #expect(Set(members.map(\.alertID)) == Set(expected))
        let event = try #require(members.first?.groupEvent)
        #expect(members.allSatisfy { $0.groupEvent == event })
        // The owner dies; a viewer joins the group meanwhile. The next claim sends the same
        // group (same webhook id, same members); the newcomer waits for the next one.
        let late = folding.drop(claimed[0].groupKey == grouped(b).groupKey ? "b2" : "a4", edge: claimed[0].groupKey == grouped(b).groupKey ? "AMS" : "FRA")
        try await s.record([late], notifications: [grouped(late)], now: 2_500)
        let again = try await s.claimDue(endpoint: "default", owner: "p", limit: 10, now: 3_001, leaseUntil: 4_000)
        let retaken = try await s.claimGroup(of: try #require(again.first { $0.groupEvent == event }), owner: "p", now: 3_001, leaseUntil: 4_000)
        #expect(Set(retaken.map(\.id)) == Set(members.map(\.id)) && retaken.allSatisfy { $0.groupEvent == event })
        try await s.markDelivered(ids: retaken.map(\.id), owner: "p", status: 200, now: 3_100)
        #expect(try await s.deliveredWebhooks(route: "r", since: 0) == 1, "a group is one webhook")
        #expect(try await s.lastGroupDelivery(groupKey: try #require(claimed[0].groupKey)) == 3_100)
        // The same round had claimed the newcomer too: it is a group of its own.
        let lateRecord = try #require(again.first { $0.alertID == late.id })
        #expect(lateRecord.groupEvent == nil)
        let nextGroup = try await s.claimGroup(of: lateRecord, owner: "p", now: 3_200, leaseUntil: 4_000)
        #expect(nextGroup.map(\.alertID) == [late.id] && nextGroup[0].groupEvent != event)
        // Released unsent (a group interval): claimed again only when due.
        try await s.release(id: lateRecord.id, owner: "p", nextAttemptAt: 9_000)
        #expect(try await s.claimDue(endpoint: "default", owner: "p", limit: 10, now: 8_999, leaseUntil: 9_500).allSatisfy { $0.id != lateRecord.id })
        #expect(try await s.claimDue(endpoint: "default", owner: "p", limit: 10, now: 9_000, leaseUntil: 9_500).contains { $0.id == lateRecord.id })
        await s.close()
    }

    /// Members join a group between the round's silencing and the group's claim: one a silence
    /// matches is not sent with the group but silenced the next round.
    @Test(arguments: AlertStoreTests.backends) func aGroupLeavesOutAMemberASilenceMatches(_ backend: String) async throws {
        let s = try await store.open(backend)
        let first = folding.drop("a1", edge: "FRA")
        try await s.record([first], notifications: [grouped(first)], now: 1_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 2_000, leaseUntil: 3_000)
        #expect(claimed.map(\.alertID) == [first.id])
        let silence = try Silence(matchers: ["session_id": "a2"], startsAt: 1_000, endsAt: 100_000, createdBy: "ops", comment: "", createdAt: 1_000)
        try await s.addSilence(silence)
        let joined = ["a2", "a3"].map { folding.drop($0, edge: "FRA") }
        try await s.record(joined, notifications: joined.map { grouped($0) }, now: 2_000)
        let members = try await s.claimGroup(of: claimed[0], owner: "o", now: 2_000, leaseUntil: 3_000)
        #expect(Set(members.map(\.alertID)) == [first.id, joined[1].id])
        #expect(try await s.notifications(alertID: joined[0].id).first?.state == .pending)
        _ = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 2_100, leaseUntil: 3_000)
        let held = try #require(try await s.notifications(alertID: joined[0].id).first)
        #expect(held.state == .silenced && held.lastError == "silenced by \(silence.id)")
        await s.close()
    }

    /// A viewer's drop that fired at `now` and resolved half a second later, both queued.
    func episode(_ session: String, in s: AlertStore, at now: Int64) async throws -> Finding {
        let drop = folding.drop(session, edge: "FRA")
        var resolved = drop
        resolved.status = .resolved
        try await s.record([drop], notifications: [store.entry(for: drop, kind: .firing)], now: now)
        try await s.record([resolved], notifications: [store.entry(for: resolved, kind: .resolved)], now: now + 500)
        return drop
    }

    @Test(arguments: AlertStoreTests.backends) func aRateLimitedEpisodeKeepsItsQueuedResolveBack(_ backend: String) async throws {
        let s = try await store.open(backend)
        let drop = try await episode("s1", in: s, at: 1_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 2_000, leaseUntil: 3_000)
        #expect(claimed.map(\.kind) == ["firing"], "the resolve waits for its firing")
        try await s.markRateLimited(ids: claimed.map(\.id), owner: "o", reason: "route r sent 1 webhooks in the last hour")
        #expect(try await s.notifications(alertID: drop.id).map(\.state) == [.rateLimited, .rateLimited])
        #expect(try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 5_000, leaseUntil: 6_000).isEmpty)
        // A daemon whose lease ran out (another took the firing over and sent it) limits
        // nothing: neither the firing nor its queued resolve.
        let other = try await episode("s2", in: s, at: 10_000)
        let stale = try await s.claimDue(endpoint: "default", owner: "slow", limit: 10, now: 11_000, leaseUntil: 12_000)
        let taken = try await s.claimDue(endpoint: "default", owner: "quick", limit: 10, now: 12_500, leaseUntil: 20_000)
        #expect(stale.map(\.id) == taken.map(\.id))
        try await s.markDelivered(ids: taken.map(\.id), owner: "quick", status: 200, now: 13_000)
        try await s.markRateLimited(ids: stale.map(\.id), owner: "slow", reason: "route r sent 1 webhooks in the last hour")
        #expect(try await s.notifications(alertID: other.id).map(\.state) == [.delivered, .pending])
        await s.close()
    }

    @Test(arguments: AlertStoreTests.backends) func anIncidentIsDueAnUpdateWhenViewersFoldedIntoItSinceItsLastWebhook(_ backend: String) async throws {
        let s = try await store.open(backend)
        let firing = folding.incident(.firing, edge: "FRA", detected: 10_000)
        try await s.record([firing], notifications: [store.entry(for: firing, kind: .firing)], now: 10_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 10_100, leaseUntil: 20_000)
        try await s.markDelivered(ids: claimed.map(\.id), owner: "o", status: 200, now: 10_200)
        #expect(try await s.incidentsDueForUpdate(route: "r", before: 100_000, limit: 10).isEmpty, "nothing folded since")
        let viewer = folding.drop("v1", edge: "FRA")
        try await s.record([viewer], notifications: [store.entry(for: viewer, kind: .firing)], now: 11_000)
        #expect(try await s.notifications(alertID: viewer.id).first?.state == .folded)
        #expect(try await s.incidentsDueForUpdate(route: "r", before: 10_200, limit: 10).isEmpty, "the interval has not passed")
        let due = try await s.incidentsDueForUpdate(route: "r", before: 10_201, limit: 10)
        #expect(due.map(\.alert.id) == [firing.id] && due.first?.updates == 0)
        #expect(try await s.incidentsDueForUpdate(route: "other", before: 100_000, limit: 10).isEmpty)
        await s.close()
    }
}

/// Silences in the alerts table: what they match is kept as `silenced`, never sent.
@Suite(.ownThread) struct SilenceStoreTests {
    let store = AlertStoreTests()
    let folding = IncidentFoldingTests()

    @Test(arguments: AlertStoreTests.backends) func aSilenceHoldsBackWhatItMatchesUntilItEnds(_ backend: String) async throws {
        let s = try await store.open(backend)
        let silence = try Silence(
            matchers: ["type": "incident", "edge_location": "FRA56-C2"], startsAt: 1_000, endsAt: 100_000, createdBy: "ops",
            comment: "PoP maintenance", createdAt: 1_000)
        try await s.addSilence(silence)
        #expect(try await s.silences(activeAt: 5_000) == [silence])
        let onEdge = folding.incident(.firing, edge: "FRA56-C2", detected: 2_000)
        let elsewhere = folding.incident(.firing, edge: "AMS1-C1", detected: 2_000)
        // A viewer's drop on the edge (another type) before any incident there.
        let viewer = folding.drop("v", edge: "FRA56-C2")
        try await s.record([viewer], notifications: [store.entry(for: viewer, kind: .firing)], now: 1_500)
        let sent = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 1_600, leaseUntil: 1_700)
        #expect(sent.map(\.alertID) == [viewer.id])
        try await s.markDelivered(ids: [sent[0].id], owner: "o", status: 200, now: 1_650)
        try await s.record(
            [onEdge, elsewhere], notifications: [store.entry(for: onEdge, kind: .firing), store.entry(for: elsewhere, kind: .firing)], now: 2_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 3_000, leaseUntil: 60_000)
        #expect(claimed.map(\.alertID) == [elsewhere.id])
        #expect(try await s.notifications(alertID: viewer.id).first?.state == .delivered, "the type matcher spares the viewer's drop")
        let held = try #require(try await s.notifications(alertID: onEdge.id).first)
        #expect(held.state == .silenced)
        #expect(held.lastError == "silenced by \(silence.id)")
        // Expired by hand, it matches nothing more; the silenced row stays as it was.
        #expect(try await s.expireSilence(id: silence.id, now: 4_000))
        #expect(try await s.expireSilence(id: silence.id, now: 4_500) == false, "already expired")
        #expect(try await s.silences(activeAt: 5_000).isEmpty)
        #expect(try await s.silences().first?.expiredAt == 4_000)
        var later = folding.incident(.firing, edge: "FRA56-C2", detected: 9_000)
        later.startedAt = 8_000
        later.id = "later"
        try await s.record([later], notifications: [store.entry(for: later, kind: .firing)], now: 9_000)
        #expect(try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 9_000, leaseUntil: 60_000).map(\.alertID) == ["later"])
        #expect(try await s.notifications(alertID: onEdge.id).first?.state == .silenced)
        await s.close()
    }

    /// On PostgreSQL a notification added while a dispatcher claims (after its `silencing`
    /// statement, before its claim) is seen by the claim alone: the claim must pass over it
    /// by itself. (The storm test once sent an incident's resolve that way.)
    @Test(arguments: AlertStoreTests.backends) func theClaimAloneNeverLeasesWhatASilenceMatches(_ backend: String) async throws {
        let s = try await store.open(backend)
        try await s.addSilence(
            try Silence(matchers: ["type": "incident", "edge_location": "FRA56-C2"], startsAt: 1_000, endsAt: 100_000, createdBy: "ops", comment: "", createdAt: 1_000))
        let onEdge = folding.incident(.firing, edge: "FRA56-C2", detected: 2_000)
        let elsewhere = folding.incident(.firing, edge: "AMS1-C1", detected: 2_000)
        try await s.record(
            [onEdge, elsewhere], notifications: [store.entry(for: onEdge, kind: .firing), store.entry(for: elsewhere, kind: .firing)], now: 2_000)
        // The claim statement on its own, as a row committed between the two statements meets it.
        let claim = AlertStore.claiming(endpoint: "default", owner: "o", limit: 10, now: 3_000, leaseUntil: 60_000, openWindows: [])
        let leased = try await s.database.run([claim])[0].map(AlertStore.notification)
        #expect(leased.map(\.alertID) == [elsewhere.id], "the silenced edge's incident is left for the next round")
        #expect(try await s.notifications(alertID: onEdge.id).first?.state == .pending)
        // The next round silences it.
        #expect(try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 3_000, leaseUntil: 60_000).isEmpty)
        #expect(try await s.notifications(alertID: onEdge.id).first?.state == .silenced)
        await s.close()
    }

    @Test(arguments: AlertStoreTests.backends) func aScopeSilenceHoldsBackOnlyThatCohortsIncidents(_ backend: String) async throws {
        let s = try await store.open(backend)
        func incident(_ scope: [(String, String)], _ id: String) -> Finding {
            var finding = Finding(
                type: .incident, status: .firing, severity: .critical, sessionID: "", contentID: scope.first { $0.0 == "content_id" }?.1,
                edgeLocation: scope.first { $0.0 == "edge_location" }?.1, startedAt: 500, detectedAt: 2_000, summary: "incident",
                details: [("rule", .string("rebuffering")), ("scope", .object(scope.map { ($0.0, .string($0.1)) }))])
            finding.id = id
            return finding
        }
        let live = incident([("stream_type", "live")], "live")
        let vod = incident([("stream_type", "vod")], "vod")
        let pair = incident([("edge_location", "FRA56-C2"), ("content_id", "news")], "pair")
        let edge = incident([("edge_location", "FRA56-C2")], "edge")
        let title = incident([("edge_location", "FRA56-C2"), ("content_id", "Film, Part 2")], "title")
        let sequel = incident([("edge_location", "FRA56-C2"), ("content_id", "Film, Part 3")], "sequel")
        for matchers in [
            ["scope": "stream_type=live"], ["scope": "edge_location=FRA56-C2,content_id=news", "type": "incident"],
            ["scope": "edge_location=FRA56-C2,content_id=Film, Part 2"],
        ] {
            try await s.addSilence(try Silence(matchers: matchers, startsAt: 1_000, endsAt: 100_000, createdBy: "ops", comment: "", createdAt: 1_000))
        }
        #expect(try await s.silences(activeAt: 5_000).map { $0.scope } .contains("content_id=news,edge_location=FRA56-C2"), "stored in canonical order")
        let all = [live, vod, pair, edge, title, sequel]
        try await s.record(all, notifications: all.map { store.entry(for: $0, kind: .firing) }, now: 2_000)
        let claimed = try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: 3_000, leaseUntil: 60_000)
        #expect(Set(claimed.map(\.alertID)) == ["vod", "edge", "sequel"], "only the silenced cohorts are held back, not the edge's own incident")
        #expect(try await s.notifications(alertID: "title").first?.state == .silenced, "a title with a comma in it")
        #expect(try await s.notifications(alertID: "live").first?.state == .silenced)
        #expect(try await s.notifications(alertID: "pair").first?.state == .silenced)
        await s.close()
    }

    @Test func scopesAreCheckedAndPutInOrder() throws {
        #expect(try Silence.canonicalScope("edge_location=FRA56-C2,content_id=news") == "content_id=news,edge_location=FRA56-C2")
        #expect(throws: SQLError.self) { try Silence.canonicalScope("pop=FRA") }
        #expect(throws: SQLError.self) { try Silence.canonicalScope("edge_location") }
        #expect(throws: SQLError.self) { try Silence.canonicalScope("edge_location=a,edge_location=b") }
        // Titles hold commas: a comma starts a pair only before a dimension's name.
        #expect(try Silence.canonicalScope("edge_location=FRA56-C2,content_id=Film, Part 2") == "content_id=Film, Part 2,edge_location=FRA56-C2")
        #expect(try Silence.canonicalScope("content_id=a,b,edge_location=c") == "content_id=a,b,edge_location=c")
        #expect(throws: SQLError.self) { try Silence.canonicalScope("content_id=a,pop=b") }
        #expect(throws: SQLError.self) { try Silence.canonicalScope("content_id=a,edge_location=") }
    }

    @Test func badSilencesAreRefused() {
        #expect(throws: SQLError.self) { try Silence(matchers: [:], startsAt: 0, endsAt: 1, createdBy: "o", comment: "", createdAt: 0) }
        #expect(throws: SQLError.self) { try Silence(matchers: ["pop": "x"], startsAt: 0, endsAt: 1, createdBy: "o", comment: "", createdAt: 0) }
        #expect(throws: SQLError.self) { try Silence(matchers: ["type": "outage"], startsAt: 0, endsAt: 1, createdBy: "o", comment: "", createdAt: 0) }
        #expect(throws: SQLError.self) { try Silence(matchers: ["type": "incident"], startsAt: 5, endsAt: 1, createdBy: "o", comment: "", createdAt: 0) }
        #expect(throws: SQLError.self) { try Silence(matchers: ["type": "incident"], startsAt: 0, endsAt: 1, createdBy: "", comment: "", createdAt: 0) }
    }
}

/// Maintenance windows: local hours of an IANA zone, daylight saving followed.
struct MaintenanceWindowTests {
    static func ms(_ iso: String) -> Int64 {
        let f = ISO8601DateFormatter()
        return Int64(f.date(from: iso)!.timeIntervalSince1970 * 1_000)
    }

    @Test func aWindowKeepsItsLocalHoursAcrossDaylightSavingChanges() throws {
        let window = try MaintenanceWindow("sun 02:00-04:00", timeZone: "Europe/Berlin")
        // An ordinary Sunday (CET, UTC+1): 01:00Z to 03:00Z.
        #expect(!window.contains(Self.ms("2026-03-22T00:59:00Z")))
        #expect(window.contains(Self.ms("2026-03-22T01:00:00Z")))
        #expect(window.contains(Self.ms("2026-03-22T02:59:00Z")))
        #expect(!window.contains(Self.ms("2026-03-22T03:00:00Z")))
        // 29 March 2026, clocks go forward at 02:00 to 03:00: the window is 03:00-04:00 CEST,
        // one hour, 01:00Z to 02:00Z.
        #expect(window.contains(Self.ms("2026-03-29T01:30:00Z")))
        #expect(!window.contains(Self.ms("2026-03-29T02:00:00Z")))
        #expect(!window.contains(Self.ms("2026-03-29T00:30:00Z")))
        // 25 October 2026, clocks go back at 03:00 to 02:00: 02:00 CEST to 04:00 CET is three
        // hours, 00:00Z to 03:00Z.
        #expect(window.contains(Self.ms("2026-10-25T00:00:00Z")))
        #expect(window.contains(Self.ms("2026-10-25T02:30:00Z")))
        #expect(!window.contains(Self.ms("2026-10-25T03:00:00Z")))
        // Summer (CEST, UTC+2): 00:00Z to 02:00Z; Monday is not in it.
        #expect(window.contains(Self.ms("2026-07-05T00:30:00Z")))
        #expect(!window.contains(Self.ms("2026-07-06T00:30:00Z")))
    }

    @Test func aWindowPastMidnightBelongsToTheDayItStarts() throws {
        let window = try MaintenanceWindow("sat 23:00-01:00", timeZone: "America/New_York")
        // Saturday 4 July 2026 23:30 EDT is Sunday 03:30Z; Sunday 00:30 EDT still in it.
        #expect(window.contains(Self.ms("2026-07-05T03:30:00Z")))
        #expect(window.contains(Self.ms("2026-07-05T04:30:00Z")))
        #expect(!window.contains(Self.ms("2026-07-05T05:00:00Z")))
        #expect(!window.contains(Self.ms("2026-07-04T03:30:00Z")), "Friday night is not Saturday's window")
        #expect(window.text == "sat 23:00-01:00")
    }

    @Test func badWindowsAreRefused() throws {
        #expect(throws: SQLError.self) { try MaintenanceWindow("sun 02:00-04:00", timeZone: "Mars/Olympus") }
        #expect(throws: SQLError.self) { try MaintenanceWindow("someday 02:00-04:00", timeZone: "UTC") }
        #expect(throws: SQLError.self) { try MaintenanceWindow("sun 2-4", timeZone: "UTC") }
        #expect(throws: SQLError.self) { try MaintenanceWindow("sun 02:00-02:00", timeZone: "UTC") }
        #expect(try MaintenanceWindow("weekends 00:00-24:00", timeZone: "UTC").weekdays == [1, 7])
    }

    @Test(.ownThread, arguments: AlertStoreTests.backends) func aRecurringSilenceHoldsBackOnlyInsideItsWindow(_ backend: String) async throws {
        let store = AlertStoreTests()
        let folding = IncidentFoldingTests()
        let s = try await store.open(backend)
        let silence = try Silence(
            matchers: ["type": "incident"], startsAt: Self.ms("2026-01-01T00:00:00Z"), endsAt: Self.ms("2027-01-01T00:00:00Z"), createdBy: "ops",
            comment: "weekly maintenance", createdAt: 0, recurrence: try MaintenanceWindow("sun 02:00-04:00", timeZone: "Europe/Berlin"))
        try await s.addSilence(silence)
        #expect(try await s.silences() == [silence], "the window reads back as written")
        let inside = Self.ms("2026-10-25T02:30:00Z")  // the extra hour of the clocks going back
        let outside = Self.ms("2026-10-25T03:30:00Z")
        let a = folding.incident(.firing, edge: "FRA56-C2", detected: 1)
        try await s.record([a], notifications: [store.entry(for: a, kind: .firing)], now: inside)
        #expect(try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: inside, leaseUntil: inside + 1).isEmpty)
        #expect(try await s.notifications(alertID: a.id).first?.state == .silenced)
        let b = folding.incident(.firing, edge: "AMS1-C1", detected: 1)
        try await s.record([b], notifications: [store.entry(for: b, kind: .firing)], now: outside)
        #expect(try await s.claimDue(endpoint: "default", owner: "o", limit: 10, now: outside, leaseUntil: outside + 1).map(\.alertID) == [b.id])
        #expect(silence.state(at: inside) == "active" && silence.state(at: outside) == "waiting")
        await s.close()
    }
}
