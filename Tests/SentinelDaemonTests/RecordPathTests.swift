import CMCDDetection
import CMCDRecords
import SentinelConfig
import SentinelKafka
import SentinelTestSupport
import Testing
@testable import SentinelDaemon

/// The per-record path of the consume loop, driven synchronously with records in memory.
struct RecordPathTests {
    let p0 = KafkaTopicPartition(topic: "t", partition: 0)
    let p1 = KafkaTopicPartition(topic: "t", partition: 1)

    func path(maxLiveSessions: Int = 1_000_000) -> RecordPath {
        var rules = DetectionRules()
        rules.sessions.maxLiveSessions = maxLiveSessions
        return RecordPath(parser: RecordParser(configuration: .init()), rules: rules, recordSinks: [], collectsRollups: false, fetching: FetchHealth())
    }

    /// Hands `text` to the path as the record at `offset` of `tp`.
    func hand(
        _ text: String, _ tp: KafkaTopicPartition, offset: Int64, to path: inout RecordPath,
        skipped: (SkipReason, String, UnsafeBufferPointer<UInt8>) throws -> Void = { _, _, _ in }
    ) throws {
        var bytes = Array(text.utf8)
        try bytes.withUnsafeMutableBufferPointer { buffer in
            let record = KafkaRecordView(topic: tp.topic, partition: tp.partition, offset: offset, key: nil, value: UnsafeBufferPointer(buffer))
            try path.handle(record, wallClock: OutageLines.t0, skipped: skipped)
        }
    }

    /// The opening lines of `viewers` sessions on one edge (a manifest request each, in
    /// time order).
    func firstLines(_ viewers: Int) -> [String] {
        let lines = OutageLines.cloudFront(perEdge: viewers, failing: "FRA56-C2", healthy: "AMS1-C1")
        return Array(lines.filter { $0.line.contains("ot%3Dm") && $0.line.contains("FRA56-C2") }.map(\.line).prefix(viewers))
    }

    @Test func eachPartitionHasItsOwnEngineAndItsLastOffsetIsReportedWhenPutBack() throws {
        var path = path()
        let lines = firstLines(5)
        try hand(lines[0], p0, offset: 10, to: &path)
        try hand(lines[1], p0, offset: 11, to: &path)
        try hand(lines[2], p1, offset: 7, to: &path)
        try hand(lines[3], p0, offset: 12, to: &path)
        path.park()
        let handled = path.takeHandled()
        #expect(handled.map(\.0) == [p0, p1, p0])
        #expect(handled.map(\.1) == [11, 7, 12])
        #expect(path.takeHandled().isEmpty, "taken once")
        #expect(path.engines[p0]?.liveSessionCount == 3)
        #expect(path.engines[p1]?.liveSessionCount == 1)
        #expect(path.liveSessions == 4)
        // A record of several lines: each line a sample.
        try hand(lines[4] + "\n" + lines[4].replacingOccurrences(of: "FRA56-C2-4", with: "FRA56-C2-9") + "\n", p1, offset: 8, to: &path)
        path.park()
        #expect(path.engines[p1]?.liveSessionCount == 3)
        #expect(path.liveSessions == 6)
    }

    @Test func overTheDaemonsBoundTheFullestEngineMakesRoom() throws {
        var path = path(maxLiveSessions: 3)
        let lines = firstLines(4)
        try hand(lines[0], p1, offset: 0, to: &path)
        for (i, line) in lines.dropFirst().enumerated() { try hand(line, p0, offset: Int64(i), to: &path) }
        path.park()
        // Three on p0 and one on p1 is one too many: p0's engine, the fullest, gives one up.
        #expect(path.liveSessions == 3)
        #expect(path.engines[p0]?.liveSessionCount == 2)
        #expect(path.engines[p1]?.liveSessionCount == 1)
        #expect(path.engines.values.reduce(0) { $0 + $1.statistics.capacityEvictions } == 1)
    }

    @Test func linesWithoutASampleGoToSkippedWhoseFirstErrorIsThrownAfterTheRecord() throws {
        struct Refused: Error {}
        var path = path()
        let good = firstLines(1)[0]
        var calls: [SkipReason] = []
        #expect(throws: Refused.self) {
            try hand("not a log line\n" + good + "\nnor this\n", p0, offset: 3, to: &path) { reason, _, _ in
                calls.append(reason)
                throw Refused()
            }
        }
        #expect(calls.count == 1, "no more lines are handed over once it failed")
        path.park()
        #expect(path.engines[p0]?.liveSessionCount == 1, "the good line of the record was still detected")
        #expect(path.takeHandled().map(\.1) == [3])
    }
}

@Suite struct AllocatorSettingsTests {
    /// The free top of a heap is kept up to the pre-fetch queue's size (within bounds), and
    /// blocks of 4 MiB and more (outgrown session tables) are mapped on their own.
    @Test func theTrimThresholdFollowsThePrefetchQueue() {
        #expect(AllocatorSettings(queueKilobytes: 131_072).trimThreshold == 128 << 20)
        #expect(AllocatorSettings(queueKilobytes: nil).trimThreshold == 64 << 20, "librdkafka's default queue")
        #expect(AllocatorSettings(queueKilobytes: 1_024).trimThreshold == 16 << 20)
        #expect(AllocatorSettings(queueKilobytes: 8 << 20).trimThreshold == 1 << 30)
        let settings = AllocatorSettings(queueKilobytes: 131_072)
        #expect(settings.mmapThreshold == 4 << 20)
        #expect(settings.topPad == 64 << 20)
    }
}

@Suite struct AllocatorTrimmingTests {
    /// A trim each time the live sessions reach a quarter more than at the last one, from
    /// 16,384 on: about a dozen in a daemon's life, none while the count stays put or falls.
    @Test func trimsAsTheLiveSessionsGrowByAQuarter() {
        var trimming = AllocatorTrimming()
        let counts = [0, 1_024, 16_383, 16_384, 16_384, 20_479, 20_480, 500]
        let trimmed = counts.map { trimming.shouldTrim(liveSessions: $0) }
        #expect(trimmed == [false, false, false, true, false, false, true, false], "falling or staying put does not trim")
        var trims = 0
        for live in stride(from: 20_481, through: 300_000, by: 100) where trimming.shouldTrim(liveSessions: live) { trims += 1 }
        #expect((10...14).contains(trims))
    }
}

@Suite struct DaemonKafkaPropertiesTests {
    /// The pre-fetch queue holds enough that a backlog is read at the daemon's pace, not at
    /// librdkafka's one second of back-off per queue-full; configured properties win.
    @Test func thePrefetchQueueIsSizedForABacklogAndConfiguredPropertiesWin() {
        var configuration = SentinelConfiguration()
        configuration.kafka.brokers = "b:9092"
        configuration.kafka.groupID = "g"
        var properties = Daemon.kafkaProperties(for: configuration)
        #expect(properties["queued.min.messages"] == "1000000")
        #expect(properties["queued.max.messages.kbytes"] == "131072")
        #expect(properties["bootstrap.servers"] == "b:9092" && properties["group.id"] == "g")
        #expect((properties["fetch.queue.backoff.ms"] != nil) == (KafkaConsumer.librdkafkaVersion >= 0x0203_0000))
        configuration.kafka.properties = ["queued.max.messages.kbytes": "16384"]
        properties = Daemon.kafkaProperties(for: configuration)
        #expect(properties["queued.max.messages.kbytes"] == "16384")
        #expect(Daemon.consumerOnlyProperties.allSatisfy { properties[$0] != nil || $0 == "group.instance.id" || $0 == "fetch.queue.backoff.ms" })
    }
}
