import AsyncHTTPClient
import CMCDDetection
import CoreMetrics
import Foundation
import Logging
import SentinelAlerts
import SentinelConfig
import SentinelHTTP
import SentinelJSON
import SentinelSinks
import ServiceLifecycle
import Synchronization

/// Delivers the outbox: leases due notifications, POSTs them signed, and records the outcome.
///
/// 2xx is delivered; 5xx, 429 (honouring `Retry-After`), timeouts and connection errors are
/// retried with exponential backoff and jitter; any other 4xx is not retried (dead at once);
/// a notification still undelivered after the endpoint's `max_age_ms` is dead. At most
/// `max_concurrency` deliveries per endpoint are in flight. Leases make several dispatchers
/// (several daemons on one PostgreSQL table) safe, and a dispatcher that stops mid-retry leaves
/// the row for the next one: the receiver gets the same `webhook-id` until it answers 2xx.
public final class WebhookDispatcher: Service, Sendable {
    /// Counters for `/metrics`.
    public struct Statistics: Sendable, Equatable {
        public var delivered = 0
        public var failedAttempts = 0
        public var dead = 0
        public var pending = 0
        public var inFlight = 0
        /// Attempts that failed since the last delivery, and the last one's reason.
        public var consecutiveFailures = 0
        public var lastFailure: String?
        /// Notifications kept unsent because their route was over `max_per_hour`.
        public var rateLimited = 0
    }

    let store: AlertStore
    let endpoints: [SentinelConfiguration.Webhook]
    let routes: [DetectionRules.Route]
    let retentionDays: Int
    let pollIntervalMs: Int64
    let backoff: Backoff
    let owner: String
    let logger: Logger
    private let stats = Mutex(Statistics())
    private let instruments: Instruments

    public init(
        store: AlertStore, endpoints: [SentinelConfiguration.Webhook], routes: [DetectionRules.Route], retentionDays: Int,
        pollIntervalMs: Int64 = 100, backoff: Backoff = Backoff(baseMs: 1_000, capMs: 300_000), logger: Logger,
        metrics: any MetricsFactory = NOOPMetricsHandler.instance
    ) {
        instruments = Instruments(metrics)
        self.store = store
        self.endpoints = endpoints
        self.routes = routes
        self.retentionDays = retentionDays
        self.pollIntervalMs = pollIntervalMs
        self.backoff = backoff
        self.owner = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UUID().uuidString.prefix(8))"
        self.logger = logger
    }

    public var statistics: Statistics { stats.withLock { $0 } }

    /// The dispatcher's metrics (swift-metrics labels) and their help text.
    public static let metricHelp: [String: String] = [
        "cmcd_sentinel_webhook_deliveries_total": "Notifications delivered (2xx).",
        "cmcd_sentinel_webhook_failed_attempts_total": "Delivery attempts that failed and will be retried.",
        "cmcd_sentinel_webhook_dead_total": "Notifications given up (rejected, or too old).",
        "cmcd_sentinel_webhook_rate_limited_total": "Notifications kept unsent because their route was over max_per_hour.",
        "cmcd_sentinel_webhook_pending": "Notifications waiting in the outbox (all daemons sharing the table).",
        "cmcd_sentinel_webhook_in_flight": "Deliveries in progress.",
    ]

    /// The instruments the dispatcher counts with.
    struct Instruments: Sendable {
        let delivered: Counter
        let failedAttempts: Counter
        let dead: Counter
        let rateLimited: Counter
        let pending: Gauge
        let inFlight: Gauge

        init(_ factory: any MetricsFactory) {
            delivered = Counter(label: "cmcd_sentinel_webhook_deliveries_total", factory: factory)
            failedAttempts = Counter(label: "cmcd_sentinel_webhook_failed_attempts_total", factory: factory)
            dead = Counter(label: "cmcd_sentinel_webhook_dead_total", factory: factory)
            rateLimited = Counter(label: "cmcd_sentinel_webhook_rate_limited_total", factory: factory)
            pending = Gauge(label: "cmcd_sentinel_webhook_pending", factory: factory)
            inFlight = Gauge(label: "cmcd_sentinel_webhook_in_flight", factory: factory)
            pending.record(0)
            inFlight.record(0)
        }
    }

    /// Changes the statistics and moves the instruments with them.
    private func update(_ change: (inout Statistics) -> Void) {
        let (before, after) = stats.withLock { s in
            let before = s
            change(&s)
            return (before, s)
        }
        if after.delivered > before.delivered { instruments.delivered.increment(by: after.delivered - before.delivered) }
        if after.failedAttempts > before.failedAttempts { instruments.failedAttempts.increment(by: after.failedAttempts - before.failedAttempts) }
        if after.dead > before.dead { instruments.dead.increment(by: after.dead - before.dead) }
        if after.rateLimited > before.rateLimited { instruments.rateLimited.increment(by: after.rateLimited - before.rateLimited) }
        if after.pending != before.pending { instruments.pending.record(after.pending) }
        if after.inFlight != before.inFlight { instruments.inFlight.record(after.inFlight) }
    }

    /// Runs until a graceful shutdown or cancellation; deliveries in flight then finish and
    /// are recorded before it returns.
    public func run() async throws {
        var clients: [String: HTTPClient] = [:]
        for endpoint in endpoints {
            clients[endpoint.name] = HTTPClientOptions(timeoutMs: endpoint.timeoutMs, verifyTLS: endpoint.verifyTLS).makeClient()
        }
        let routesByName = Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        await withTaskGroup(of: Delivery?.self) { group in
            var inFlight: [String: Int] = [:]
            var inFlightByRoute: [String: Int] = [:]
            var lastMaintenance: Int64 = 0
            var lastOutboxWarning: Int64 = 0
            let poll = pollIntervalMs
            group.addTask {
                try? await Task.sleep(for: .milliseconds(poll))
                return nil
            }
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                let now = AlertStore.nowMs()
                for endpoint in endpoints {
                    let free = endpoint.maxConcurrency - inFlight[endpoint.name, default: 0]
                    guard free > 0, let client = clients[endpoint.name] else { continue }
                    let leaseUntil = now + endpoint.timeoutMs + 30_000
                    var deliveries: [Delivery] = []
                    do {
                        let claimed = try await store.claimDue(endpoint: endpoint.name, owner: owner, limit: free, now: now, leaseUntil: leaseUntil)
                        var taken = Set<String>()
                        var budgets: [String: Int] = [:]
                        for notification in claimed where !taken.contains(notification.id) {
                            guard
                                let delivery = try await prepare(
                                    notification, route: routesByName[notification.route], now: now, leaseUntil: leaseUntil, budgets: &budgets,
                                    inFlight: inFlightByRoute)
                            else { continue }
                            taken.formUnion(delivery.ids)
                            deliveries.append(delivery)
                        }
                    } catch {
                        if now - lastOutboxWarning >= 10_000 {  // not every poll while the database is away
                            lastOutboxWarning = now
                            logger.warning("webhooks: cannot read the outbox (retrying): \(error)")
                        }
                    }
                    for delivery in deliveries {
                        inFlight[endpoint.name, default: 0] += 1
                        inFlightByRoute[delivery.route, default: 0] += 1
                        group.addTask {
                            await self.deliver(delivery, to: endpoint, with: client)
                            return delivery
                        }
                    }
                }
                update { $0.inFlight = inFlight.values.reduce(0, +) }
                if now - lastMaintenance >= 10_000 {
                    lastMaintenance = now
                    await maintain(now: now)
                }
                guard let finished = await group.next() else { break }
                if let delivery = finished {
                    inFlight[delivery.endpoint, default: 1] -= 1
                    inFlightByRoute[delivery.route, default: 1] -= 1
                } else {
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(poll))
                        return nil
                    }
                }
            }
            // Stopping: no new leases; let the deliveries in flight finish and be recorded.
            while await group.next() != nil {}
        }
        for client in clients.values { try? await client.shutdown() }
    }

    /// One webhook to send: a notification alone, or the members of a group together.
    struct Delivery: Sendable {
        /// The `webhook-id`: the notification's, or the group delivery's.
        var id: String
        var route: String
        var endpoint: String
        var kind: String
        var members: [NotificationRecord]
        var body: String

        var ids: [String] { members.map(\.id) }
        /// The oldest member's creation (for `max_age_ms`) and the most attempts any had.
        var createdAt: Int64 { members.map(\.createdAt).min() ?? 0 }
        var attempts: Int { members.map(\.attempts).max() ?? 0 }
    }

    /// What a claimed notification becomes: its group's delivery (deferred while the group's
    /// interval runs), itself with the viewers an incident folded, or nothing when its route is
    /// over its hourly limit (then it is kept as `rate_limited`).
    func prepare(
        _ notification: NotificationRecord, route: DetectionRules.Route?, now: Int64, leaseUntil: Int64, budgets: inout [String: Int],
        inFlight: [String: Int]
    ) async throws -> Delivery? {
        var members = [notification]
        var body = notification.payload
        var id = notification.id
        if let route, let key = notification.groupKey {
            if notification.groupEvent == nil, let interval = route.groupIntervalMs, let last = try await store.lastGroupDelivery(groupKey: key),
                now - last < interval
            {
                try await store.release(id: notification.id, owner: owner, nextAttemptAt: last + interval)
                return nil
            }
            members = try await store.claimGroup(of: notification, owner: owner, now: now, leaseUntil: leaseUntil)
            id = members.first?.groupEvent ?? notification.id
            let findings = members.compactMap { (try? JSONParser.parse($0.payload))?["finding"] }
            body = WebhookRouting.groupPayload(eventID: id, kind: notification.kind, route: route, findings: findings, now: now)
        } else if notification.attempts == 0, let incident = try await withFolded(notification) {
            body = incident
        }
        if let route, let limit = route.maxPerHour {
            if budgets[route.name] == nil {
                budgets[route.name] = limit - (try await store.deliveredWebhooks(route: route.name, since: now - 3_600_000)) - inFlight[route.name, default: 0]
            }
            guard budgets[route.name, default: 0] > 0 else {
                try await store.markRateLimited(ids: members.map(\.id), owner: owner, reason: "route \(route.name) sent \(limit) webhooks in the last hour")
                update { $0.rateLimited += members.count }
                logger.warning("webhook route \(route.name): over \(limit) per hour; \(id) kept as rate_limited")
                return nil
            }
            budgets[route.name, default: 0] -= 1
        }
        return Delivery(id: id, route: notification.route, endpoint: notification.endpoint, kind: notification.kind, members: members, body: body)
    }

    /// An incident's notification body with the viewers' notifications folded into it so far
    /// (`folded`), saved so that retries send the same; nil for any other notification.
    func withFolded(_ notification: NotificationRecord) async throws -> String? {
        // Cheap test first: only an incident's finding has this member (values are escaped).
        guard notification.payload.contains(#""type":"incident""#), let payload = try? JSONParser.parse(notification.payload),
            payload["finding"]?["type"] == .string("incident"), case .object(var members) = payload
        else { return nil }
        let summary = try await store.foldedSummary(incidentID: notification.alertID)
        members.removeAll { $0.key == "folded" }
        members.append(("folded", summary.jsonValue))
        let body = JSONWriter.string(.object(members))
        try await store.updatePayload(id: notification.id, owner: owner, payload: body)
        return body
    }

    /// One attempt for one delivery, and its outcome for every member in the store.
    func deliver(_ delivery: Delivery, to endpoint: SentinelConfiguration.Webhook, with client: HTTPClient) async {
        let now = AlertStore.nowMs()
        let body = Array(delivery.body.utf8)
        var headers = [
            ("Content-Type", "application/json"), ("User-Agent", "cmcd-sentinel"), ("webhook-id", delivery.id),
            ("webhook-timestamp", String(now / 1000)),
        ]
        if !endpoint.secrets.isEmpty {
            headers.append(("webhook-signature", WebhookSignature.sign(id: delivery.id, timestamp: now / 1000, body: body, secrets: endpoint.secrets)))
        }
        headers += endpoint.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let outcome = await HTTPAttempt(url: endpoint.url, headers: headers, body: body).send(with: client, timeoutMs: endpoint.timeoutMs)
        let attempts = delivery.attempts + 1
        let what = delivery.members.count > 1 ? "\(delivery.id) (\(delivery.kind), a group of \(delivery.members.count))" : "\(delivery.id) (\(delivery.kind))"
        do {
            switch outcome {
            case .delivered(let status):
                try await store.markDelivered(ids: delivery.ids, owner: owner, status: status, now: AlertStore.nowMs())
                update {
                    $0.delivered += 1
                    $0.consecutiveFailures = 0
                    $0.lastFailure = nil
                }
                logger.info("webhook \(endpoint.name): delivered \(what) after \(attempts) attempt(s)")
            case .reject(let status, let reason):
                try await store.markDead(ids: delivery.ids, owner: owner, status: status, error: reason)
                update { $0.dead += 1 }
                logger.error("webhook \(endpoint.name): \(what) rejected (\(reason)); not retried")
            case .retry(let status, let reason, let retryAfter):
                update {
                    $0.failedAttempts += 1
                    $0.consecutiveFailures += 1
                    $0.lastFailure = "\(endpoint.name): \(reason)"
                }
                let next = AlertStore.nowMs() + backoff.delayMs(afterAttempts: attempts, retryAfterMs: retryAfter)
                if next - delivery.createdAt > endpoint.maxAgeMs {
                    try await store.markDead(
                        ids: delivery.ids, owner: owner, status: status, error: "\(reason) (gave up after \(attempts) attempts)")
                    update { $0.dead += 1 }
                    logger.error("webhook \(endpoint.name): \(what) dead after \(attempts) attempts: \(reason)")
                } else {
                    try await store.markRetry(ids: delivery.ids, owner: owner, status: status, error: reason, nextAttemptAt: next)
                    // What waits now, for /healthz (otherwise counted at each maintenance pass).
                    let pending = try await store.notificationCounts()["pending", default: 0]
                    update { $0.pending = pending }
                    logger.warning("webhook \(endpoint.name): \(what) attempt \(attempts) failed (\(reason)); retry in \(next - AlertStore.nowMs()) ms")
                }
            }
        } catch {
            // The lease runs out and the notification is tried again: at least once.
            logger.warning("webhook \(endpoint.name): cannot record the outcome for \(delivery.id): \(error)")
        }
    }

    /// Puts a `repeat` or `update` notification of each alert in the outbox, numbered after
    /// those it had (so every daemon sharing the table gives it the same id).
    func enqueue(_ kind: OutboxEntry.Kind, on route: DetectionRules.Route, for alerts: [(AlertRecord, Int)], now: Int64) async throws {
        for (alert, sent) in alerts {
            let id = WebhookRouting.eventID(alertID: alert.id, route: route.name, kind: kind, sequence: sent + 1)
            let payload = WebhookRouting.payload(eventID: id, kind: kind, route: route.name, finding: alert.findingJSON, now: now)
            try await store.record(
                [], notifications: [OutboxEntry(id: id, alertID: alert.id, route: route.name, endpoint: route.webhook, kind: kind, payload: payload)],
                now: now)
        }
    }

    /// Repeats and incident updates for routes that ask for them, expiry of old undelivered
    /// notifications, retention.
    func maintain(now: Int64) async {
        do {
            let known = Set(endpoints.map(\.name))
            for route in routes where known.contains(route.webhook) {
                if let interval = route.repeatIntervalMs {
                    let due = try await store.alertsDueForRepeat(route: route.name, before: now - interval, limit: 1_000)
                    try await enqueue(.repeat, on: route, for: due.map { ($0.alert, $0.repeats) }, now: now)
                }
                if let interval = route.groupIntervalMs, route.types.isEmpty || route.types.contains(.incident) {
                    let due = try await store.incidentsDueForUpdate(route: route.name, before: now - interval, limit: 1_000)
                    try await enqueue(.update, on: route, for: due.map { ($0.alert, $0.updates) }, now: now)
                }
            }
            for endpoint in endpoints {
                let expired = try await store.expirePending(endpoint: endpoint.name, createdBefore: now - endpoint.maxAgeMs, now: now)
                if expired > 0 {
                    update { $0.dead += expired }
                    logger.error("webhook \(endpoint.name): \(expired) notification(s) expired undelivered")
                }
            }
            if retentionDays > 0 {
                let purged = try await store.purgeResolved(before: now - Int64(retentionDays) * 86_400_000)
                if purged > 0 { logger.info("alerts table: \(purged) resolved alert(s) past retention deleted") }
            }
            let pending = try await store.notificationCounts()["pending", default: 0]
            update { $0.pending = pending }
        } catch {
            logger.warning("webhooks: maintenance failed: \(error)")
        }
    }
}

extension WebhookDispatcher: HealthReporting {
    /// Notifications wait in the outbox while deliveries fail: records are committed all the
    /// same, so the dispatcher is at worst degraded.
    public var health: ComponentHealth {
        let s = statistics
        if s.consecutiveFailures > 0 { return ComponentHealth(.degraded, detail: s.lastFailure, backlog: s.pending) }
        return ComponentHealth(.ok, backlog: s.pending)
    }
}
