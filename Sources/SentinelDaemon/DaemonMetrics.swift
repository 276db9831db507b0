import CMCDDetection
import CMCDRecords
import Foundation
import Prometheus
import SentinelJSON
import SentinelSinks
import Synchronization

/// The daemon's metrics: the instruments the consume loop counts with, in one Prometheus
/// registry (swift-prometheus) that `/metrics` emits, beside the sinks' own metrics and the
/// process metrics; and the state `/healthz` reports.
public final class DaemonMetrics: Sendable {
    /// Where every instrument lives; `render` emits it.
    public let registry = PrometheusCollectorRegistry()
    /// Counted per record (an uncontended atomic), so `/metrics` is exact at any moment.
    private let consumed = Atomic<Int>(0)
    private let consumedCounter: Counter
    private let liveSessionsGauge: Gauge
    private let commits: Counter
    private let commitFailures: Counter
    private let kafkaErrors: Counter
    private let commitsDeferred: Counter
    private let deadLetters: Counter
    private let samplesLate: Counter
    private let samplesFuture: Counter
    private let checkpointsSaved: Counter
    private let checkpointsFailed: Counter
    private let checkpointSeconds: Counter
    private let checkpointBytes: Gauge
    private let sessionsRestored: Counter
    private let cohortsLive: Gauge
    private let cohortsRefused: Counter
    private let cohortSamplesLate: Counter
    private let incidentsFolded: Counter

    /// What the counters were last set from (the loop reports totals; counters take the rest).
    private struct Totals {
        var skipped: [SkipReason: Int] = [:]
        var memberErrors: [String: Int] = [:]
        var deadLetters = 0
        var detection = DetectionStatistics()
        var cohorts = CohortStatistics()
    }

    private struct State {
        var totals = Totals()
        var lastKafkaError: (message: String, at: Date)?
        var components: [(name: String, check: @Sendable () -> ComponentHealth)] = []
        /// Each component's status as last seen, and since when it has had it.
        var componentSince: [String: (status: ComponentHealth.Status, since: Date)] = [:]
        /// When commits started being held back because a sink has not confirmed its writes.
        var deferringSince: Date?
        var assigned: [String] = []
    }

    private let state = Mutex(State())

    public init() {
        let r = registry
        consumedCounter = r.makeCounter(descriptor: .named("cmcd_sentinel_records_consumed_total", help: "Records consumed from Kafka."))
        liveSessionsGauge = r.makeGauge(descriptor: .named("cmcd_sentinel_live_sessions", help: "Sessions with state in memory."))
        commits = r.makeCounter(descriptor: .named("cmcd_sentinel_commits_total", help: "Offset commits confirmed by the broker."))
        commitFailures = r.makeCounter(descriptor: .named("cmcd_sentinel_commit_failures_total", help: "Offset commits that failed (retried)."))
        kafkaErrors = r.makeCounter(descriptor: .named("cmcd_sentinel_kafka_errors_total", help: "Errors reported by the Kafka client."))
        commitsDeferred = r.makeCounter(
            descriptor: .named("cmcd_sentinel_commits_deferred_total", help: "Commits postponed because a sink did not hold everything yet.")
        )
        deadLetters = r.makeCounter(
            descriptor: .named("cmcd_sentinel_dead_letters_total", help: "Skipped records produced to the dead-letter topic.")
        )
        samplesLate = r.makeCounter(
            descriptor: .named("cmcd_sentinel_samples_late_total", help: "Samples older than the reorder tolerance (ignored).")
        )
        samplesFuture = r.makeCounter(
            descriptor: .named(
                "cmcd_sentinel_samples_future_total", help: "Samples dated implausibly far ahead of the wall clock (sessions.max_future_ms; ignored).")
        )
        let checkpointsHelp = "Detection checkpoints saved, by result."
        checkpointsSaved = r.makeCounter(descriptor: .named("cmcd_sentinel_checkpoints_total", help: checkpointsHelp), labels: [("result", "saved")])
        checkpointsFailed = r.makeCounter(descriptor: .named("cmcd_sentinel_checkpoints_total", help: checkpointsHelp), labels: [("result", "failed")])
        checkpointSeconds = r.makeCounter(
            descriptor: .named("cmcd_sentinel_checkpoint_seconds_total", help: "Time spent saving detection checkpoints.")
        )
        checkpointBytes = r.makeGauge(
            descriptor: .named("cmcd_sentinel_checkpoint_bytes", help: "Size of the last checkpoint saved (all its partitions).")
        )
        sessionsRestored = r.makeCounter(
            descriptor: .named(
                "cmcd_sentinel_sessions_restored_total", help: "Live sessions restored from checkpoints when partitions were assigned.")
        )
        cohortsLive = r.makeGauge(descriptor: .named("cmcd_sentinel_cohorts_live", help: "Cohorts (edge, content, ...) with windows in memory."))
        cohortsRefused = r.makeCounter(
            descriptor: .named("cmcd_sentinel_cohorts_refused_total", help: "New cohorts not tracked because cohorts.max_cohorts were live."))
        cohortSamplesLate = r.makeCounter(
            descriptor: .named("cmcd_sentinel_cohort_samples_late_total", help: "Samples dated in a cohort window already closed (not counted in it)."))
        incidentsFolded = r.makeCounter(
            descriptor: .named("cmcd_sentinel_incidents_folded_total", help: "Breaching cohorts reported as part of another cohort's incident."))
        // Every labelled series that is known in advance, at zero from the start.
        for reason in SkipReason.allCases { skippedCounter(reason).increment(by: Int64(0)) }
        for type in FindingType.allCases {
            for severity in Severity.allCases {
                for status in FindingStatus.allCases { findingsCounter(.init(type: type, severity: severity, status: status)).increment(by: Int64(0)) }
            }
        }
        for reason in ["idle", "capacity"] { evictionsCounter(reason).increment(by: Int64(0)) }
    }

    /// Records consumed so far.
    public var recordsConsumed: Int { consumed.load(ordering: .relaxed) }

    /// Counts records consumed (the consume loop, per polled batch).
    func countConsumed(_ records: Int) {
        consumed.add(records, ordering: .relaxed)
        consumedCounter.increment(by: Int64(records))
    }

    private func skippedCounter(_ reason: SkipReason) -> Counter {
        registry.makeCounter(
            descriptor: .named("cmcd_sentinel_records_skipped_total", help: "Records skipped, by reason."), labels: [("reason", reason.rawValue)])
    }

    private func memberErrorsCounter(_ key: String) -> Counter {
        registry.makeCounter(
            descriptor: .named(
                "cmcd_sentinel_cmcd_member_errors_total",
                help: "CMCD members left out of otherwise kept records, by key (a reserved key, custom or unknown)."),
            labels: [("key", key)])
    }

    private func findingsCounter(_ key: DetectionStatistics.FindingKey) -> Counter {
        registry.makeCounter(
            descriptor: .named("cmcd_sentinel_findings_total", help: "Findings emitted, by type, severity and status."),
            labels: [("type", key.type.rawValue), ("severity", key.severity.rawValue), ("status", key.status.rawValue)])
    }

    private func evictionsCounter(_ reason: String) -> Counter {
        registry.makeCounter(
            descriptor: .named("cmcd_sentinel_session_evictions_total", help: "Sessions evicted, by reason."), labels: [("reason", reason)])
    }

    /// The loop's totals (parser and detection statistics): counters move by what is new.
    func update(
        skipped: [SkipReason: Int], memberErrors: [String: Int], deadLetters: Int, detection: DetectionStatistics,
        liveSessions: Int, assigned: [String], cohorts: CohortStatistics = CohortStatistics()
    ) {
        let before = state.withLock { s in
            let before = s.totals
            s.totals = Totals(skipped: skipped, memberErrors: memberErrors, deadLetters: deadLetters, detection: detection, cohorts: cohorts)
            s.assigned = assigned
            return before
        }
        func grow(_ counter: @autoclosure () -> Counter, from old: Int, to new: Int) {
            if new > old { counter().increment(by: Int64(new - old)) }
        }
        for (reason, n) in skipped { grow(skippedCounter(reason), from: before.skipped[reason] ?? 0, to: n) }
        for (key, n) in memberErrors { grow(memberErrorsCounter(key), from: before.memberErrors[key] ?? 0, to: n) }
        grow(self.deadLetters, from: before.deadLetters, to: deadLetters)
        grow(samplesLate, from: before.detection.late, to: detection.late)
        grow(samplesFuture, from: before.detection.futureTimestamps, to: detection.futureTimestamps)
        for (key, n) in detection.findings { grow(findingsCounter(key), from: before.detection.findings[key] ?? 0, to: n) }
        grow(evictionsCounter("idle"), from: before.detection.idleEvictions, to: detection.idleEvictions)
        grow(evictionsCounter("capacity"), from: before.detection.capacityEvictions, to: detection.capacityEvictions)
        liveSessionsGauge.set(Int64(liveSessions))
        grow(cohortsRefused, from: before.cohorts.cohortsRefused, to: cohorts.cohortsRefused)
        grow(cohortSamplesLate, from: before.cohorts.lateSamples, to: cohorts.lateSamples)
        grow(incidentsFolded, from: before.cohorts.incidentsFolded, to: cohorts.incidentsFolded)
        cohortsLive.set(Int64(cohorts.liveCohorts))
    }

    func recordCommit(success: Bool) {
        if success {
            commits.increment()
            state.withLock { $0.deferringSince = nil }
        } else {
            commitFailures.increment()
        }
    }

    func recordCheckpoint(success: Bool, seconds: Double, bytes: Int) {
        if success {
            checkpointsSaved.increment()
            checkpointBytes.set(Int64(bytes))
        } else {
            checkpointsFailed.increment()
        }
        checkpointSeconds.increment(by: seconds)
    }

    func recordRestore(sessions: Int) { sessionsRestored.increment(by: Int64(sessions)) }

    func recordKafkaError(_ message: String) {
        kafkaErrors.increment()
        state.withLock { $0.lastKafkaError = (message, Date()) }
    }

    /// Time a sink took to take a batch of findings.
    func recordOutput(sink: String, seconds: Double) {
        registry.makeDurationHistogram(
            descriptor: .named("cmcd_sentinel_sink_latency_seconds", help: "Time spent writing findings to the sinks."), labels: [("sink", sink)],
            buckets: Self.latencyBuckets
        ).record(.nanoseconds(Int64(seconds * 1e9)))
    }

    static let latencyBuckets: [Duration] = [.microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .seconds(1), .seconds(10)]

    func recordCommitDeferred() {
        commitsDeferred.increment()
        state.withLock { if $0.deferringSince == nil { $0.deferringSince = Date() } }
    }

    /// A swift-metrics factory over the registry, for the sinks' and services' own instruments
    /// (`help`: their help texts, by label).
    public func factory(help: [String: String]) -> DescribedMetricsFactory { DescribedMetricsFactory(registry: registry, help: help) }

    /// Adds a component (a sink, the webhook dispatcher) to `/healthz`.
    public func register(component name: String, health: @escaping @Sendable () -> ComponentHealth) {
        state.withLock { $0.components.append((name, health)) }
    }

    /// Records behind the end of a partition (librdkafka's statistics).
    func setLag(topic: String, partition: Int32, lag: Int64) {
        registry.makeGauge(
            descriptor: .named("cmcd_sentinel_consumer_lag", help: "Records behind the end of each partition (librdkafka statistics)."),
            labels: [("topic", topic), ("partition", "\(partition)")]
        ).set(lag)
    }

    /// Commits held back longer than this mean records are no longer being committed.
    static let commitStallSeconds = 10.0

    /// `/healthz`: each component (the broker, every sink) `ok`, `degraded` or `down`, since
    /// when and with what backlog, as one line of JSON. Unhealthy (503) only when records are
    /// no longer being committed: the broker is unreachable, a component that commits wait on
    /// is down, or commits have been held back for `commitStallSeconds`. A degraded sink that
    /// the daemon does not wait on (webhooks, whose outbox holds the notifications) is not.
    public var health: (healthy: Bool, detail: String) {
        let checks = state.withLock { $0.components }
        var seen = checks.map { ($0.name, $0.check()) }
        let now = Date()
        return state.withLock { s in
            if let last = s.lastKafkaError, now.timeIntervalSince(last.at) < 30 {
                seen.insert(("kafka", ComponentHealth(.down, detail: last.message)), at: 0)
            } else {
                seen.insert(("kafka", ComponentHealth(.ok, detail: s.assigned.isEmpty ? "no partition s.assigned yet" : nil)), at: 0)
            }
            var members: [(key: String, value: JSONValue)] = []
            for (name, health) in seen {
                if s.componentSince[name]?.status != health.status { s.componentSince[name] = (health.status, now) }
                var fields: [(key: String, value: JSONValue)] = [
                    ("status", .string(health.status.rawValue)),
                    ("since", .string(RFC3339.format(milliseconds: Int64(s.componentSince[name]!.since.timeIntervalSince1970 * 1000)))),
                ]
                if let backlog = health.backlog { fields.append(("backlog", .int(Int64(backlog)))) }
                if let detail = health.detail { fields.append(("detail", .string(String(detail.prefix(300))))) }
                members.append((name, .object(fields)))
            }
            let worst = seen.map(\.1.status).max() ?? .ok
            let stalled = s.deferringSince.map { now.timeIntervalSince($0) >= Self.commitStallSeconds } ?? false
            let committing = worst != .down && !stalled
            var top: [(key: String, value: JSONValue)] = [
                ("status", .string(worst.rawValue)), ("committing", .bool(committing)),
            ]
            if let deferringSince = s.deferringSince {
                top.append(("commits_held_since", .string(RFC3339.format(milliseconds: Int64(deferringSince.timeIntervalSince1970 * 1000)))))
            }
            top += [("partitions", .array(s.assigned.map(JSONValue.string))), ("components", .object(members))]
            return (committing, JSONWriter.string(.object(top)))
        }
    }

    /// The Prometheus text exposition: the registry (the loop's, the sinks' and the services'
    /// instruments) and the process metrics.
    public func render() -> String { registry.emitToString() + ProcessMetrics.render() }

    /// Appends one metric in the Prometheus text format: its help and type, then a line per
    /// sample (`labels` without the braces, empty for none).
    static func append(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)], to out: inout String) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for s in samples { out += "\(name)\(s.labels.isEmpty ? "" : "{\(s.labels)}") \(s.value)\n" }
    }
}
