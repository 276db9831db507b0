import CMCDDetection
import CMCDRecords
import CoreMetrics
import Logging
import SentinelConfig
import SentinelSinks
import ServiceLifecycle

/// Findings, cohort windows (`cmcd_qoe`) and, with `write_raw`, every request to InfluxDB. Writes are batched in the
/// background by the writer, a Service of the daemon's group; `flush` reports `SinkPending`
/// while InfluxDB has not confirmed everything.
public final class InfluxSink: FindingSink, RecordSink, RollupSink, HealthReporting, Service {
    public let name = "influx"
    let writer: InfluxWriter
    let writeRaw: Bool
    let writeQoE: Bool
    let maxBufferedPoints: Int

    /// `metrics`: where the writer's counters are made (`InfluxWriter.metricHelp` names them).
    public init(configuration: SentinelConfiguration.Influx, logger: Logger, metrics: any MetricsFactory = NOOPMetricsHandler.instance) {
        writer = InfluxWriter(configuration: configuration, logger: logger, metrics: metrics)
        writeRaw = configuration.writeRaw
        writeQoE = configuration.writeQoE
        maxBufferedPoints = configuration.maxBufferedPoints
    }

    /// Sends the batches until the group shuts down (after the daemon, which drains first).
    public func run() async { await writer.run() }

    public func record(_ sample: Sample) throws {
        guard writeRaw else { return }
        try writer.append(maxBytes: InfluxPoints.maxRequestPointBytes) { InfluxPoints.write(sample, at: $0) }
    }

    public func waitForRoom() async throws { try await writer.waitForRoom() }

    /// Each closed cohort window as a `cmcd_qoe` point.
    public func rollup(_ windows: [CohortRollup]) throws {
        guard writeQoE else { return }
        for rollup in windows { try writer.append { InfluxPoints.append(rollup, to: &$0) } }
    }

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
}
