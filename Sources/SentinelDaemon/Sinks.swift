import CMCDDetection
import CMCDRecords
import Foundation
import Logging
import SentinelAlerts
import SentinelKafka
import SentinelConfig
import SentinelHTTP
import SentinelInflux
import SentinelWebhooks

/// Findings (and, with `write_raw`, every request) to InfluxDB. Writes are batched in the
/// background; `flush` reports `SinkPending` while InfluxDB has not confirmed everything.
public final class InfluxSink: FindingSink, SampleSink, @unchecked Sendable {
    public let name = "influx"
    let writer: InfluxWriter
    let writeRaw: Bool

    public init(configuration: SentinelConfiguration.Influx, metrics: DaemonMetrics, logger: Logger) {
        writer = InfluxWriter(configuration: configuration, logger: logger)
        writeRaw = configuration.writeRaw
        let writer = self.writer
        metrics.register(source: { InfluxSink.render(writer.statistics) })
        metrics.register(component: "influx") {
            let s = writer.statistics
            if s.failed { return ComponentHealth(.down, detail: "failed: \(s.lastError ?? "")", backlog: s.bufferedPoints) }
            if s.bufferedPoints >= configuration.maxBufferedPoints {
                return ComponentHealth(.down, detail: "buffer full (\(s.lastError ?? "waiting"))", backlog: s.bufferedPoints)
            }
            // Points waiting while writes fail: commits wait for them, retried on the backoff.
            if let error = s.lastError, s.bufferedPoints > 0 { return ComponentHealth(.degraded, detail: error, backlog: s.bufferedPoints) }
            return ComponentHealth(.ok, backlog: s.bufferedPoints)
        }
    }

    deinit { writer.close() }

    public func record(_ sample: Sample) throws {
        guard writeRaw else { return }
        try writer.append { InfluxPoints.append(sample, to: &$0) }
    }

    public func write(_ findings: [Finding]) throws {
        for finding in findings { try writer.append { InfluxPoints.append(finding, to: &$0) } }
    }

    public func flush() throws {
        guard try writer.flush(waitingUpTo: 2) else {
            throw SinkPending("InfluxDB has not confirmed \(writer.statistics.bufferedPoints) points (\(writer.statistics.lastError ?? "writing"))")
        }
    }

    public func drain(timeoutSeconds: Double) throws {
        guard try writer.flush(waitingUpTo: timeoutSeconds) else {
            throw SinkPending("InfluxDB has not confirmed \(writer.statistics.bufferedPoints) points (\(writer.statistics.lastError ?? "writing"))")
        }
    }

    public func close() { writer.close() }

    static func render(_ s: InfluxWriter.Statistics) -> String {
        """
        # HELP cmcd_sentinel_influx_points_written_total Points InfluxDB accepted.
        # TYPE cmcd_sentinel_influx_points_written_total counter
        cmcd_sentinel_influx_points_written_total \(s.pointsWritten)
        # HELP cmcd_sentinel_influx_batches_written_total Write requests InfluxDB accepted.
        # TYPE cmcd_sentinel_influx_batches_written_total counter
        cmcd_sentinel_influx_batches_written_total \(s.batchesWritten)
        # HELP cmcd_sentinel_influx_write_retries_total Write attempts that failed and were retried.
        # TYPE cmcd_sentinel_influx_write_retries_total counter
        cmcd_sentinel_influx_write_retries_total \(s.retries)
        # HELP cmcd_sentinel_influx_buffered_points Points waiting for InfluxDB.
        # TYPE cmcd_sentinel_influx_buffered_points gauge
        cmcd_sentinel_influx_buffered_points \(s.bufferedPoints)
        # HELP cmcd_sentinel_influx_failed 1 once a write failed for good (the daemon stops uncommitted).
        # TYPE cmcd_sentinel_influx_failed gauge
        cmcd_sentinel_influx_failed \(s.failed ? 1 : 0)
        # HELP cmcd_sentinel_influx_write_seconds Time spent in accepted writes, retries included.
        # TYPE cmcd_sentinel_influx_write_seconds counter
        cmcd_sentinel_influx_write_seconds \(s.writeSeconds)

        """
    }
}

/// Findings to the alerts table, each with its webhook notifications in the outbox, in one
/// transaction per write: once `write` returns, the alert and its notifications are durable.
/// A database that stays unreachable for `maxRetrySeconds` is a final failure.
public final class AlertSink: FindingSink, @unchecked Sendable {
    public let name = "alerts"
    let store: AlertStore
    let routing: WebhookRouting
    let logger: Logger
    let maxRetrySeconds: Double
    private let lock = NSLock()
    private var writes = 0
    private var failures = 0
    private var lastFailure: String?

    public init(store: AlertStore, routing: WebhookRouting, metrics: DaemonMetrics, logger: Logger, maxRetrySeconds: Double = 120) {
        self.store = store
        self.routing = routing
        self.logger = logger
        self.maxRetrySeconds = maxRetrySeconds
        metrics.register(source: { [unowned self] in render() })
        metrics.register(component: "alerts") { [unowned self] in
            // A failing write holds the daemon (it retries), so nothing is committed meanwhile.
            lock.withLock { lastFailure.map { ComponentHealth(.down, detail: $0) } ?? ComponentHealth(.ok) }
        }
    }

    public func write(_ findings: [Finding]) throws {
        let now = AlertStore.nowMs()
        let entries = routing.plan(findings, now: now)
        let store = self.store
        let start = monotonicSeconds()
        let backoff = Backoff(baseMs: 200, capMs: 10_000)
        var attempts = 0
        while true {
            do {
                try store.recordBlocking(findings, notifications: entries, now: now)
                lock.withLock {
                    writes += 1
                    lastFailure = nil
                }
                return
            } catch {
                attempts += 1
                lock.withLock {
                    failures += 1
                    lastFailure = "\(error)"
                }
                if monotonicSeconds() - start >= maxRetrySeconds { throw error }
                let delay = backoff.delayMs(afterAttempts: attempts)
                logger.warning("alerts table write failed (\(error)); retry \(attempts) in \(delay) ms")
                Thread.sleep(forTimeInterval: Double(delay) / 1000)
            }
        }
    }

    public func flush() throws {}

    func render() -> String {
        let (w, f) = lock.withLock { (writes, failures) }
        return """
            # HELP cmcd_sentinel_alerts_writes_total Transactions that stored findings in the alerts table.
            # TYPE cmcd_sentinel_alerts_writes_total counter
            cmcd_sentinel_alerts_writes_total \(w)
            # HELP cmcd_sentinel_alerts_write_failures_total Failed attempts to store findings (retried).
            # TYPE cmcd_sentinel_alerts_write_failures_total counter
            cmcd_sentinel_alerts_write_failures_total \(f)

            """
    }
}

extension WebhookDispatcher {
    /// The dispatcher's metrics in the Prometheus text format.
    public func renderMetrics() -> String {
        let s = statistics
        return """
            # HELP cmcd_sentinel_webhook_deliveries_total Notifications delivered (2xx).
            # TYPE cmcd_sentinel_webhook_deliveries_total counter
            cmcd_sentinel_webhook_deliveries_total \(s.delivered)
            # HELP cmcd_sentinel_webhook_failed_attempts_total Delivery attempts that failed and will be retried.
            # TYPE cmcd_sentinel_webhook_failed_attempts_total counter
            cmcd_sentinel_webhook_failed_attempts_total \(s.failedAttempts)
            # HELP cmcd_sentinel_webhook_dead_total Notifications given up (rejected, or too old).
            # TYPE cmcd_sentinel_webhook_dead_total counter
            cmcd_sentinel_webhook_dead_total \(s.dead)
            # HELP cmcd_sentinel_webhook_pending Notifications waiting in the outbox (all daemons sharing the table).
            # TYPE cmcd_sentinel_webhook_pending gauge
            cmcd_sentinel_webhook_pending \(s.pending)
            # HELP cmcd_sentinel_webhook_in_flight Deliveries in progress.
            # TYPE cmcd_sentinel_webhook_in_flight gauge
            cmcd_sentinel_webhook_in_flight \(s.inFlight)

            """
    }
}

/// The daemon's checkpoints in the alerts store, under the consumer group's name.
public final class AlertStoreCheckpoints: CheckpointStore {
    let store: AlertStore
    let group: String

    public init(store: AlertStore, group: String) {
        self.store = store
        self.group = group
    }

    public func save(_ checkpoints: [DetectionCheckpoint]) throws { try store.saveCheckpointsBlocking(group: group, checkpoints) }

    public func load(_ partition: KafkaTopicPartition) throws -> DetectionCheckpoint? {
        try store.checkpointBlocking(group: group, topic: partition.topic, partition: partition.partition)
    }

    public func discard(_ partition: KafkaTopicPartition) throws {
        try store.deleteCheckpointBlocking(group: group, topic: partition.topic, partition: partition.partition)
    }
}
