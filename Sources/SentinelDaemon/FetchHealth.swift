import Foundation
import SentinelHTTP
import SentinelJSON
import SentinelKafka

/// Whether a quiet partition is quiet because its stream is, or because the daemon cannot
/// fetch it. Event time of a quiet partition follows the wall clock (idle sessions are
/// evicted, stuck startups fire), but only while the partition is really fetched and caught
/// up: during a broker outage, silence proves nothing about the viewers.
///
/// Written from librdkafka's events (statistics every `statistics.interval.ms`, errors as
/// they happen), read by the polling loop; one lock guards it.
final class FetchHealth: @unchecked Sendable {
    // Unchecked: every field is read and written under `lock`.
    private let lock = NSLock()
    private var lastErrorAt = -Double.infinity
    private var statisticsAt = -Double.infinity
    private var caughtUp: Set<KafkaTopicPartition> = []
    /// After an error a partition must prove it is fetched again: librdkafka's statistics can
    /// call it caught up against a high watermark from before the outage.
    private var errorSeen = false
    private var fetchedSinceError: Set<KafkaTopicPartition> = []

    /// An error keeps event time still for this long after it (statistics come every 5 s).
    static let errorHoldSeconds = 10.0
    /// Statistics older than this say nothing.
    static let freshSeconds = 12.0

    func recordError(at now: Double = monotonicSeconds()) {
        lock.withLock {
            lastErrorAt = now
            errorSeen = true
            fetchedSinceError.removeAll(keepingCapacity: true)
        }
    }

    /// A record of `partition` arrived: it is fetched again after an error. (Cheap when no
    /// error was seen: the usual case.)
    func recordFetched(_ partition: KafkaTopicPartition) {
        lock.withLock {
            if errorSeen, !fetchedSinceError.contains(partition) { fetchedSinceError.insert(partition) }
        }
    }

    func recordStatistics(_ json: String, at now: Double = monotonicSeconds()) {
        let partitions = Self.caughtUpPartitions(inStatistics: json)
        lock.withLock {
            caughtUp = partitions
            statisticsAt = now
        }
    }

    /// Whether event time of `partition` may follow the wall clock now.
    func mayAdvance(_ partition: KafkaTopicPartition, at now: Double = monotonicSeconds()) -> Bool {
        lock.withLock {
            now - lastErrorAt >= Self.errorHoldSeconds && now - statisticsAt <= Self.freshSeconds && caughtUp.contains(partition)
                && (!errorSeen || fetchedSinceError.contains(partition))
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
