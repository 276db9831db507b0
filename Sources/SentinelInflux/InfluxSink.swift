import CMCDDetection
import CMCDRecords
import Logging
import SentinelConfig
import SentinelSinks
import ServiceLifecycle

/// Findings (and, with `write_raw`, every request) to InfluxDB. Writes are batched in the
/// background by the writer, a Service of the daemon's group; `flush` reports `SinkPending`
/// while InfluxDB has not confirmed everything.
public final class InfluxSink: FindingSink, RecordSink, HealthReporting, MetricsReporting, Service {
    public let name = "influx"
    let writer: InfluxWriter
    let writeRaw: Bool
    let maxBufferedPoints: Int

    public init(configuration: SentinelConfiguration.Influx, logger: Logger) {
        writer = InfluxWriter(configuration: configuration, logger: logger)
        writeRaw = configuration.writeRaw
        maxBufferedPoints = configuration.maxBufferedPoints
    }

    /// Sends the batches until the group shuts down (after the daemon, which drains first).
    public func run() async { await writer.run() }

    public func record(_ sample: Sample) throws {
        guard writeRaw else { return }
        try writer.append { InfluxPoints.append(sample, to: &$0) }
    }

    public func waitForRoom() async throws { try await writer.waitForRoom() }

    public func write(_ findings: [Finding]) async throws {
        for finding in findings { try writer.append { InfluxPoints.append(finding, to: &$0) } }
        try await writer.waitForRoom()
    }

    public func flush() async throws { try await drain(timeoutSeconds: 2) }

    public func drain(timeoutSeconds: Double) async throws {
        guard try await writer.flush(waitingUpTo: timeoutSeconds) else {
            let s = writer.statistics
            throw SinkPending("InfluxDB has not confirmed \(s.bufferedPoints) points (\(s.lastError ?? "writing"))")
        }
    }

    public func close() { writer.close() }

    public var health: ComponentHealth {
        let s = writer.statistics
        if s.failed { return ComponentHealth(.down, detail: "failed: \(s.lastError ?? "")", backlog: s.bufferedPoints) }
        if s.bufferedPoints >= maxBufferedPoints {
            return ComponentHealth(.down, detail: "buffer full (\(s.lastError ?? "waiting"))", backlog: s.bufferedPoints)
        }
        // Points waiting while writes fail: commits wait for them, retried on the backoff.
        if let error = s.lastError, s.bufferedPoints > 0 { return ComponentHealth(.degraded, detail: error, backlog: s.bufferedPoints) }
        return ComponentHealth(.ok, backlog: s.bufferedPoints)
    }

    public func renderMetrics() -> String {
        let s = writer.statistics
        return """
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
