import CMCDDetection
import CMCDRecords
import SentinelKafka
import SentinelSinks

/// Everything a record touches on its way through the consume loop, in one value: the parser,
/// each partition's engine (the one being read taken out of the table while its records
/// come), the cohorts and the findings not yet handed to the sinks. The loop holds it as one
/// property, so that a record costs one access to the loop's state and no copy of an engine.
struct RecordPath {
    var parser: RecordParser
    var engines: [KafkaTopicPartition: DetectionEngine] = [:]
    /// Cohort windows and incidents over every partition this daemon reads.
    var cohorts: CohortTracker
    /// Findings not yet handed to the sinks (see `ConsumeStateMachine.afterPoll`).
    var heldFindings: [Finding] = []
    /// Live sessions over all engines: `sessions.max_live_sessions` bounds the daemon, not
    /// each partition, so each engine gets what the others leave of it.
    var liveSessions = 0
    /// Records given to the record sinks since they were last asked for room.
    var recordsSinceRoomCheck = 0
    /// The partition being read, its engine (out of `engines` while a batch is handled) and
    /// the offset of its last record handled. Apart, so that reading one copies nothing.
    private var currentPartition: KafkaTopicPartition?
    private var currentEngine: DetectionEngine?
    private var currentLastOffset: Int64?
    /// Partitions put back since `takeHandled`, each with the offset of its last record.
    private var handled: [(KafkaTopicPartition, Int64)] = []
    let rules: DetectionRules
    let maxLiveSessions: Int
    let recordSinks: [any RecordSink]
    /// Told which partitions are being fetched.
    let fetching: FetchHealth

    init(parser: RecordParser, rules: DetectionRules, recordSinks: [any RecordSink], collectsRollups: Bool, fetching: FetchHealth) {
        self.parser = parser
        self.rules = rules
        maxLiveSessions = rules.sessions.maxLiveSessions
        self.recordSinks = recordSinks
        self.fetching = fetching
        cohorts = CohortTracker(rules: rules)
        cohorts.collectsRollups = collectsRollups
    }

    /// Parses a record (librdkafka's memory, parsed in place), feeds its samples to its
    /// partition's engine and the cohorts, and holds the findings. `wallClock` (milliseconds)
    /// is the reference for records dated implausibly far ahead; `skipped` gets each line that
    /// gives no sample (after it first throws, no more: its error is thrown after the record).
    mutating func handle(
        _ record: KafkaRecordView, wallClock: Int64, skipped: (SkipReason, String, UnsafeBufferPointer<UInt8>) throws -> Void
    ) throws {
        if currentPartition?.partition != record.partition || currentPartition?.topic != record.topic {
            switchEngine(to: record.topicPartition, wallClock: wallClock)
        }
        currentLastOffset = record.offset
        defer { if liveSessions > maxLiveSessions { evictOverCapacity() } }
        try Self.parse(
            record, parser: &parser, engine: &currentEngine!, liveSessions: &liveSessions, maxLiveSessions: maxLiveSessions, cohorts: &cohorts,
            into: &heldFindings, recordSinks: recordSinks, recordsSinceRoomCheck: &recordsSinceRoomCheck, skipped: skipped)
    }

    /// The per-sample work, on the parts it needs (each its own access, none copied). The
    /// engine may hold what the other engines leave of `maxLiveSessions`.
    private static func parse(
        _ record: KafkaRecordView, parser: inout RecordParser, engine: inout DetectionEngine, liveSessions: inout Int, maxLiveSessions: Int,
        cohorts: inout CohortTracker, into findings: inout [Finding], recordSinks: [any RecordSink], recordsSinceRoomCheck: inout Int,
        skipped: (SkipReason, String, UnsafeBufferPointer<UInt8>) throws -> Void
    ) throws {
        let liveBefore = engine.liveSessionCount
        engine.sessionCapacity = max(1, maxLiveSessions - (liveSessions - liveBefore))
        defer { liveSessions += engine.liveSessionCount - liveBefore }
        var skipError: (any Error)?
        var sampleSinkError: (any Error)?
        parser.parseLines(of: record.value) { outcome, line in
            switch consume outcome {
            case .sample(var sample):
                sample.position = record.offset
                if !recordSinks.isEmpty, sampleSinkError == nil {
                    recordsSinceRoomCheck += 1
                    do {
                        for sink in recordSinks { try sink.record(sample) }
                    } catch {
                        sampleSinkError = error
                    }
                }
                engine.process(sample, into: &findings)
                cohorts.observe(sample, engine.lastObservation, into: &findings)
            case .skipped(let reason, let detail):
                guard skipError == nil else { return }
                do { try skipped(reason, detail, line) } catch { skipError = error }
            }
        }
        if let skipError { throw skipError }
        if let sampleSinkError { throw sampleSinkError }
    }

    /// Over `sessions.max_live_sessions`: the fullest engines evict their least recently seen
    /// sessions (an engine holding no session cannot make room itself).
    private mutating func evictOverCapacity() {
        park()
        while liveSessions > maxLiveSessions,
            let fullest = engines.max(by: { $0.value.liveSessionCount < $1.value.liveSessionCount })?.key,
            engines[fullest]!.evictLeastRecentlySeen(into: &heldFindings)
        {
            liveSessions -= 1
        }
    }

    /// Takes the engine of `tp` out of `engines` for the records that follow (one lookup per
    /// partition per batch, not several per record), putting the previous one back.
    private mutating func switchEngine(to tp: KafkaTopicPartition, wallClock: Int64) {
        park()
        fetching.recordFetched(tp)
        var engine = engines.removeValue(forKey: tp) ?? DetectionEngine(rules: rules)
        engine.noteWallClock(wallClock)
        currentPartition = tp
        currentEngine = engine
        currentLastOffset = nil
    }

    /// Puts the engine in use back in `engines`, noting how far its partition was handled.
    mutating func park() {
        guard let tp = currentPartition, let engine = currentEngine.take() else { return }
        currentPartition = nil
        engines[tp] = engine
        if let offset = currentLastOffset { handled.append((tp, offset)) }
        currentLastOffset = nil
    }

    /// The partitions put back since last asked, with the offset of each one's last record
    /// handled, in the order they were put back.
    mutating func takeHandled() -> [(KafkaTopicPartition, Int64)] {
        let taken = handled
        handled = []
        return taken
    }

    /// Moves event time on by `elapsedMs` in each partition that has seen a record and that
    /// `mayAdvance` allows (a quiet stream), holding what that finds.
    mutating func advanceQuietPartitions(by elapsedMs: Int64, where mayAdvance: (KafkaTopicPartition) -> Bool) {
        for tp in engines.keys.sorted() where engines[tp]!.watermark > Int64.min && mayAdvance(tp) {
            engines[tp]!.advance(to: engines[tp]!.watermark + elapsedMs, into: &heldFindings)
        }
    }

    /// Closes the cohort windows that end before `watermark`, holding what that finds.
    mutating func advanceCohorts(to watermark: Int64) {
        cohorts.advance(to: watermark, into: &heldFindings)
    }

    /// Recounts the live sessions over all engines (after evictions outside `handle`).
    mutating func countLiveSessions() {
        liveSessions = engines.values.reduce(0) { $0 + $1.liveSessionCount }
    }
}
