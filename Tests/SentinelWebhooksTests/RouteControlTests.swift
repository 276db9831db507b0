import CMCDDetection
import Foundation
import Logging
import SentinelAlerts
import SentinelConfig
import SentinelHTTP
import SentinelJSON
import SentinelTestSupport
import Testing

@testable import SentinelWebhooks

/// A route's grouping, group interval, hourly limit and an incident's folded viewers, through
/// the dispatcher to the repository's webhook receiver (a real HTTP server in its own process).
@Suite(.serialized, .ownThread) struct RouteControlTests {
    let base = DispatcherTests()

    func route(_ adjust: (inout DetectionRules.Route) -> Void) -> DetectionRules.Route {
        var route = DetectionRules.Route(name: "drops", webhook: "default")
        route.types = [.bufferDrop]
        adjust(&route)
        return route
    }

    func drop(_ session: String, edge: String, _ status: FindingStatus = .firing) -> Finding {
        Finding(
            type: .bufferDrop, status: status, severity: .critical, sessionID: session, contentID: "movie", edgeLocation: edge,
            startedAt: 1_000, detectedAt: status == .firing ? 2_000 : 9_000, summary: "Buffer dropped 85%", details: [("drop_percent", .double(85))])
    }

    func enqueue(_ store: AlertStore, _ findings: [Finding], routes: [DetectionRules.Route]) async throws {
        let routing = WebhookRouting(routes: routes, endpoints: ["default"])
        try await store.record(findings, notifications: routing.plan(findings, now: AlertStore.nowMs()))
    }

    func dispatcher(_ store: AlertStore, _ receiver: WebhookReceiver, routes: [DetectionRules.Route]) -> WebhookDispatcher {
        WebhookDispatcher(
            store: store, endpoints: [base.endpoint(receiver)], routes: routes, retentionDays: 0, pollIntervalMs: 50,
            backoff: Backoff(baseMs: 100, capMs: 400), logger: base.logger)
    }

    static func strings(_ value: JSONValue?) -> [String] {
        guard case .array(let items)? = value else { return [] }
        return items.compactMap { $0["session_id"]?.stringValue }
    }

    @Test(arguments: ["sqlite", "postgres"]) func aGroupedRouteSendsOneWebhookPerGroupFiringAndResolved(_ backend: String) async throws {
        let receiver = try WebhookReceiver(secrets: [DispatcherTests.secret])
        defer { receiver.stop() }
        let store = try await base.store(backend)
        let routes = [route { $0.groupBy = [.edgeLocation] }]
        let fra = (0..<5).map { drop("fra-\($0)", edge: "FRA56-C2") }
        let ams = (0..<2).map { drop("ams-\($0)", edge: "AMS1-C1") }
        try await enqueue(store, fra + ams, routes: routes)
        let running = Task { try await dispatcher(store, receiver, routes: routes).run() }
        #expect(await receiver.wait(10) { $0.count >= 2 })
        try await Task.sleep(for: .milliseconds(500))
        #expect(receiver.attempts.count == 2, "one webhook per edge")
        for attempt in receiver.attempts {
            #expect(attempt.signatureValid)
            #expect(attempt.body?["type"] == .string("group.firing"))
            #expect(attempt.body?["event_id"]?.stringValue == attempt.id)
            let edge = attempt.body?["group"]?["edge_location"]?.stringValue
            let sessions = Set(Self.strings(attempt.body?["findings"]))
            #expect(sessions == Set((edge == "FRA56-C2" ? fra : ams).map(\.sessionID)), "\(String(describing: edge))")
            #expect(attempt.body?["count"] == .int(Int64(sessions.count)))
        }
        // Their resolves: one webhook per edge again, after the firing ones.
        try await enqueue(store, (fra + ams).map { drop($0.sessionID, edge: $0.edgeLocation!, .resolved) }, routes: routes)
        #expect(await receiver.wait(10) { $0.count >= 4 })
        try await Task.sleep(for: .milliseconds(300))
        running.cancel()
        _ = await running.result
        let resolved = receiver.attempts.filter { $0.body?["type"] == .string("group.resolved") }
        #expect(resolved.count == 2 && receiver.attempts.count == 4)
        #expect(Set(resolved.flatMap { Self.strings($0.body?["findings"]) }) == Set((fra + ams).map(\.sessionID)))
        let rows = try await store.notifications()
        #expect(rows.count == 14 && rows.allSatisfy { $0.state == .delivered }, "\(rows.map(\.state))")
        #expect(Set(rows.compactMap(\.groupEvent)) == Set(receiver.attempts.map(\.id)))
        await store.close()
    }

    @Test func aGroupWaitsItsIntervalAfterItsLastWebhook() async throws {
        let receiver = try WebhookReceiver(secrets: [DispatcherTests.secret])
        defer { receiver.stop() }
        let store = try await base.store()
        let routes = [route {
            $0.groupBy = [.edgeLocation]
            $0.groupIntervalMs = 2_000
        }]
        try await enqueue(store, [drop("first", edge: "FRA56-C2")], routes: routes)
        let running = Task { try await dispatcher(store, receiver, routes: routes).run() }
        #expect(await receiver.wait(10) { $0.count >= 1 })
        // Two more viewers on the edge: they go out together, once the interval has passed.
        try await enqueue(store, [drop("second", edge: "FRA56-C2"), drop("third", edge: "FRA56-C2")], routes: routes)
        #expect(await receiver.wait(10) { $0.count >= 2 })
        running.cancel()
        _ = await running.result
        let attempts = receiver.attempts.sorted { $0.receivedAt < $1.receivedAt }
        #expect(attempts.count == 2)
        #expect(Set(Self.strings(attempts.last?.body?["findings"])) == ["second", "third"])
        #expect(attempts[1].receivedAt - attempts[0].receivedAt >= 1.9, "sent \(attempts[1].receivedAt - attempts[0].receivedAt) s after the first")
        await store.close()
    }

    @Test(arguments: ["sqlite", "postgres"]) func aRouteOverItsHourlyLimitKeepsTheRestUnsent(_ backend: String) async throws {
        let receiver = try WebhookReceiver(secrets: [DispatcherTests.secret])
        defer { receiver.stop() }
        let store = try await base.store(backend)
        let routes = [route { $0.maxPerHour = 2 }]
        try await enqueue(store, (0..<5).map { drop("viewer-\($0)", edge: "FRA56-C2") }, routes: routes)
        let dispatcher = dispatcher(store, receiver, routes: routes)
        let running = Task { try await dispatcher.run() }
        #expect(try await base.waitFor(10) { try await store.notificationCounts()["pending", default: 0] == 0 })
        try await Task.sleep(for: .milliseconds(300))
        running.cancel()
        _ = await running.result
        #expect(receiver.attempts.count == 2)
        let counts = try await store.notificationCounts()
        #expect(counts["delivered"] == 2 && counts["rate_limited"] == 3, "\(counts)")
        #expect(dispatcher.statistics.rateLimited == 3)
        #expect(try await store.notifications().filter { $0.state == .rateLimited }.allSatisfy { $0.lastError?.contains("2 webhooks in the last hour") == true })
        await store.close()
    }

    @Test(arguments: ["sqlite", "postgres"]) func anIncidentsWebhookCountsTheViewersItFoldedAndUpdatesWhenMoreJoin(_ backend: String) async throws {
        let receiver = try WebhookReceiver(secrets: [DispatcherTests.secret])
        defer { receiver.stop() }
        let store = try await base.store(backend)
        var incidents = DetectionRules.incidentRoute
        incidents.groupIntervalMs = 1_000
        let routes = [route { $0.groupWaitMs = 600_000 }, incidents]
        // Four viewers' drops held back, then the incident on their edge folds them.
        let viewers = (0..<4).map { drop("viewer-\($0)", edge: "FRA56-C2") }
        try await enqueue(store, viewers, routes: routes)
        var incident = Finding(
            type: .incident, status: .firing, severity: .critical, sessionID: "", contentID: nil, edgeLocation: "FRA56-C2", startedAt: 1_000,
            detectedAt: 3_000, summary: "rebuffering on FRA56-C2", details: [("rule", .string("rebuffering"))])
        incident.id = FindingID.make(sessionID: "incident\u{0}rebuffering\u{0}edge_location=FRA56-C2", type: .incident, startedAt: 1_000)
        try await enqueue(store, [incident], routes: routes)
        let dispatcher = dispatcher(store, receiver, routes: routes)
        let running = Task { try await dispatcher.run() }
        #expect(await receiver.wait(10) { $0.count >= 1 })
        let firing = try #require(receiver.attempts.first)
        #expect(firing.body?["type"] == .string("finding.firing"))
        #expect(firing.body?["folded"]?["notifications"] == .int(4) && firing.body?["folded"]?["sessions"] == .int(4))
        #expect(Set(Self.strings(firing.body?["folded"]?["examples"])) == Set(viewers.map(\.sessionID)))
        // A fifth viewer while it is open: folded at once, and an update tells of it.
        let late = drop("viewer-late", edge: "FRA56-C2")
        try await enqueue(store, [late], routes: routes)
        #expect(try await store.notifications(alertID: late.id).first?.state == .folded)
        try await Task.sleep(for: .milliseconds(1_100))
        await dispatcher.maintain(now: AlertStore.nowMs())
        #expect(await receiver.wait(10) { $0.count >= 2 })
        await dispatcher.maintain(now: AlertStore.nowMs() + 5_000)  // nothing new folded: no second update
        try await Task.sleep(for: .milliseconds(500))
        running.cancel()
        _ = await running.result
        #expect(receiver.attempts.count == 2)
        let update = try #require(receiver.attempts.last)
        #expect(update.body?["type"] == .string("finding.update"))
        #expect(update.body?["folded"]?["notifications"] == .int(5))
        #expect(update.id != firing.id)
        await store.close()
    }

    @Test func twoDispatchersSharingPostgreSQLSendEachViewerInOneGroupOnly() async throws {
        let receiver = try WebhookReceiver(secrets: [DispatcherTests.secret])
        defer { receiver.stop() }
        let store = try await base.store("postgres")
        let other = try await AlertStore.open(url: (store.database as! PostgresDatabase).url, logger: base.logger)
        let routes = [route { $0.groupBy = [.edgeLocation] }]
        let viewers = (0..<60).map { drop("viewer-\($0)", edge: ["FRA56-C2", "AMS1-C1", "LHR3-C1"][$0 % 3]) }
        try await enqueue(store, viewers, routes: routes)
        let a = Task { try await dispatcher(store, receiver, routes: routes).run() }
        let b = Task { try await dispatcher(other, receiver, routes: routes).run() }
        #expect(try await base.waitFor(20) { try await store.notificationCounts()["delivered"] == 60 })
        try await Task.sleep(for: .milliseconds(300))
        a.cancel()
        b.cancel()
        _ = await (a.result, b.result)
        // However the two split the work, no viewer is in two webhooks, and a webhook holds one edge.
        let delivered = receiver.attempts.flatMap { Self.strings($0.body?["findings"]) }
        #expect(delivered.count == 60 && Set(delivered) == Set(viewers.map(\.sessionID)), "\(delivered.count) findings in \(receiver.attempts.count) webhooks")
        #expect(Set(receiver.attempts.map(\.id)).count == receiver.attempts.count)
        for attempt in receiver.attempts {
            guard case .array(let findings)? = attempt.body?["findings"] else { continue }
            #expect(Set(findings.compactMap { $0["edge_location"]?.stringValue }).count == 1)
        }
        await store.close()
        await other.close()
    }
}
