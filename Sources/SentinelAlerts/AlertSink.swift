import SentinelJSON
import CMCDDetection
import CoreMetrics
import Logging
import SentinelHTTP
import SentinelSinks
import Synchronization

/// Findings to the alerts table, each with its webhook notifications in the outbox, in one
/// transaction per write: once `write` returns, the alert and its notifications are durable.
/// A database that stays unreachable for `maxRetrySeconds` is a final failure.
public final class AlertSink: FindingSink, HealthReporting {
    public let name = "alerts"
    /// The outbox entries of a batch of findings at a time (the webhook routes' plan).
    public typealias NotificationPlan = @Sendable ([Finding], Int64) -> [OutboxEntry]

    let store: AlertStore
    let plan: NotificationPlan
    let logger: Logger
    let maxRetrySeconds: Double
    private let lastFailure = Mutex<String?>(nil)
    private let writes: Counter
    private let failures: Counter

    /// The sink's metrics (swift-metrics labels) and their help text.
    public static let metricHelp: [String: String] = [
        "cmcd_sentinel_alerts_writes_total": "Transactions that stored findings in the alerts table.",
        "cmcd_sentinel_alerts_write_failures_total": "Failed attempts to store findings (retried).",
    ]

    /// `metrics`: where its counters are made (`metricHelp` names them).
    public init(
        store: AlertStore, notifications plan: @escaping NotificationPlan, logger: Logger, maxRetrySeconds: Double = 120,
        metrics: any MetricsFactory = NOOPMetricsHandler.instance
    ) {
        writes = Counter(label: "cmcd_sentinel_alerts_writes_total", factory: metrics)
        failures = Counter(label: "cmcd_sentinel_alerts_write_failures_total", factory: metrics)
        self.store = store
        self.plan = plan
        self.logger = logger
        self.maxRetrySeconds = maxRetrySeconds
    }

    public func write(_ findings: [Finding]) async throws {
        let now = AlertStore.nowMs()
        let entries = plan(findings, now)
        let start = monotonicSeconds()
        let backoff = Backoff(baseMs: 200, capMs: 10_000)
        var attempts = 0
        while true {
            do {
                // The write's time is this attempt's: a retried write is a change of now, not of
                // when the batch first came (what a poller of changes goes by).
                try await store.record(findings, notifications: entries, now: attempts == 0 ? now : AlertStore.nowMs())
                writes.increment()
                lastFailure.withLock { $0 = nil }
                return
            } catch {
                attempts += 1
                failures.increment()
                lastFailure.withLock { $0 = "\(error)" }
                if monotonicSeconds() - start >= maxRetrySeconds { throw error }
                let delay = backoff.delayMs(afterAttempts: attempts)
                logger.warning("alerts table write failed (\(error)); retry \(attempts) in \(delay) ms")
                try await Task.sleep(for: .milliseconds(delay))
            }
        }
    }

    public func flush() async throws {}

    /// A failing write holds the daemon (it retries), so nothing is committed meanwhile.
    public var health: ComponentHealth {
        lastFailure.withLock { $0.map { ComponentHealth(.down, detail: $0) } ?? ComponentHealth(.ok) }
    }
}

/// The daemon's detection checkpoints in the alerts store, under the consumer group's name.
public struct AlertStoreCheckpoints: CheckpointStore {
    let store: AlertStore
    let group: String

    public init(store: AlertStore, group: String) {
        self.store = store
        self.group = group
    }

    public func save(_ checkpoints: [DetectionCheckpoint]) async throws { try await store.saveCheckpoints(group: group, checkpoints) }

    public func load(topic: String, partition: Int32) async throws -> DetectionCheckpoint? {
        try await store.checkpoint(group: group, topic: topic, partition: partition)
    }

    public func discard(topic: String, partition: Int32) async throws {
        try await store.deleteCheckpoint(group: group, topic: topic, partition: partition)
    }
}

extension AlertStore {
    /// Incidents still firing (their rows), for a starting daemon's cohorts to take back: they
    /// resolve, or go on, under their ids rather than firing twice or never resolving.
    public func openIncidents() async throws -> [OpenIncident] {
        var query = AlertStore.Query()
        query.type = FindingType.incident.rawValue
        query.status = FindingStatus.firing.rawValue
        query.limit = 10_000
        return try await alerts(matching: query).compactMap { alert in
            let details = (try? JSONParser.parse(alert.details, limits: .init(maxDepth: 8, maxElements: 10_000))) ?? .object([])
            return OpenIncident(details: details, startedAt: alert.startedAt, id: alert.id, severity: Severity(rawValue: alert.severity) ?? .critical)
        }
    }
}
