import CMCDDetection
import CMCDRecords

/// Where findings go. The daemon commits offsets only after `flush` returned, so a sink must
/// hold everything it was given by then. `flush` throws `SinkPending` while it is still
/// working on it (the commit waits); any other error is final and stops the daemon
/// uncommitted. Called from the consume loop only, one call at a time.
public protocol FindingSink: AnyObject, Sendable {
    /// The sink's name in metrics, logs and `/healthz`.
    var name: String { get }
    /// Takes a batch of findings, in the order they were found.
    func write(_ findings: [Finding]) async throws
    /// Returns once everything written so far is held (throws `SinkPending` if not yet).
    func flush() async throws
    /// At a graceful stop: waits up to `timeoutSeconds` for everything to be held.
    func drain(timeoutSeconds: Double) async throws
}

extension FindingSink {
    public func drain(timeoutSeconds: Double) async throws { try await flush() }
}

/// A sink that also takes every parsed request (InfluxDB's raw measurement).
public protocol RecordSink: AnyObject, Sendable {
    /// Takes one request without waiting (the consume loop calls it per record); throws once
    /// the sink failed for good.
    func record(_ sample: Sample) throws
    /// Returns once the sink has room for more records (the loop awaits it once per batch).
    func waitForRoom() async throws
}

/// A sink of the cohorts' closed windows (live QoE rollups), taken as they close; the records
/// behind them are committed only after the sink holds them, as for `RecordSink`.
public protocol RollupSink: AnyObject, Sendable {
    func rollup(_ windows: [CohortRollup]) throws
}

/// A sink does not hold everything yet but is still trying: commits wait for it.
public struct SinkPending: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Something that reports its state for `/healthz` (a sink, the webhook dispatcher).
public protocol HealthReporting: Sendable {
    var health: ComponentHealth { get }
}

/// One component's state for `/healthz`.
public struct ComponentHealth: Sendable, Equatable {
    public enum Status: String, Sendable, Comparable {
        /// Working.
        case ok
        /// Failing, but records are still committed (retrying, or a backlog that waits).
        case degraded
        /// Records wait on it and it cannot take them.
        case down

        var rank: Int { self == .ok ? 0 : (self == .degraded ? 1 : 2) }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    public var status: Status
    public var detail: String?
    /// What waits on it (points, notifications), when it counts any.
    public var backlog: Int?

    public init(_ status: Status, detail: String? = nil, backlog: Int? = nil) {
        self.status = status
        self.detail = detail
        self.backlog = backlog
    }
}

/// A partition's detection state (`DetectionEngine.checkpoint()`) as of `nextOffset`: the
/// state after every record before that offset, whose findings the sinks already hold.
public struct DetectionCheckpoint: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var nextOffset: Int64
    public var state: [UInt8]

    public init(topic: String, partition: Int32, nextOffset: Int64, state: [UInt8]) {
        self.topic = topic
        self.partition = partition
        self.nextOffset = nextOffset
        self.state = state
    }
}

/// Where the daemon keeps each partition's detection checkpoint (the alerts store, shared by
/// the daemons of a group on PostgreSQL).
public protocol CheckpointStore: Sendable {
    func save(_ checkpoints: [DetectionCheckpoint]) async throws
    func load(topic: String, partition: Int32) async throws -> DetectionCheckpoint?
    func discard(topic: String, partition: Int32) async throws
}
