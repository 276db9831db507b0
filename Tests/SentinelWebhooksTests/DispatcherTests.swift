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

/// Signing and routing: known answers.
struct WebhookRoutingTests {
    @Test func signaturesMatchTheStandardWebhooksExample() {
        // The example of the Standard Webhooks specification.
        let signature = WebhookSignature.sign(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8),
            secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        let rotating = WebhookSignature.sign(id: "m", timestamp: 1, body: [], secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain"])
        #expect(rotating.split(separator: " ").count == 2)
        #expect(rotating.hasPrefix("v1,") && rotating.contains(" v1,"))
    }

    func drop(_ percent: Double, _ status: FindingStatus = .firing, severity: Severity = .critical) -> Finding {
        Finding(
            type: .bufferDrop, status: status, severity: severity, sessionID: "s", contentID: nil, edgeLocation: nil, startedAt: 1_000,
            detectedAt: 2_000, summary: "drop", details: [("drop_percent", .double(percent))])
    }

    @Test func theDefaultRouteTakesBufferDropsOfSeventyPercentOrMore() {
        let routing = WebhookRouting(routes: DetectionRules().routes, endpoints: ["default"])
        #expect(routing.plan([drop(69.9, severity: .warning)], now: 0).isEmpty)
        let entries = routing.plan([drop(70)], now: 0)
        #expect(entries.map(\.kind) == [.firing])
        #expect(entries[0].delayMs == 30_000, "a viewer's page is held 30 s for an incident to fold it")
        #expect(entries[0].endpoint == "default" && entries[0].route == "severe-buffer-drops")
        #expect(routing.plan([drop(70)], now: 99)[0].id == entries[0].id, "the event id is stable")
        let stall = Finding(
            type: .bufferStarvation, status: .firing, severity: .critical, sessionID: "s", contentID: nil, edgeLocation: nil, startedAt: 1,
            detectedAt: 2, summary: "", details: [])
        #expect(routing.plan([stall], now: 0).isEmpty)
        let resolved = routing.plan([drop(80, .resolved)], now: 0)
        #expect(resolved.map(\.kind) == [.resolved])
        #expect(resolved[0].id != entries[0].id)
        let payload = try! JSONParser.parse(entries[0].payload)
        #expect(payload["event_id"] == .string(entries[0].id))
        #expect(payload["type"] == .string("finding.firing"))
        #expect(payload["finding"].map(JSONWriter.string) == drop(70).jsonLine)
        #expect(WebhookRouting(routes: DetectionRules().routes, endpoints: []).unknownEndpoints == ["severe-buffer-drops -> default", "incidents -> default"])
    }
}

/// The dispatcher against the repository's webhook receiver, a real HTTP server in its own
/// process that verifies signatures and fails, throttles or stalls as told.
@Suite(.serialized, .ownThread) struct DispatcherTests {
    let logger = Logger(label: "test")
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    func store(_ backend: String = "sqlite") async throws -> AlertStore {
        if backend == "postgres" { return try await AlertStore.open(url: try PostgresServer.shared.newDatabase(), logger: logger) }
        let path = TestScratch.directory.appendingPathComponent("outbox-\(UUID().uuidString).db").path
        return try await AlertStore.open(url: "sqlite:\(path)", logger: logger)
    }

    func endpoint(_ receiver: WebhookReceiver, _ adjust: (inout SentinelConfiguration.Webhook) -> Void = { _ in }) -> SentinelConfiguration.Webhook {
        var e = SentinelConfiguration.Webhook()
        e.name = "default"
        e.url = receiver.url
        e.secrets = [Self.secret]
        e.timeoutMs = 1_000
        e.headers = ["X-Team": "video"]
        adjust(&e)
        return e
    }

    /// Puts `count` firing notifications for severe drops in the outbox.
    func enqueue(_ store: AlertStore, count: Int = 1) async throws -> [OutboxEntry] {
        // The default routes, the drops' hold left out: delivery, not grouping, is tested here.
        let routes = DetectionRules().routes.map { route in
            var route = route
            route.groupWaitMs = 0
            return route
        }
        let routing = WebhookRouting(routes: routes, endpoints: ["default"])
        var findings: [Finding] = []
        for i in 0..<count {
            findings.append(
                Finding(
                    type: .bufferDrop, status: .firing, severity: .critical, sessionID: "viewer-\(i)", contentID: "movie",
                    edgeLocation: "FRA56-P3", startedAt: 1_000, detectedAt: 2_000, summary: "Buffer dropped 85%",
                    details: [("drop_percent", .double(85))]))
        }
        let entries = routing.plan(findings, now: AlertStore.nowMs())
        try await store.record(findings, notifications: entries)
        return entries
    }

    func dispatcher(_ store: AlertStore, _ endpoint: SentinelConfiguration.Webhook, baseMs: Int64 = 100) -> WebhookDispatcher {
        WebhookDispatcher(
            store: store, endpoints: [endpoint], routes: DetectionRules().routes, retentionDays: 0, pollIntervalMs: 50,
            backoff: Backoff(baseMs: baseMs, capMs: baseMs * 4), logger: logger)
    }

    func waitFor(_ seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return try await condition()
    }

    @Test func failuresThrottlingAndAStallAreRetriedUntilOneDelivery() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: ["500", "429", "stall"], stallSeconds: 3, retryAfter: "0")
        defer { receiver.stop() }
        let store = try await store()
        let entries = try await enqueue(store)
        let running = Task { try await dispatcher(store, endpoint(receiver)).run() }
        #expect(try await waitFor(20) { try await store.notifications().first?.state == .delivered })
        running.cancel()
        _ = await running.result
        let row = try #require(try await store.notifications().first)
        #expect(row.attempts == 4 && row.lastStatus == 204)
        // The stalled attempt is logged when the receiver finally answers, after the retry.
        #expect(await receiver.wait(5) { $0.count == 4 })
        let attempts = receiver.attempts.sorted { $0.attempt < $1.attempt }
        #expect(attempts.map(\.answer) == ["500", "429", "stall", "204"])
        #expect(attempts.allSatisfy { $0.id == entries[0].id && $0.signatureValid }, "one event id, signed every time")
        #expect(attempts.allSatisfy { $0.headers["x-team"] == "video" && $0.headers["content-type"] == "application/json" })
        #expect(attempts.last?.body == (try JSONParser.parse(entries[0].payload)))
        await store.close()
    }

    @Test func aClientErrorIsNotRetried() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: ["400"])
        defer { receiver.stop() }
        let store = try await store()
        _ = try await enqueue(store)
        let running = Task { try await dispatcher(store, endpoint(receiver)).run() }
        #expect(try await waitFor(10) { try await store.notifications().first?.state == .dead })
        try await Task.sleep(for: .milliseconds(500))
        running.cancel()
        _ = await running.result
        #expect(receiver.attempts.count == 1)
        #expect(try await store.notifications().first?.lastStatus == 400)
        await store.close()
    }

    @Test func aWrongSecretIsRejectedByTheReceiverAndNotRetried() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret])
        defer { receiver.stop() }
        let store = try await store()
        _ = try await enqueue(store)
        let running = Task { try await dispatcher(store, endpoint(receiver) { $0.secrets = ["whsec_c2VjcmV0"] }).run() }
        #expect(try await waitFor(10) { try await store.notifications().first?.state == .dead })
        running.cancel()
        _ = await running.result
        #expect(receiver.attempts.map(\.status) == [401])
        await store.close()
    }

    @Test func retryAfterIsHonoured() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: ["429"], retryAfter: "2")
        defer { receiver.stop() }
        let store = try await store()
        _ = try await enqueue(store)
        let running = Task { try await dispatcher(store, endpoint(receiver)).run() }
        #expect(try await waitFor(15) { try await store.notifications().first?.state == .delivered })
        running.cancel()
        _ = await running.result
        let attempts = receiver.attempts
        #expect(attempts.count == 2)
        if attempts.count == 2 { #expect(attempts[1].receivedAt - attempts[0].receivedAt >= 1.9, "the backoff alone would wait 0.1 s") }
        await store.close()
    }

    @Test func aRestartMidRetryDeliversOnceUnderTheSameId() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: ["503"])
        defer { receiver.stop() }
        let store = try await store()
        let entries = try await enqueue(store)
        // The first dispatcher fails once, schedules a retry in about 2 s, and is stopped.
        let first = Task { try await dispatcher(store, endpoint(receiver), baseMs: 2_000).run() }
        #expect(try await waitFor(10) { try await store.notifications().first?.attempts == 1 })
        first.cancel()
        _ = await first.result
        #expect(try await store.notifications().first?.state == .pending)
        // A new dispatcher (a restarted daemon) picks the row up from the table.
        let second = Task { try await dispatcher(store, endpoint(receiver)).run() }
        #expect(try await waitFor(15) { try await store.notifications().first?.state == .delivered })
        second.cancel()
        _ = await second.result
        // And a third finds nothing left to send.
        let third = Task { try await dispatcher(store, endpoint(receiver)).run() }
        try await Task.sleep(for: .seconds(1))
        third.cancel()
        _ = await third.result
        let attempts = receiver.attempts
        #expect(attempts.map(\.answer) == ["503", "204"])
        #expect(attempts.allSatisfy { $0.id == entries[0].id })
        #expect(attempts.filter { (200..<300).contains($0.status) }.count == 1, "delivered once")
        await store.close()
    }

    @Test func deliveriesPerEndpointStayWithinTheConcurrencyLimit() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: ["stall"], stallSeconds: 0.5)
        defer { receiver.stop() }
        let store = try await store()
        _ = try await enqueue(store, count: 8)
        let running = Task { try await dispatcher(store, endpoint(receiver) { $0.maxConcurrency = 2 }).run() }
        #expect(try await waitFor(20) { try await store.notificationCounts()["delivered"] == 8 })
        running.cancel()
        _ = await running.result
        let attempts = receiver.attempts
        #expect(attempts.count == 8)
        #expect(attempts.map(\.concurrent).max() == 2, "at most 2 in flight, and 2 used")
        await store.close()
    }

    @Test func aNotificationStillFailingPastItsMaximumAgeIsDead() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret], plan: Array(repeating: "502", count: 50))
        defer { receiver.stop() }
        let store = try await store()
        _ = try await enqueue(store)
        let running = Task { try await dispatcher(store, endpoint(receiver) { $0.maxAgeMs = 1_000 }).run() }
        #expect(try await waitFor(15) { try await store.notifications().first?.state == .dead })
        running.cancel()
        _ = await running.result
        let row = try #require(try await store.notifications().first)
        #expect(row.attempts >= 2)
        #expect(row.lastError?.contains("gave up") == true)
        await store.close()
    }

    @Test func twoDispatchersSharingPostgreSQLDeliverEachNotificationOnce() async throws {
        let receiver = try WebhookReceiver(secrets: [Self.secret])
        defer { receiver.stop() }
        let store = try await store("postgres")
        let entries = try await enqueue(store, count: 30)
        let other = try await AlertStore.open(url: (store.database as! PostgresDatabase).url, logger: logger)
        let a = Task { try await dispatcher(store, endpoint(receiver)).run() }
        let b = Task { try await dispatcher(other, endpoint(receiver)).run() }
        #expect(try await waitFor(20) { try await store.notificationCounts()["delivered"] == 30 })
        a.cancel()
        b.cancel()
        _ = await (a.result, b.result)
        let ids = receiver.attempts.map(\.id)
        #expect(ids.count == 30)
        #expect(Set(ids) == Set(entries.map(\.id)))
        await store.close()
        await other.close()
    }
}

/// A refused connection (the receiver is down) is an answer at once: the attempt is retried on
/// the backoff schedule, not after the whole request timeout. (The timeout is long, so that a
/// loaded machine, with the suite running side by side, cannot blur the two.)
@Test(.timeLimit(.minutes(2))) func aRefusedConnectionFailsAtOnceNotAfterTheTimeout() async throws {
    let client = HTTPClientOptions(timeoutMs: 60_000).makeClient()
    let refused = RefusedPort()
    let started = ContinuousClock.now
    let outcome = await HTTPAttempt(url: "http://127.0.0.1:\(refused.port)/hook", body: Array("{}".utf8)).send(with: client, timeoutMs: 60_000)
    let took = ContinuousClock.now - started
    withExtendedLifetime(refused) {}
    try await client.shutdown()
    guard case .retry(nil, let reason, nil) = outcome else {
        Issue.record("a refused connection is retried: \(outcome)")
        return
    }
    #expect(reason.contains("refused") || reason.contains("connect"), "\(reason)")
    #expect(took < .seconds(20), "took \(took) of a 60 s timeout")
}
