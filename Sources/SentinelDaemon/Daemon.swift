import CMCDDetection
import CMCDRecords
import Foundation
import Logging
import SentinelConfig
import SentinelHTTP
import SentinelJSON
import SentinelKafka
import SentinelSinks
import ServiceLifecycle

/// Consume -> parse -> detect -> sinks, with at-least-once commits: a ServiceLifecycle
/// service. The loop runs on a thread of its own (`DedicatedThreadExecutor`: librdkafka's
/// calls block, and Swift's cooperative pool must not), parses and detects each polled record
/// synchronously and awaits the sinks once per batch of findings. A graceful shutdown
/// (SIGTERM/SIGINT through the service group) or cancellation asks it to stop; it then
/// finishes the record in hand, flushes, commits and closes before `run` returns.
public final class Daemon: Service {
    public struct Options: Sendable {
        /// How often processed offsets are committed.
        public var commitIntervalSeconds: Double = 1
        /// Exit once no record arrived for this long (demos, tests, catching up); nil runs on.
        public var exitWhenIdleSeconds: Double?
        /// Where detection state is checkpointed (nil: nowhere; a restart then re-reads from
        /// the oldest record the state needs).
        public var checkpoints: (any CheckpointStore)?
        /// Reads the incidents still firing when the last run stopped (the alerts table's), for
        /// the cohorts to take back at start, checkpoints or not (nil: none are).
        public var openIncidents: (@Sendable () async throws -> [OpenIncident])?
        /// Makes the source of records when it is not Kafka (Kinesis): called once by the
        /// consume loop, on its own task. The source hands over its partitions as assignments.
        public var makeSource: (@Sendable (Logger) async throws -> any RecordSource)?
        public init() {}
    }

    let configuration: SentinelConfiguration
    let rules: DetectionRules
    let options: Options
    let sinks: [any FindingSink]
    let recordSinks: [any RecordSink]
    let rollupSinks: [any RollupSink]
    public let metrics: DaemonMetrics
    let logger: Logger
    private let stop = StopFlag()

    public init(
        configuration: SentinelConfiguration, rules: DetectionRules, options: Options, sinks: [any FindingSink],
        metrics: DaemonMetrics = DaemonMetrics(), logger: Logger = Logger(label: "cmcd-sentinel")
    ) {
        self.configuration = configuration
        self.rules = rules
        self.options = options
        self.sinks = sinks
        self.recordSinks = sinks.compactMap { $0 as? any RecordSink }
        self.rollupSinks = sinks.compactMap { $0 as? any RollupSink }
        self.metrics = metrics
        self.logger = logger
        for sink in sinks {
            if let reporting = sink as? any HealthReporting { metrics.register(component: sink.name) { reporting.health } }
        }
    }

    /// Runs until the group shuts down gracefully, the task is cancelled, `requestStop` is
    /// called or the idle limit passes; then finishes in-flight records, flushes the sinks,
    /// commits and closes the consumer.
    public func run() async throws {
        let stop = self.stop
        let executor = DedicatedThreadExecutor()
        do {
            try await withTaskCancellationHandler {
                try await withGracefulShutdownHandler {
                    try await withTaskExecutorPreference(executor) {
                        let loop = ConsumeLoop(daemon: self)
                        try await loop.run(stop: stop)
                    }
                } onGracefulShutdown: {
                    stop.set()
                }
            } onCancel: {
                stop.set()
            }
        } catch {
            await executor.shutdown()
            throw error
        }
        await executor.shutdown()
    }

    /// Asks a running daemon to stop as a graceful shutdown does.
    public func requestStop() { stop.set() }

    /// The librdkafka properties the daemon uses (configuration properties win).
    var kafkaProperties: [String: String] { Self.kafkaProperties(for: configuration) }

    /// The consumer's properties that a producer (the dead-letter one) leaves out.
    static let consumerOnlyProperties = [
        "group.id", "group.instance.id", "auto.offset.reset", "fetch.wait.max.ms", "queued.min.messages", "queued.max.messages.kbytes",
        "fetch.queue.backoff.ms",
    ]

    /// The librdkafka properties a daemon with `configuration` uses: its own defaults, and
    /// the configuration's `kafka.properties` over them.
    public static func kafkaProperties(for configuration: SentinelConfiguration) -> [String: String] {
        var properties = [
            "bootstrap.servers": configuration.kafka.brokers,
            "group.id": configuration.kafka.groupID,
            "auto.offset.reset": "earliest",
            "statistics.interval.ms": "5000",
            "fetch.wait.max.ms": "50",  // alerting wants records promptly, not in big late batches
            "client.id": "cmcd-sentinel",
            // Once its pre-fetch queue holds this many messages or kilobytes, librdkafka stops
            // fetching for up to a second (before 2.3, always a second): with its defaults
            // (100,000 messages) a daemon catching up on a backlog read 160,000 records a
            // second, whatever its speed. Up to 128 MiB held ahead lets it read about 400,000.
            "queued.min.messages": "1000000",
            "queued.max.messages.kbytes": "131072",
        ]
        if KafkaConsumer.librdkafkaVersion >= 0x0203_0000 {
            properties["fetch.queue.backoff.ms"] = "20"  // look again soon, not after a second
        }
        if !configuration.kafka.instanceID.isEmpty { properties["group.instance.id"] = configuration.kafka.instanceID }
        properties.merge(configuration.kafka.properties) { _, configured in configured }
        return properties
    }

}

/// The consume loop's state, owned by the one task that runs it (on the daemon's executor).
final class ConsumeLoop {
    let daemon: Daemon
    var configuration: SentinelConfiguration { daemon.configuration }
    var rules: DetectionRules { daemon.rules }
    var options: Daemon.Options { daemon.options }
    var sinks: [any FindingSink] { daemon.sinks }
    var metrics: DaemonMetrics { daemon.metrics }
    var logger: Logger { daemon.logger }

    /// The parser, engines, cohorts and held findings: what each record touches. Without the
    /// runtime's exclusivity check (a thread-local lookup on each access, every record): the
    /// loop is one task, and nothing else reaches its state.
    @exclusivity(unchecked) private var path: RecordPath
    /// Whether each partition is really being fetched (see `FetchHealth`).
    private let fetching = FetchHealth()
    /// The commit, batching and stop policy (offsets per partition among it).
    private var machine: ConsumeStateMachine
    private var retiredStatistics = DetectionStatistics()
    private var source: (any RecordSource)?
    /// Produces unparseable records to `kafka.dead_letter_topic` when one is configured.
    private var deadLetters: KafkaProducer?
    private var deadLettersSent = 0
    /// A sink (or a rollup sink) failed for good: the daemon stops without committing past it.
    private var sinkFailure: (any Error)?
    private var lastPendingLog = 0.0
    /// When the batch in hand was polled (monotonic seconds).
    private var batchTime = 0.0
    private var trimming = AllocatorTrimming()

    /// Records taken from the client at a time: parse and detect run over them before the
    /// loop looks at rebalances, timers and sinks again.
    static let batchSize = 1_000

    init(daemon: Daemon) {
        self.daemon = daemon
        path = RecordPath(
            parser: RecordParser(configuration: .init(format: daemon.configuration.input.format, fields: daemon.configuration.input.fields)),
            rules: daemon.rules, recordSinks: daemon.recordSinks, collectsRollups: !daemon.rollupSinks.isEmpty, fetching: fetching)
        var policy = ConsumeStateMachine.Configuration()
        policy.commitIntervalSeconds = daemon.options.commitIntervalSeconds
        policy.exitWhenIdleSeconds = daemon.options.exitWhenIdleSeconds
        policy.checkpoints = daemon.options.checkpoints != nil
        machine = ConsumeStateMachine(configuration: policy, now: monotonicSeconds())
    }

    /// Runs until `stop` is set (checked every 100 ms at least) or the idle limit passes; then
    /// finishes in-flight records, flushes the sinks, commits and closes the consumer.
    func run(stop: StopFlag) async throws {
        let queueKilobytes = options.makeSource == nil ? daemon.kafkaProperties["queued.max.messages.kbytes"].flatMap { Int($0) } : nil
        AllocatorSettings(queueKilobytes: queueKilobytes).apply()
        let source: any RecordSource
        if let makeSource = options.makeSource {
            source = try await makeSource(logger)
            self.source = source
            try await restoreOpenIncidents()
        } else {
            source = try await startKafka()
        }
        machine.started(now: monotonicSeconds())
        while !stop.isSet {
            let held = path.heldFindings.count
            batchTime = monotonicSeconds()
            let wallClock = Self.wallClockMs()
            let polled: Int
            do {
                defer { parkEngine() }
                polled = try await source.poll(max: Self.batchSize, timeoutMs: machine.pollTimeoutMs(heldFindings: held)) { record in
                    try path.handle(record, wallClock: wallClock) { try deadLetter(record, reason: $0, detail: $1, line: $2) }
                }
            }
            if let caughtUp = source.caughtUp() { fetching.recordCaughtUp(caughtUp) }
            if polled > 0 {
                metrics.countConsumed(polled)
                advanceCohorts()
                if trimming.shouldTrim(liveSessions: path.liveSessions) { AllocatorTrimming.releaseFreeMemory() }
            }
            try await completeRebalances(source)
            let now = monotonicSeconds()
            if polled == 0, let elapsedMs = machine.quietAdvance(now: now) {
                // A quiet stream: event time moves on with the wall clock, so idle sessions are
                // evicted and stuck startups fire even when no record arrives; only for a
                // partition that is fetched and caught up (a broker outage is no quiet stream).
                path.advanceQuietPartitions(by: elapsedMs) { fetching.mayAdvance($0, at: now) }
                advanceCohorts()
                path.countLiveSessions()
            }
            let actions = machine.afterPoll(recordPolled: polled > 0, heldBefore: held, heldNow: path.heldFindings.count, now: now)
            if actions.emitFindings { try await emitHeldFindings() }
            if !daemon.recordSinks.isEmpty, path.recordsSinceRoomCheck >= 1_000 || (polled == 0 && path.recordsSinceRoomCheck > 0) {
                // Backpressure: a full sink (InfluxDB behind) holds the loop here.
                path.recordsSinceRoomCheck = 0
                for sink in daemon.recordSinks { try await sink.waitForRoom() }
            }
            if actions.publishMetrics { publishMetrics() }
            if actions.commit { await commitPending() }
            if let sinkFailure { throw sinkFailure }
            if actions.stopIdle {
                logger.info("no record for \(machine.configuration.exitWhenIdleSeconds ?? 0) s: stopping")
                break
            }
        }
        // Graceful stop: everything handled so far is flushed and committed (with checkpoints;
        // without, as far as the next daemon can rebuild the open episodes from), then the
        // consumer leaves the group (its partitions given up at once: nothing is left to
        // commit). A sink that cannot take everything in time leaves those records
        // uncommitted for next time.
        var unflushed: (any Error)?
        do { try await emitHeldFindings() } catch { unflushed = error }
        for sink in sinks {
            // Within the service group's 10 s for a graceful shutdown.
            do { try await sink.drain(timeoutSeconds: 8) } catch { unflushed = unflushed ?? error }
        }
        if unflushed == nil { await commitPending(stopping: true) }
        await source.close()
        publishMetrics()
        self.source = nil
        if let unflushed {
            logger.error("stopped after \(metrics.recordsConsumed) records; not committed past what the sinks hold: \(unflushed)")
            throw unflushed
        }
        logger.info("stopped after \(metrics.recordsConsumed) records")
    }

    /// The wall clock, ms.
    static func wallClockMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    /// Incidents firing when the last run stopped go on (or resolve) under their ids.
    private func restoreOpenIncidents() async throws {
        guard let openIncidents = options.openIncidents else { return }
        do {
            let now = Self.wallClockMs()
            let held = path.heldFindings.count
            let restored = path.cohorts.restore(try await openIncidents(), at: now, into: &path.heldFindings)
            if restored > 0 { logger.info("\(restored) open incidents taken back from the alerts table") }
            let retired = path.heldFindings.count - held
            if retired > 0 { logger.warning("\(retired) open incidents resolved: their rules or cohort groups are no longer configured, or another goes on") }
        } catch {
            logger.warning("open incidents could not be read (\(error)); they fire again if they go on")
        }
    }

    /// The Kafka consumer, subscribed to the topic or assigned its partitions.
    private func startKafka() async throws -> KafkaConsumer {
        let fetching = self.fetching
        let consumer = try KafkaConsumer(properties: daemon.kafkaProperties, logger: logger) { [metrics] event in
            switch event {
            case .error(let error, _):
                metrics.recordKafkaError(error.message)
                fetching.recordError()
            case .log:
                break
            case .statistics(let json):
                DaemonMetrics.recordLag(fromStatistics: json, into: metrics)
                fetching.recordStatistics(json)
            case .assigned, .revoked:
                break  // handed over by `nextRebalance`
            }
        }
        consumer.defersRebalances = true
        self.source = consumer
        if !configuration.kafka.deadLetterTopic.isEmpty {
            var properties = daemon.kafkaProperties
            for consumerOnly in Daemon.consumerOnlyProperties { properties[consumerOnly] = nil }
            deadLetters = try KafkaProducer(properties: properties, logger: logger)
        }
        try await restoreOpenIncidents()
        let topic = configuration.kafka.topic
        if configuration.kafka.partitions.isEmpty {
            try consumer.subscribe([topic])
            logger.info("consuming \(topic) as group \(configuration.kafka.groupID) from \(configuration.kafka.brokers)")
        } else {
            let partitions = configuration.kafka.partitions.map { KafkaTopicPartition(topic: topic, partition: $0) }
            let restored = await restoreCheckpoints(partitions)
            try consumer.assign(partitions.map { ($0, offset: restored[$0]) })
            assign(partitions)
            logger.info("consuming \(partitions.map(\.description).joined(separator: ", ")) from \(configuration.kafka.brokers)")
        }

        return consumer
    }

    /// Sends a line that gave no sample to `kafka.dead_letter_topic`, when one is configured.
    private func deadLetter(_ record: KafkaRecordView, reason: SkipReason, detail: String, line: UnsafeBufferPointer<UInt8>) throws {
        guard let deadLetters else { return }
        try deadLetters.send(
            topic: configuration.kafka.deadLetterTopic, key: record.key.map { Array($0) }, value: Array(line),
            headers: [
                ("cmcd-sentinel-reason", reason.rawValue), ("cmcd-sentinel-detail", String(detail.prefix(200))),
                ("cmcd-sentinel-source", "\(record.topic)/\(record.partition)/\(record.offset)"),
            ])
        deadLettersSent += 1
    }

    /// Closes the cohort windows that every partition still being caught up on has passed
    /// (less the reorder tolerance), so that a partition read behind the others from a backlog
    /// still counts in the right windows. A partition with a backlog not read at all yet holds
    /// them; one caught up does not (its next records are new). `cohorts.max_open_windows`
    /// bounds the wait.
    private func advanceCohorts() {
        let now = monotonicSeconds()
        var slowest = Int64.max
        var newest = Int64.min
        for (tp, engine) in path.engines {
            newest = max(newest, engine.watermark)
            if fetching.mayAdvance(tp, at: now) { continue }
            guard engine.watermark > Int64.min else { return }
            slowest = min(slowest, engine.watermark)
        }
        let watermark = slowest < Int64.max ? slowest : newest
        guard watermark > Int64.min else { return }
        path.advanceCohorts(to: watermark &- rules.sessions.reorderToleranceMs)
        handRollups()
    }

    /// Hands the cohorts' closed windows to the rollup sinks (InfluxDB's `cmcd_qoe`).
    private func handRollups() {
        guard !daemon.rollupSinks.isEmpty else { return }
        let rollups = path.cohorts.takeRollups()
        guard !rollups.isEmpty, sinkFailure == nil else { return }
        do {
            for sink in daemon.rollupSinks { try sink.rollup(rollups) }
        } catch {
            sinkFailure = error
            logger.error("a rollup sink failed; nothing more is committed: \(error)")
        }
    }

    /// Puts the engine in use back and tells the policy how far each partition was handled.
    private func parkEngine() {
        path.park()
        for (tp, offset) in path.takeHandled() { machine.handled(tp, offset: offset, now: batchTime) }
    }

    /// Hands the held findings to every sink, in the order they were found.
    private func emitHeldFindings() async throws {
        guard !path.heldFindings.isEmpty else { return }
        for sink in sinks {
            let start = monotonicSeconds()
            try await sink.write(path.heldFindings)
            metrics.recordOutput(sink: sink.name, seconds: monotonicSeconds() - start)
        }
        path.heldFindings.removeAll(keepingCapacity: true)
    }

    /// Commits what every sink holds, never past the oldest record the detectors' state still
    /// needs: after a crash, a rebalance or a stop, replaying from the committed offset
    /// rebuilds that state, so no finding is lost and no open episode is dropped (repeats
    /// carry the same ids). With a checkpoint store, each partition's state is saved first,
    /// as of the offset after its last handled record, so that a restart resumes from there
    /// (see `restoreCheckpoints`; a graceful stop commits up to it) and the conservative
    /// commit is only the fallback where no checkpoint can be read; no commit passes the
    /// partition's last saved checkpoint, which would make it look stale.
    /// A failed commit or checkpoint is counted and retried next time.
    private func commitPending(only partitions: Set<KafkaTopicPartition>? = nil, stopping: Bool = false, force: Bool = false) async {
        guard let source else { return }
        let plan = machine.planCommit(only: partitions, stopping: stopping, force: force, now: monotonicSeconds()) { path.engines[$0]?.restartPosition() }
        let due = plan.checkpoints.filter { path.engines[$0.key] != nil }
        var offsets = machine.offsets(of: plan, unsaved: plan.checkpoints.keys.filter { due[$0] == nil })
        guard !(due.isEmpty && offsets.isEmpty), sinkFailure == nil else { return }
        do {
            // The findings of the records about to be committed must be in the sinks first.
            try await emitHeldFindings()
            for sink in sinks { try await sink.flush() }
        } catch let pending as SinkPending {
            metrics.recordCommitDeferred()
            if monotonicSeconds() - lastPendingLog >= 10 {
                lastPendingLog = monotonicSeconds()
                logger.warning("commit waits: \(pending)")
            }
            return
        } catch {
            sinkFailure = error
            logger.error("a sink failed; nothing more is committed: \(error)")
            return
        }
        if let store = options.checkpoints, !due.isEmpty {
            let start = monotonicSeconds()
            let checkpoints = due.keys.sorted().map { tp in
                DetectionCheckpoint(topic: tp.topic, partition: tp.partition, nextOffset: due[tp]!, state: path.engines[tp]!.checkpoint())
            }
            do {
                try await store.save(checkpoints)
                let took = monotonicSeconds() - start
                machine.checkpointsSaved(due, startedAt: start, took: took)
                metrics.recordCheckpoint(success: true, seconds: took, bytes: checkpoints.reduce(0) { $0 + $1.state.count })
            } catch {
                metrics.recordCheckpoint(success: false, seconds: monotonicSeconds() - start, bytes: 0)
                logger.warning("detection checkpoint failed (a restart re-reads more; will retry): \(error)")
                offsets = machine.offsets(of: plan, unsaved: plan.checkpoints.keys)
            }
        }
        guard !offsets.isEmpty else { return }
        do {
            if let deadLetters {
                // Dead letters are delivered before the records they came from are committed.
                let failedBefore = deadLetters.deliveries.failed
                try deadLetters.flush(timeoutMs: 10_000)
                if deadLetters.deliveries.failed > failedBefore {
                    throw KafkaError(message: "dead-letter delivery failed: \(deadLetters.deliveries.lastError?.description ?? "")")
                }
            }
            try await source.commit(offsets)
            machine.committed(offsets)
            metrics.recordCommit(success: true)
        } catch {
            metrics.recordCommit(success: false)
            logger.warning("commit failed (will retry): \(error)")
        }
    }

    /// Restores newly assigned partitions from their checkpoints: each gets its engine back and
    /// starts at the checkpoint's offset. A checkpoint behind the committed offset (another
    /// daemon moved on meanwhile) or unreadable (another version) is dropped, and that
    /// partition starts at its committed offset as without checkpoints.
    private func restoreCheckpoints(_ partitions: [KafkaTopicPartition]) async -> [KafkaTopicPartition: Int64] {
        guard let store = options.checkpoints else { return [:] }
        var starts: [KafkaTopicPartition: Int64] = [:]
        var committedOffsets: [KafkaTopicPartition: Int64?]?
        for tp in partitions {
            do {
                guard let checkpoint = try await store.load(topic: tp.topic, partition: tp.partition) else { continue }
                if committedOffsets == nil { committedOffsets = (try? await source?.committed(partitions)) ?? [:] }
                if let committed = committedOffsets?[tp] ?? nil, committed > checkpoint.nextOffset {
                    logger.info("\(tp): checkpoint at \(checkpoint.nextOffset) is behind the committed offset \(committed): not used")
                    continue
                }
                let engine = try DetectionEngine(rules: rules, checkpoint: checkpoint.state)
                path.engines[tp] = engine
                machine.resumed(tp, at: checkpoint.nextOffset)
                starts[tp] = checkpoint.nextOffset
                metrics.recordRestore(sessions: engine.liveSessionCount)
                logger.info("\(tp): resumed at offset \(checkpoint.nextOffset) with \(engine.liveSessionCount) live sessions from its checkpoint")
            } catch let invalid as EngineCheckpoint.Invalid {
                logger.warning("\(tp): checkpoint not usable (\(invalid)); starting at the committed offset")
                try? await store.discard(topic: tp.topic, partition: tp.partition)
            } catch {
                // The store could not be read (down, say): the checkpoint may be fine; keep it.
                logger.warning("\(tp): checkpoint could not be read (\(error)); starting at the committed offset")
            }
        }
        path.countLiveSessions()
        return starts
    }

    private func assign(_ partitions: [KafkaTopicPartition]) {
        for tp in partitions where path.engines[tp] == nil { path.engines[tp] = DetectionEngine(rules: rules) }
        logger.info("assigned \(partitions.map(\.description).joined(separator: ", "))")
        publishMetrics()
    }

    /// Carries out the rebalances `poll` handed over: an assignment starts where the
    /// checkpoints say; a revocation commits first.
    private func completeRebalances(_ source: any RecordSource) async throws {
        while let rebalance = source.nextRebalance() {
            switch rebalance {
            case .assign(let partitions):
                let starts = await restoreCheckpoints(partitions)
                try await source.completeAssignment(partitions, offsets: starts)
                assign(partitions)
            case .revoke(let partitions):
                await revoke(partitions)
                try await source.completeRevocation(partitions)
            }
        }
    }

    private func revoke(_ partitions: [KafkaTopicPartition]) async {
        // Commit no further than the state needs: the new owner replays from there, rebuilds
        // the sessions and carries their episodes on (repeats have the same ids), or resumes
        // from the checkpoint saved here when it shares the store.
        await commitPending(only: Set(partitions), force: true)
        for tp in partitions {
            if let engine = path.engines.removeValue(forKey: tp) { retiredStatistics.add(engine.statistics) }
        }
        machine.revoked(partitions)
        path.countLiveSessions()
        logger.info("revoked \(partitions.map(\.description).joined(separator: ", "))")
        publishMetrics()
    }

    private func publishMetrics() {
        var total = retiredStatistics
        var live = 0
        for engine in path.engines.values {
            total.add(engine.statistics)
            live += engine.liveSessionCount
        }
        // Incidents are findings too.
        total.findings.merge(path.cohorts.statistics.findings, uniquingKeysWith: +)
        metrics.update(
            skipped: path.parser.statistics.skipped, memberErrors: path.parser.statistics.memberErrors, deadLetters: deadLettersSent, detection: total, liveSessions: live,
            assigned: path.engines.keys.sorted().map(\.description), cohorts: path.cohorts.statistics)
    }
}

extension DaemonMetrics {
    /// Reads `consumer_lag` per partition from librdkafka's statistics JSON.
    static func recordLag(fromStatistics json: String, into metrics: DaemonMetrics) {
        guard let stats = try? JSONParser.parse(json, limits: .init(maxDepth: 16, maxElements: 1_000_000)),
            let topics = stats["topics"]?.objectMembers
        else { return }
        for (topic, value) in topics {
            for (partition, p) in value["partitions"]?.objectMembers ?? [] {
                guard let id = Int32(partition), id >= 0, case .int(let lag)? = p["consumer_lag"], lag >= 0 else { continue }
                metrics.setLag(topic: topic, partition: id, lag: lag)
            }
        }
    }
}
