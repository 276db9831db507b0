import SentinelKafka

/// The daemon's consume policy, with no IO (as swift-kafka-client and postgres-nio keep theirs):
/// when findings go to the sinks, when offsets are committed and how far, when detection state
/// is checkpointed, when event time follows the wall clock, when to stop. The daemon tells it
/// what happened and carries out what it answers; tests drive it synchronously.
struct ConsumeStateMachine {
    struct Configuration: Equatable {
        /// How often processed offsets are committed.
        var commitIntervalSeconds = 1.0
        /// While records keep arriving, findings go out in batches of up to this many, or once
        /// the oldest has waited `findingBatchSeconds`; as soon as no record waits, at once.
        var findingBatch = 1_000
        var findingBatchSeconds = 0.05
        /// After this long without records, event time follows the wall clock.
        var quietSeconds = 5.0
        /// Metrics are published, and quiet event time advanced, at most this often.
        var tickSeconds = 1.0
        /// Stop after this long without a record (nil: never).
        var exitWhenIdleSeconds: Double?
        /// Whether detection state is checkpointed with commits.
        var checkpoints = false
        /// A checkpoint may take at most this share of the consumer's time.
        var checkpointShare = 0.05
    }

    /// Per partition: the offset after the last record handled not yet committed (`pending`),
    /// the last committed one, the offset after the last record handled at all, and the offset
    /// of the last saved checkpoint.
    struct Partition: Equatable {
        var pending: Int64?
        var committed: Int64?
        var handledThrough: Int64?
        var checkpointed: Int64?
    }

    /// What to do after a poll, in this order.
    struct Actions: Equatable {
        /// Hand the held findings to the sinks.
        var emitFindings = false
        /// Publish the metrics.
        var publishMetrics = false
        /// Commit (see `planCommit`).
        var commit = false
        /// Stop: no record for `exitWhenIdleSeconds`.
        var stopIdle = false
    }

    /// What a commit should do: save these partitions' checkpoints (state as of each offset),
    /// then commit these offsets.
    struct CommitPlan: Equatable {
        var checkpoints: [KafkaTopicPartition: Int64] = [:]
        var offsets: [KafkaTopicPartition: Int64] = [:]
        var isEmpty: Bool { checkpoints.isEmpty && offsets.isEmpty }
    }

    let configuration: Configuration
    private(set) var partitions: [KafkaTopicPartition: Partition] = [:]
    private var lastRecordAt: Double
    private var lastCommitAt: Double
    private var lastTickAt: Double
    private var heldSince = 0.0
    private var nextCheckpointAt = 0.0

    init(configuration: Configuration, now: Double) {
        self.configuration = configuration
        (lastRecordAt, lastCommitAt, lastTickAt) = (now, now, now)
    }

    /// Consuming starts (or starts again): the clocks start now; partitions are kept.
    mutating func started(now: Double) { (lastRecordAt, lastCommitAt, lastTickAt) = (now, now, now) }

    /// How long the next poll may wait: with findings held, only what the client already has
    /// is taken before they go out.
    func pollTimeoutMs(heldFindings: Int) -> Int32 { heldFindings == 0 ? 100 : 0 }

    /// A record of `partition` at `offset` was handled (its findings are held).
    mutating func handled(_ partition: KafkaTopicPartition, offset: Int64, now: Double) {
        lastRecordAt = now
        partitions[partition, default: Partition()].pending = offset + 1
        partitions[partition, default: Partition()].handledThrough = offset + 1
    }

    /// After a poll that brought nothing: by how many ms event time should move on in the
    /// partitions that are fetched and caught up (a quiet stream), or nil. While records flow
    /// only event time counts, so replays repeat exactly.
    mutating func quietAdvance(now: Double) -> Int64? {
        guard now - lastRecordAt >= configuration.quietSeconds, now - lastTickAt >= configuration.tickSeconds else { return nil }
        return Int64(((now - lastTickAt) * 1000).rounded())
    }

    /// After each poll (and any quiet advance): what to do, given the findings held before the
    /// poll and now.
    mutating func afterPoll(recordPolled: Bool, heldBefore: Int, heldNow: Int, now: Double) -> Actions {
        var actions = Actions()
        if heldBefore == 0, heldNow > 0 { heldSince = now }
        if heldNow > 0, !recordPolled || heldNow >= configuration.findingBatch || now - heldSince >= configuration.findingBatchSeconds {
            actions.emitFindings = true
        }
        if now - lastTickAt >= configuration.tickSeconds {
            lastTickAt = now
            actions.publishMetrics = true
        }
        if now - lastCommitAt >= configuration.commitIntervalSeconds {
            lastCommitAt = now
            actions.commit = true
        }
        if let idle = configuration.exitWhenIdleSeconds, now - lastRecordAt >= idle { actions.stopIdle = true }
        return actions
    }

    /// What a commit of `only` (nil: every partition) should do. Checkpoints, when on, cover
    /// each partition up to its last handled record, at most as often as their cost allows
    /// unless `force`d (a revoke) or `stopping` (a graceful stop), and no offset goes past its
    /// partition's checkpoint (this plan's, or the last one saved): a restart resumes from the
    /// checkpoint, which it would pass over as stale behind a commit that had moved on.
    /// Otherwise offsets go no further than the oldest record live state needs
    /// (`restartPosition`), stopping or not: replaying from them is how the next daemon gets
    /// the open episodes back, to carry them on under their ids rather than leave them firing.
    func planCommit(
        only: Set<KafkaTopicPartition>? = nil, stopping: Bool = false, force: Bool = false, now: Double,
        restartPosition: (KafkaTopicPartition) -> Int64?
    ) -> CommitPlan {
        var plan = CommitPlan()
        let checkpointDue = configuration.checkpoints && (stopping || force || now >= nextCheckpointAt)
        for (tp, p) in partitions where only?.contains(tp) ?? true {
            if checkpointDue, let through = p.handledThrough, through > (p.checkpointed ?? -1) { plan.checkpoints[tp] = through }
            if let next = p.pending {
                var offset = min(next, restartPosition(tp) ?? next)
                if configuration.checkpoints {
                    // Stopping, the checkpoint holds the whole state: all that was handled.
                    offset = min(stopping ? next : offset, plan.checkpoints[tp] ?? p.checkpointed ?? -1)
                }
                if offset > (p.committed ?? -1) { plan.offsets[tp] = offset }
            }
        }
        return plan
    }

    /// The plan's offsets when the checkpoints of `unsaved` could not be saved: theirs go no
    /// further than the checkpoints saved before.
    func offsets(of plan: CommitPlan, unsaved: some Sequence<KafkaTopicPartition>) -> [KafkaTopicPartition: Int64] {
        guard configuration.checkpoints else { return plan.offsets }
        var offsets = plan.offsets
        for tp in unsaved {
            guard let offset = offsets[tp] else { continue }
            offsets[tp] = nil
            guard let p = partitions[tp], let saved = p.checkpointed, min(offset, saved) > (p.committed ?? -1) else { continue }
            offsets[tp] = min(offset, saved)
        }
        return offsets
    }

    /// The plan's checkpoints were saved, starting at `startedAt` and taking `took` seconds:
    /// the next waits until they cost at most `checkpointShare` of the time.
    mutating func checkpointsSaved(_ offsets: [KafkaTopicPartition: Int64], startedAt: Double, took: Double) {
        for (tp, offset) in offsets { partitions[tp, default: Partition()].checkpointed = offset }
        nextCheckpointAt = startedAt + took / configuration.checkpointShare
    }

    /// The broker confirmed these offsets.
    mutating func committed(_ offsets: [KafkaTopicPartition: Int64]) {
        for (tp, offset) in offsets {
            partitions[tp, default: Partition()].committed = offset
            if partitions[tp]?.pending == offset { partitions[tp]?.pending = nil }
        }
    }

    /// A partition was assigned and resumes from its checkpoint at `offset`: everything before
    /// it counts as handled and checkpointed.
    mutating func resumed(_ partition: KafkaTopicPartition, at offset: Int64) {
        partitions[partition] = Partition(pending: offset, committed: nil, handledThrough: offset, checkpointed: offset)
    }

    /// Partitions were revoked (after their last commit): forget them.
    mutating func revoked(_ revoked: [KafkaTopicPartition]) {
        for tp in revoked { partitions[tp] = nil }
    }
}
