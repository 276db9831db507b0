import CMCDDetection
import CMCDRecords
import Foundation
import SentinelJSON
import SentinelSinks
import Synchronization

/// The daemon's counters, shared between the consuming thread (which writes them) and the
/// HTTP thread (which reads them). Rendered in the Prometheus text format.
public final class DaemonMetrics: @unchecked Sendable {
    private let lock = NSLock()
    /// Counted per record (an uncontended atomic), so `/metrics` is exact at any moment.
    private let consumed = Atomic<Int>(0)
    private var skipped: [SkipReason: Int] = [:]
    private var memberErrors: [String: Int] = [:]
    private var deadLetters = 0
    private var detection = DetectionStatistics()
    private var liveSessions = 0
    private var lag: [String: Int64] = [:]  // "topic\u{0}partition" -> lag
    private var commits = 0
    private var commitFailures = 0
    private var kafkaErrors = 0
    private var lastKafkaError: (message: String, at: Date)?
    private var output: [String: (seconds: Double, writes: Int)] = [:]
    private var commitsDeferred = 0
    private var sources: [@Sendable () -> String] = []
    private var components: [(name: String, check: @Sendable () -> ComponentHealth)] = []
    /// Each component's status as last seen, and since when it has had it.
    private var componentSince: [String: (status: ComponentHealth.Status, since: Date)] = [:]
    /// When commits started being held back because a sink has not confirmed its writes.
    private var deferringSince: Date?
    private var assigned: [String] = []
    private var checkpoints = (saved: 0, failed: 0, seconds: 0.0, lastBytes: 0, restoredSessions: 0)

    public init() {}

    /// Records consumed so far.
    public var recordsConsumed: Int { consumed.load(ordering: .relaxed) }

    /// Counts one record consumed (the consumer thread, per record).
    @inline(__always)
    func countConsumed() { consumed.add(1, ordering: .relaxed) }

    func update(
        skipped: [SkipReason: Int], memberErrors: [String: Int], deadLetters: Int, detection: DetectionStatistics,
        liveSessions: Int, assigned: [String]
    ) {
        lock.withLock {
            self.memberErrors = memberErrors
            self.deadLetters = deadLetters
            self.skipped = skipped
            self.detection = detection
            self.liveSessions = liveSessions
            self.assigned = assigned
        }
    }

    func recordCommit(success: Bool) {
        lock.withLock {
            if success {
                commits += 1
                deferringSince = nil
            } else {
                commitFailures += 1
            }
        }
    }

    func recordCheckpoint(success: Bool, seconds: Double, bytes: Int) {
        lock.withLock {
            if success {
                checkpoints.saved += 1
                checkpoints.lastBytes = bytes
            } else {
                checkpoints.failed += 1
            }
            checkpoints.seconds += seconds
        }
    }

    func recordRestore(sessions: Int) { lock.withLock { checkpoints.restoredSessions += sessions } }

    func recordKafkaError(_ message: String) {
        lock.withLock {
            kafkaErrors += 1
            lastKafkaError = (message, Date())
        }
    }

    func recordOutput(sink: String, seconds: Double) {
        lock.withLock {
            output[sink, default: (0, 0)].seconds += seconds
            output[sink, default: (0, 0)].writes += 1
        }
    }

    func recordCommitDeferred() {
        lock.withLock {
            commitsDeferred += 1
            if deferringSince == nil { deferringSince = Date() }
        }
    }

    /// Adds metrics in the Prometheus text format from a sink or service.
    public func register(source: @escaping @Sendable () -> String) { lock.withLock { sources.append(source) } }

    /// Adds a health check: nil when healthy, else what is wrong.
    /// Adds a component (a sink, the webhook dispatcher) to `/healthz`.
    public func register(component name: String, health: @escaping @Sendable () -> ComponentHealth) {
        lock.withLock { components.append((name, health)) }
    }

    func setLag(topic: String, partition: Int32, lag: Int64) {
        lock.withLock { self.lag["\(topic)\u{0}\(partition)"] = lag }
    }

    /// Commits held back longer than this mean records are no longer being committed.
    static let commitStallSeconds = 10.0

    /// `/healthz`: each component (the broker, every sink) `ok`, `degraded` or `down`, since
    /// when and with what backlog, as one line of JSON. Unhealthy (503) only when records are
    /// no longer being committed: the broker is unreachable, a component that commits wait on
    /// is down, or commits have been held back for `commitStallSeconds`. A degraded sink that
    /// the daemon does not wait on (webhooks, whose outbox holds the notifications) is not.
    public var health: (healthy: Bool, detail: String) {
        let checks = lock.withLock { components }
        var seen = checks.map { ($0.name, $0.check()) }
        let now = Date()
        return lock.withLock {
            if let last = lastKafkaError, now.timeIntervalSince(last.at) < 30 {
                seen.insert(("kafka", ComponentHealth(.down, detail: last.message)), at: 0)
            } else {
                seen.insert(("kafka", ComponentHealth(.ok, detail: assigned.isEmpty ? "no partition assigned yet" : nil)), at: 0)
            }
            var members: [(key: String, value: JSONValue)] = []
            for (name, health) in seen {
                if componentSince[name]?.status != health.status { componentSince[name] = (health.status, now) }
                var fields: [(key: String, value: JSONValue)] = [
                    ("status", .string(health.status.rawValue)),
                    ("since", .string(RFC3339.format(milliseconds: Int64(componentSince[name]!.since.timeIntervalSince1970 * 1000)))),
                ]
                if let backlog = health.backlog { fields.append(("backlog", .int(Int64(backlog)))) }
                if let detail = health.detail { fields.append(("detail", .string(String(detail.prefix(300))))) }
                members.append((name, .object(fields)))
            }
            let worst = seen.map(\.1.status).max() ?? .ok
            let stalled = deferringSince.map { now.timeIntervalSince($0) >= Self.commitStallSeconds } ?? false
            let committing = worst != .down && !stalled
            var top: [(key: String, value: JSONValue)] = [
                ("status", .string(worst.rawValue)), ("committing", .bool(committing)),
            ]
            if let deferringSince {
                top.append(("commits_held_since", .string(RFC3339.format(milliseconds: Int64(deferringSince.timeIntervalSince1970 * 1000)))))
            }
            top += [("partitions", .array(assigned.map(JSONValue.string))), ("components", .object(members))]
            return (committing, JSONWriter.string(.object(top)))
        }
    }

    /// The Prometheus text exposition.
    public func render() -> String {
        let extra = lock.withLock { sources }.map { $0() }.joined()
        let process = ProcessMetrics.render()
        return lock.withLock {
            var out = ""
            func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
                Self.append(name, type, help, samples, to: &out)
            }
            metric("cmcd_sentinel_records_consumed_total", "counter", "Records consumed from Kafka.", [("", "\(consumed.load(ordering: .relaxed))")])
            metric(
                "cmcd_sentinel_records_skipped_total", "counter", "Records skipped, by reason.",
                SkipReason.allCases.map { ("reason=\"\($0.rawValue)\"", "\(skipped[$0, default: 0])") })
            metric(
                "cmcd_sentinel_cmcd_member_errors_total", "counter",
                "CMCD members left out of otherwise kept records, by key (a reserved key, custom or unknown).",
                memberErrors.keys.sorted().map { ("key=\"\($0)\"", "\(memberErrors[$0]!)") })
            metric("cmcd_sentinel_dead_letters_total", "counter", "Skipped records produced to the dead-letter topic.", [("", "\(deadLetters)")])
            metric("cmcd_sentinel_samples_late_total", "counter", "Samples older than the reorder tolerance (ignored).", [("", "\(detection.late)")])
            metric(
                "cmcd_sentinel_samples_future_total", "counter",
                "Samples dated implausibly far ahead of the wall clock (sessions.max_future_ms; ignored).", [("", "\(detection.futureTimestamps)")])
            var findings: [(String, String)] = []
            for type in FindingType.allCases {
                for severity in Severity.allCases {
                    for status in FindingStatus.allCases {
                        let n = detection.findings[.init(type: type, severity: severity, status: status)] ?? 0
                        findings.append(("type=\"\(type.rawValue)\",severity=\"\(severity.rawValue)\",status=\"\(status.rawValue)\"", "\(n)"))
                    }
                }
            }
            metric("cmcd_sentinel_findings_total", "counter", "Findings emitted, by type, severity and status.", findings)
            metric("cmcd_sentinel_live_sessions", "gauge", "Sessions with state in memory.", [("", "\(liveSessions)")])
            metric(
                "cmcd_sentinel_session_evictions_total", "counter", "Sessions evicted, by reason.",
                [("reason=\"idle\"", "\(detection.idleEvictions)"), ("reason=\"capacity\"", "\(detection.capacityEvictions)")])
            metric(
                "cmcd_sentinel_consumer_lag", "gauge", "Records behind the end of each partition (librdkafka statistics).",
                lag.sorted { $0.key < $1.key }.map { key, value in
                    let parts = key.split(separator: "\u{0}")
                    return ("topic=\"\(Self.escape(String(parts[0])))\",partition=\"\(parts.count > 1 ? String(parts[1]) : "")\"", "\(value)")
                })
            metric("cmcd_sentinel_commits_total", "counter", "Offset commits confirmed by the broker.", [("", "\(commits)")])
            metric("cmcd_sentinel_commit_failures_total", "counter", "Offset commits that failed (retried).", [("", "\(commitFailures)")])
            metric("cmcd_sentinel_kafka_errors_total", "counter", "Errors reported by the Kafka client.", [("", "\(kafkaErrors)")])
            metric(
                "cmcd_sentinel_commits_deferred_total", "counter", "Commits postponed because a sink did not hold everything yet.",
                [("", "\(commitsDeferred)")])
            metric(
                "cmcd_sentinel_checkpoints_total", "counter", "Detection checkpoints saved, by result.",
                [("result=\"saved\"", "\(checkpoints.saved)"), ("result=\"failed\"", "\(checkpoints.failed)")])
            metric("cmcd_sentinel_checkpoint_seconds_total", "counter", "Time spent saving detection checkpoints.", [("", "\(checkpoints.seconds)")])
            metric("cmcd_sentinel_checkpoint_bytes", "gauge", "Size of the last checkpoint saved (all its partitions).", [("", "\(checkpoints.lastBytes)")])
            metric(
                "cmcd_sentinel_sessions_restored_total", "counter", "Live sessions restored from checkpoints when partitions were assigned.",
                [("", "\(checkpoints.restoredSessions)")])
            out += "# HELP cmcd_sentinel_sink_latency_seconds Time spent writing findings to the sinks.\n"
            out += "# TYPE cmcd_sentinel_sink_latency_seconds summary\n"
            for (sink, o) in output.sorted(by: { $0.key < $1.key }) {
                out += "cmcd_sentinel_sink_latency_seconds_sum{sink=\"\(sink)\"} \(o.seconds)\n"
                out += "cmcd_sentinel_sink_latency_seconds_count{sink=\"\(sink)\"} \(o.writes)\n"
            }
            return out + extra + process
        }
    }

    /// Appends one metric in the Prometheus text format: its help and type, then a line per
    /// sample (`labels` without the braces, empty for none).
    static func append(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)], to out: inout String) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for s in samples { out += "\(name)\(s.labels.isEmpty ? "" : "{\(s.labels)}") \(s.value)\n" }
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
