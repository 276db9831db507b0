import Foundation
import SentinelHTTP
import SentinelJSON
import SentinelKafka
import Synchronization

/// Whether a quiet partition is quiet because its stream is, or because the daemon cannot
/// fetch it. Event time of a quiet partition follows the wall clock (idle sessions are
/// evicted, stuck startups fire), but only while the partition is really fetched and caught
/// up: during a broker outage, silence proves nothing about the viewers.
///
/// Written from librdkafka's events (statistics every `statistics.interval.ms`, errors as
/// they happen), read by the polling loop; one lock guards it.
final class FetchHealth: Sendable {
    private struct State {
        var lastErrorAt = -Double.infinity
        var statisticsAt = -Double.infinity
        var caughtUp: Set<KafkaTopicPartition> = []
        var errorSeen = false
        var fetchedSinceError: Set<KafkaTopicPartition> = []
    }

    private let state = Mutex(State())

    static let errorHoldSeconds = 10.0
    /// Statistics older than this say nothing.
    static let freshSeconds = 12.0

    func recordError(at now: Double = monotonicSeconds()) {
        state.withLock {
            $0.lastErrorAt = now
            $0.errorSeen = true
            $0.fetchedSinceError.removeAll(keepingCapacity: true)
        }
    }

    /// A record of `partition` arrived: it is fetched again after an error. (Cheap when no
    /// error was seen: the usual case.)
    func recordFetched(_ partition: KafkaTopicPartition) {
        state.withLock {
            if $0.errorSeen, !$0.fetchedSinceError.contains(partition) { $0.fetchedSinceError.insert(partition) }
        }
    }

    func recordStatistics(_ json: String, at now: Double = monotonicSeconds()) {
        recordCaughtUp(Self.caughtUpPartitions(inStatistics: json), at: now)
    }

    /// Which partitions are fetched and caught up: from librdkafka's statistics, or the
    /// source's own word (Kinesis).
    func recordCaughtUp(_ partitions: Set<KafkaTopicPartition>, at now: Double = monotonicSeconds()) {
        state.withLock {
            $0.caughtUp = partitions
            $0.statisticsAt = now
        }
    }

    /// Whether event time of `partition` may follow the wall clock now.
    func mayAdvance(_ partition: KafkaTopicPartition, at now: Double = monotonicSeconds()) -> Bool {
        state.withLock { s in
            now - s.lastErrorAt >= Self.errorHoldSeconds && now - s.statisticsAt <= Self.freshSeconds && s.caughtUp.contains(partition)
                && (!s.errorSeen || s.fetchedSinceError.contains(partition))
        }
    }

    /// The partitions librdkafka is fetching from a broker that is up, with everything
    /// up to the partition's high watermark handed to the application.
    static func caughtUpPartitions(inStatistics json: String) -> Set<KafkaTopicPartition> {
        guard let stats = try? JSONParser.parse(json, limits: .init(maxDepth: 16, maxElements: 1_000_000)) else { return [] }
        var up: Set<Int64> = []
        for (_, broker) in stats["brokers"]?.objectMembers ?? [] {
            if broker["state"] == .string("UP"), case .int(let id)? = broker["nodeid"] { up.insert(id) }
        }
        var result: Set<KafkaTopicPartition> = []
        for (topic, value) in stats["topics"]?.objectMembers ?? [] {
            for (partition, p) in value["partitions"]?.objectMembers ?? [] {
                guard let id = Int32(partition), id >= 0, case .int(let leader)? = p["leader"], up.contains(leader),
                    p["fetch_state"] == .string("active"), case .int(let high)? = p["hi_offset"], high >= 0
                else { continue }
                // app_offset: the next offset the application will see (-1001 before any).
                let next: Int64 = if case .int(let n)? = p["app_offset"], n >= 0 { n } else { 0 }
                if next >= high { result.insert(KafkaTopicPartition(topic: topic, partition: id)) }
            }
        }
        return result
    }
}
