import SentinelKafka
import Testing
@testable import SentinelDaemon

/// The daemon's consume policy, driven synchronously: every transition, including those only
/// a kill -9 or a rebalance reaches through the broker.
struct ConsumeStateMachineTests {
    let p0 = KafkaTopicPartition(topic: "t", partition: 0)
    let p1 = KafkaTopicPartition(topic: "t", partition: 1)

    func machine(_ change: (inout ConsumeStateMachine.Configuration) -> Void = { _ in }) -> ConsumeStateMachine {
        var configuration = ConsumeStateMachine.Configuration()
        change(&configuration)
        return ConsumeStateMachine(configuration: configuration, now: 0)
    }

    @Test func findingsWaitForABatchWhileRecordsFlowAndGoOutWhenNoneWaits() {
        var m = machine()
        m.handled(p0, offset: 0, now: 0.01)
        // The first finding is held: records keep coming.
        #expect(!m.afterPoll(recordPolled: true, heldBefore: 0, heldNow: 1, now: 0.01).emitFindings)
        #expect(m.pollTimeoutMs(heldFindings: 1) == 0, "with findings held, only what the client has is taken")
        #expect(!m.afterPoll(recordPolled: true, heldBefore: 1, heldNow: 999, now: 0.05).emitFindings)
        #expect(m.afterPoll(recordPolled: true, heldBefore: 999, heldNow: 1_000, now: 0.051).emitFindings, "a full batch goes")
        // A new batch: 50 ms after its first finding it goes, however few.
        #expect(!m.afterPoll(recordPolled: true, heldBefore: 0, heldNow: 2, now: 0.2).emitFindings)
        #expect(m.afterPoll(recordPolled: true, heldBefore: 2, heldNow: 3, now: 0.26).emitFindings)
        // No record waiting: at once.
        #expect(m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 1, now: 0.3).emitFindings)
        #expect(!m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 0.31).emitFindings)
        #expect(m.pollTimeoutMs(heldFindings: 0) == 100)
    }

    @Test func commitsMetricsAndTheIdleStopFollowTheirClocks() {
        var m = machine { $0.exitWhenIdleSeconds = 3 }
        #expect(m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 0.5) == .init())
        let second = m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 1.0)
        #expect(second.commit && second.publishMetrics && !second.stopIdle)
        #expect(!m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 1.5).commit)
        m.handled(p0, offset: 7, now: 1.9)
        #expect(!m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 4.8).stopIdle, "3 s after the last record, not before")
        #expect(m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 4.9).stopIdle)
    }

    @Test func eventTimeFollowsTheWallClockOnlyWhenTheStreamIsQuiet() {
        var m = machine()
        m.handled(p0, offset: 0, now: 0)
        #expect(m.quietAdvance(now: 4.9) == nil, "records flowed within 5 s")
        _ = m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 4.9)  // a tick at 4.9
        #expect(m.quietAdvance(now: 5.5) == nil, "less than a tick since the last")
        #expect(m.quietAdvance(now: 6.0) == 1_100)
        _ = m.afterPoll(recordPolled: false, heldBefore: 0, heldNow: 0, now: 6.0)
        #expect(m.quietAdvance(now: 7.0) == 1_000)
        m.handled(p0, offset: 1, now: 7.2)
        #expect(m.quietAdvance(now: 8.5) == nil, "a record ends the quiet")
    }

    @Test func offsetsGoNoFurtherThanLiveStateNeedsEvenStopping() {
        var m = machine()
        for offset in 0..<10 { m.handled(p0, offset: Int64(offset), now: 0) }
        m.handled(p1, offset: 4, now: 0)
        let needed: [KafkaTopicPartition: Int64] = [p0: 6]
        var plan = m.planCommit(now: 1) { needed[$0] }
        #expect(plan.offsets == [p0: 6, p1: 5])
        #expect(plan.checkpoints.isEmpty, "checkpoints are off")
        m.committed(plan.offsets)
        // p1 is fully committed; p0 waits for its live state.
        plan = m.planCommit(now: 2) { needed[$0] }
        #expect(plan.isEmpty, "nothing beyond what is committed")
        // Without checkpoints a replay is how the next daemon gets the open episodes back.
        #expect(m.planCommit(stopping: true, now: 2) { needed[$0] }.isEmpty, "a graceful stop commits no further")
        #expect(m.planCommit(only: [p1], stopping: true, now: 2) { needed[$0] }.isEmpty)
        // The state moves on: so does the commit.
        plan = m.planCommit(now: 3) { _ in nil }
        #expect(plan.offsets == [p0: 10])
        m.committed(plan.offsets)
        #expect(m.partitions[p0] == .init(pending: nil, committed: 10, handledThrough: 10, checkpointed: nil))
    }

    @Test func checkpointsCoverEveryHandledRecordAtMostAsOftenAsTheirCostAllows() {
        var m = machine { $0.checkpoints = true }
        m.handled(p0, offset: 41, now: 0)
        var plan = m.planCommit(now: 1) { _ in 0 }
        #expect(plan.checkpoints == [p0: 42], "the state as of the record after the last handled")
        #expect(plan.offsets == [p0: 0], "the commit itself stays conservative")
        // A slow save (0.5 s) holds the next one back 10 s (5% of the time) unless forced.
        m.checkpointsSaved(plan.checkpoints, startedAt: 1, took: 0.5)
        m.handled(p0, offset: 42, now: 2)
        #expect(m.planCommit(now: 2) { _ in 0 }.checkpoints.isEmpty)
        #expect(m.planCommit(force: true, now: 2) { _ in 0 }.checkpoints == [p0: 43], "a revoke saves at once")
        #expect(m.planCommit(stopping: true, now: 2) { _ in 0 }.checkpoints == [p0: 43], "so does a graceful stop")
        plan = m.planCommit(now: 11) { _ in 0 }
        #expect(plan.checkpoints == [p0: 43])
        m.checkpointsSaved(plan.checkpoints, startedAt: 11, took: 0.001)
        #expect(m.planCommit(now: 12) { _ in 0 }.checkpoints.isEmpty, "nothing new handled")
        // A partition resumed from its checkpoint needs none until it handles a record.
        m.resumed(p1, at: 100)
        #expect(m.planCommit(now: 13) { _ in 0 }.checkpoints.isEmpty)
        m.handled(p1, offset: 100, now: 13)
        #expect(m.planCommit(now: 13) { _ in 0 }.checkpoints == [p1: 101])
    }

    @Test func noCommitPassesTheLastSavedCheckpoint() {
        // Commits come every second, checkpoints as their cost allows: between two, the live
        // state's restart position moves on, but a commit past the checkpoint would make a
        // restart pass it over as stale and rebuild the state from a replay instead.
        var m = machine { $0.checkpoints = true }
        for offset in 0..<100 { m.handled(p0, offset: Int64(offset), now: 0) }
        var plan = m.planCommit(now: 1) { _ in 90 }
        #expect(plan.checkpoints == [p0: 100] && plan.offsets == [p0: 90])
        m.checkpointsSaved(plan.checkpoints, startedAt: 1, took: 0.5)
        m.committed(plan.offsets)
        for offset in 100..<200 { m.handled(p0, offset: Int64(offset), now: 2) }
        plan = m.planCommit(now: 2) { _ in 190 }
        #expect(plan.checkpoints.isEmpty, "not due for 10 s")
        #expect(plan.offsets == [p0: 100], "no further than the checkpoint")
        m.committed(plan.offsets)
        #expect(m.planCommit(now: 3) { _ in 195 }.isEmpty)
        // A checkpoint that cannot be saved takes the commit no further either.
        plan = m.planCommit(now: 12) { _ in 195 }
        #expect(plan.checkpoints == [p0: 200] && plan.offsets == [p0: 195])
        #expect(m.offsets(of: plan, unsaved: [p0]).isEmpty, "already committed up to the checkpoint saved before")
        #expect(m.offsets(of: plan, unsaved: [p1]) == [p0: 195])
        // A graceful stop commits all that was handled, with the checkpoint saved as of there.
        plan = m.planCommit(stopping: true, now: 12) { _ in 195 }
        #expect(plan.checkpoints == [p0: 200] && plan.offsets == [p0: 200])
        // Without checkpoints the conservative commit is all there is, stopping or not.
        var off = machine()
        for offset in 0..<100 { off.handled(p0, offset: Int64(offset), now: 0) }
        #expect(off.planCommit(now: 1) { _ in 90 }.offsets == [p0: 90])
        #expect(off.planCommit(stopping: true, now: 1) { _ in 90 }.offsets == [p0: 90])
        #expect(off.planCommit(stopping: true, now: 1) { _ in nil }.offsets == [p0: 100], "all of it when no state needs any")
    }

    @Test func aRevokedPartitionIsForgotten() {
        var m = machine { $0.checkpoints = true }
        m.handled(p0, offset: 3, now: 0)
        m.handled(p1, offset: 5, now: 0)
        let plan = m.planCommit(only: [p1], force: true, now: 1) { _ in nil }
        #expect(plan.offsets == [p1: 6] && plan.checkpoints == [p1: 6], "a revoke commits and checkpoints only what it gives up")
        m.revoked([p1])
        #expect(m.partitions[p1] == nil)
        #expect(m.planCommit(now: 2) { _ in nil }.offsets == [p0: 4])
    }
}
