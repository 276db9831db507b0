import Foundation
import Testing

@testable import SentinelKafka

/// The wrapper against librdkafka's in-process mock cluster (fast; the real broker is
/// exercised by the daemon's integration tests).
@Suite(.serialized) struct MockClusterTests {
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
