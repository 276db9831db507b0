import Foundation
import Synchronization
import SentinelTestSupport
import Testing

@testable import SentinelKafka

/// The wrapper against librdkafka's in-process mock cluster (fast; the real broker is
/// exercised by the daemon's integration tests).
@Suite(.serialized, .ownThread) struct MockClusterTests {
    func consumeAll(_ consumer: KafkaConsumer, count: Int, timeout: Double = 20) throws -> [KafkaMessage] {
        var messages: [KafkaMessage] = []
        let deadline = Date().addingTimeInterval(timeout)
        while messages.count < count, Date() < deadline {
            if let m = try consumer.poll(timeoutMs: 100) { messages.append(m) }
        }
        return messages
    }

    @Test func producesKeyedRecordsAndConsumesThemByAssignment() throws {
        let cluster = try KafkaMockCluster()
        try cluster.createTopic("t", partitions: 3)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers])
        for i in 0..<30 {
            try producer.send(topic: "t", key: Array("session-\(i % 5)".utf8), value: Array("record \(i)".utf8))
        }
        try producer.flush(timeoutMs: 10_000)
        #expect(producer.deliveries.delivered == 30 && producer.deliveries.failed == 0)

        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": cluster.bootstrapServers, "group.id": "g1", "auto.offset.reset": "earliest"])
        try consumer.assign((0..<3).map { (KafkaTopicPartition(topic: "t", partition: $0), offset: nil) })
        let messages = try consumeAll(consumer, count: 30)
        #expect(messages.count == 30)
        #expect(Set(messages.map { String(decoding: $0.value, as: UTF8.self) }).count == 30)
        // The key decides the partition: one session, one partition.
        var partitionOfKey: [String: Set<Int32>] = [:]
        for m in messages { partitionOfKey[String(decoding: m.key ?? [], as: UTF8.self), default: []].insert(m.topicPartition.partition) }
        #expect(partitionOfKey.count == 5 && partitionOfKey.values.allSatisfy { $0.count == 1 })
        // Offsets are in order within each partition.
        for p in Int32(0)..<3 {
            let offsets = messages.filter { $0.topicPartition.partition == p }.map(\.offset)
            #expect(offsets == offsets.sorted())
        }
        consumer.close()
    }

    @Test func commitsExplicitOffsetsAndResumesFromThem() throws {
        let cluster = try KafkaMockCluster()
        try cluster.createTopic("c", partitions: 1)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers])
        for i in 0..<10 { try producer.send(topic: "c", key: nil, value: Array("\(i)".utf8)) }
        try producer.flush(timeoutMs: 10_000)
        let tp = KafkaTopicPartition(topic: "c", partition: 0)
        let props = ["bootstrap.servers": cluster.bootstrapServers, "group.id": "g2", "auto.offset.reset": "earliest"]
        do {
            let consumer = try KafkaConsumer(properties: props)
            try consumer.assign([(tp, offset: nil)])
            let first = try consumeAll(consumer, count: 4)
            #expect(first.map(\.offset) == [0, 1, 2, 3])
            try consumer.commit([tp: 4])
            #expect(try consumer.committed([tp])[tp] == 4)
            consumer.close()
        }
        let again = try KafkaConsumer(properties: props)
        try again.assign([(tp, offset: nil)])
        let rest = try consumeAll(again, count: 6)
        #expect(rest.map(\.offset) == [4, 5, 6, 7, 8, 9], "nothing committed is read twice, nothing uncommitted is lost")
        again.close()
    }

    /// `pollBatch` hands records over in partition order as views of librdkafka's memory, at
    /// most `max` at a time; a body that throws gets the error through, and the batch's other
    /// records are released, not leaked.
    @Test func batchesAreHandedOverInOrderWithoutCopies() throws {
        let cluster = try KafkaMockCluster()
        try cluster.createTopic("b", partitions: 2)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers])
        for i in 0..<500 { try producer.send(topic: "b", key: Array("key-\(i % 7)".utf8), value: Array("record \(i)".utf8)) }
        try producer.flush(timeoutMs: 10_000)
        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": cluster.bootstrapServers, "group.id": "batches", "auto.offset.reset": "earliest"])
        try consumer.assign((0..<2).map { (KafkaTopicPartition(topic: "b", partition: $0), offset: nil) })
        var values: [String] = []
        var offsets: [Int32: [Int64]] = [:]
        var largest = 0
        let deadline = Date().addingTimeInterval(20)
        while values.count < 500, Date() < deadline {
            let n = try consumer.pollBatch(max: 64, timeoutMs: 100) { record in
                #expect(record.topic == "b")
                values.append(String(decoding: record.value, as: UTF8.self))
                offsets[record.partition, default: []].append(record.offset)
                #expect(record.key.map { String(decoding: $0, as: UTF8.self).hasPrefix("key-") } == true)
            }
            largest = max(largest, n)
        }
        #expect(Set(values) == Set((0..<500).map { "record \($0)" }))
        #expect(largest <= 64 && largest > 1, "batches of up to 64: \(largest)")
        for (_, list) in offsets { #expect(list == Array(0..<Int64(list.count)), "each partition in order from its start") }

        struct Stop: Error {}
        let again = try KafkaConsumer(properties: ["bootstrap.servers": cluster.bootstrapServers, "group.id": "batches-2", "auto.offset.reset": "earliest"])
        try again.assign([(KafkaTopicPartition(topic: "b", partition: 0), offset: nil)])
        var seen = 0
        #expect(throws: Stop.self) {
            let end = Date().addingTimeInterval(10)
            while Date() < end {
                try again.pollBatch(max: 100, timeoutMs: 100) { _ in
                    seen += 1
                    if seen == 3 { throw Stop() }
                }
            }
        }
        #expect(seen == 3)
        again.close()
        consumer.close()
        withExtendedLifetime(cluster) {}
    }

    /// A consumer that defers rebalances gets each one from `nextRebalance` after `poll`, reads
    /// nothing of an assignment until it completes it (from the offsets it chose), and keeps a
    /// revoked partition until it completes the revocation; with the eager and the cooperative
    /// protocol alike.
    @Test(.timeLimit(.minutes(2)), arguments: ["range", "cooperative-sticky"])
    func deferredRebalancesAreCompletedByTheCaller(_ strategy: String) throws {
        let cluster = try KafkaMockCluster()
        try cluster.createTopic("r", partitions: 2)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers])
        for i in 0..<40 { try producer.send(topic: "r", key: Array("key-\(i % 10)".utf8), value: Array("\(i)".utf8)) }
        try producer.flush(timeoutMs: 10_000)
        let properties = [
            "bootstrap.servers": cluster.bootstrapServers, "group.id": "deferring-\(strategy)", "auto.offset.reset": "earliest",
            "partition.assignment.strategy": strategy, "session.timeout.ms": "6000", "heartbeat.interval.ms": "500",
        ]
        let first = try KafkaConsumer(properties: properties)
        first.defersRebalances = true
        try first.subscribe(["r"])
        var assigned: [KafkaTopicPartition] = []
        let deadline = Date().addingTimeInterval(30)
        while assigned.isEmpty, Date() < deadline {
            #expect(try first.poll(timeoutMs: 100) == nil, "nothing is read before the assignment is completed")
            if case .assign(let partitions)? = first.nextRebalance() { assigned = partitions }
        }
        #expect(Set(assigned.map(\.partition)) == [0, 1])
        let p0 = KafkaTopicPartition(topic: "r", partition: 0)
        let ends = try [0, 1].map { try first.highWatermark(KafkaTopicPartition(topic: "r", partition: Int32($0))) }
        try #require(ends[0] > 2 && ends[1] > 0, "the keys spread over both partitions: \(ends)")
        try first.completeAssignment(assigned, offsets: [p0: 2])
        let messages = try consumeAll(first, count: Int(ends[0] - 2 + ends[1]))
        #expect(messages.count == Int(ends[0] - 2 + ends[1]))
        let firstOffsets = Dictionary(grouping: messages, by: \.topicPartition.partition).mapValues { $0.map(\.offset).min() ?? -1 }
        #expect(firstOffsets[0] == 2, "partition 0 starts where the caller said")
        #expect(firstOffsets[1] == 0, "partition 1 starts at its committed (here: earliest) offset")

        // A second member joins: the first is asked to give partitions up and keeps them until
        // it completes the revocation.
        let secondAssigned = Flag()
        let second = try KafkaConsumer(properties: properties) { event in
            if case .assigned = event { secondAssigned.set() }
        }
        try second.subscribe(["r"])
        var revoked: [KafkaTopicPartition] = []
        let joinDeadline = Date().addingTimeInterval(60)
        while revoked.isEmpty, Date() < joinDeadline {
            _ = try first.poll(timeoutMs: 100)
            _ = try second.poll(timeoutMs: 10)
            switch first.nextRebalance() {
            case .revoke(let partitions)?: revoked = partitions
            case .assign(let partitions)?: try first.completeAssignment(partitions, offsets: [:])
            case nil: break
            }
        }
        #expect(!revoked.isEmpty, "the first member was asked to give partitions up")
        try first.completeRevocation(revoked)
        // The second member gets its share. (It must have had an assignment before it is
        // closed: librdkafka before 2.3.0 aborts when a cooperative-sticky consumer closes
        // without one, which a loaded machine running tests in parallel can reach.)
        let assignDeadline = Date().addingTimeInterval(60)
        while !secondAssigned.isSet, Date() < assignDeadline {
            _ = try first.poll(timeoutMs: 10)
            _ = try second.poll(timeoutMs: 100)
        }
        let assignedToSecond = secondAssigned.isSet
        #expect(assignedToSecond, "the second member was given partitions")
        first.close()
        if assignedToSecond { second.close() } else { Unclosed.keep(second) }
        withExtendedLifetime(cluster) {}
    }

    /// A tool can check for a broker before producing: a cluster answers, an address where
    /// none listens fails within the time given, with the reason.
    @Test func requireBrokerAnswersOnlyWhereABrokerListens() throws {
        let cluster = try KafkaMockCluster()
        try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers]).requireBroker(timeoutMs: 5_000)
        let nobody = try KafkaProducer(properties: ["bootstrap.servers": "127.0.0.1:1", "reconnect.backoff.max.ms": "100"])
        let start = ContinuousClock.now
        #expect {
            try nobody.requireBroker(timeoutMs: 1_500)
        } throws: { error in
            "\(error)".contains("no broker answered within 1500 ms")
        }
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    /// librdkafka before 2.3.0 aborts when a cooperative-sticky consumer closes before its
    /// first assignment: the daemon says so when it starts with that assignor.
    @Test func theCooperativeStickyAssignorIsWarnedAboutBeforeLibrdkafka230() {
        #expect(KafkaConsumer.assignorWarning(strategy: "cooperative-sticky", version: 0x0200_02ff)?.contains("librdkafka 2.0.2") == true)
        #expect(KafkaConsumer.assignorWarning(strategy: "cooperative-sticky", version: 0x0203_00ff) == nil)
        #expect(KafkaConsumer.assignorWarning(strategy: "range,roundrobin", version: 0x0200_02ff) == nil)
        #expect(KafkaConsumer.assignorWarning(strategy: nil, version: 0x0200_02ff) == nil)
    }

    @Test func invalidPropertiesFailClearly() {
        #expect {
            _ = try KafkaProducer(properties: ["bootstrap.servers": "x", "no.such.property": "1"])
        } throws: { error in
            "\(error)".contains("no.such.property")
        }
    }

    @Test func unreachableBrokerIsReportedAsEventsNotCrashes() throws {
        let events = EventLog()
        let consumer = try KafkaConsumer(
            properties: ["bootstrap.servers": "127.0.0.1:1", "group.id": "g3", "reconnect.backoff.max.ms": "100"],
            onEvent: { events.append($0) })
        try consumer.assign([(KafkaTopicPartition(topic: "x", partition: 0), offset: nil)])
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, events.errors == 0 { _ = try consumer.poll(timeoutMs: 100) }
        #expect(events.errors > 0)
        consumer.close()
    }
}

final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _errors = 0
    func append(_ event: KafkaEvent) {
        if case .error = event { lock.withLock { _errors += 1 } }
    }
    var errors: Int { lock.withLock { _errors } }
}

/// Consumers a failed test could not close safely (see above), kept open until the process ends.
enum Unclosed {
    private static let consumers = Mutex<[KafkaConsumer]>([])
    static func keep(_ consumer: KafkaConsumer) { consumers.withLock { $0.append(consumer) } }
}

/// A flag set from librdkafka's callback thread.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
