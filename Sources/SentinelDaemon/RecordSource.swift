import SentinelKafka

/// Where the consume loop's records come from: Kafka partitions (`KafkaConsumer`) or Kinesis
/// shards, each seen as a partition whose records are numbered by offsets the source can
/// commit and start again from. Assignments and revocations are handed over by
/// `nextRebalance` and completed by the loop once it has committed or restored what it must.
/// Used by the one task that runs the loop.
public protocol RecordSource: AnyObject {
    /// Hands up to `max` records to `body` in each partition's order, waiting up to
    /// `timeoutMs` for the first; returns how many were handed.
    func poll(max: Int, timeoutMs: Int32, _ body: (KafkaRecordView) throws -> Void) async throws -> Int
    /// The next assignment or revocation that happened, if any.
    func nextRebalance() -> KafkaRebalance?
    /// Starts reading newly assigned partitions, at `offsets` where given (else at the
    /// committed position).
    func completeAssignment(_ partitions: [KafkaTopicPartition], offsets: [KafkaTopicPartition: Int64]) async throws
    func completeRevocation(_ partitions: [KafkaTopicPartition]) async throws
    /// Commits: each partition's records before its offset are done with.
    func commit(_ offsets: [KafkaTopicPartition: Int64]) async throws
    /// The committed offsets of `partitions` (nil where none is).
    func committed(_ partitions: [KafkaTopicPartition]) async throws -> [KafkaTopicPartition: Int64?]
    /// Leaves: gives the partitions up at once.
    func close() async
    /// The partitions fetched without error and read to their newest record, when the source
    /// says so itself (Kinesis: `MillisBehindLatest` 0); nil for Kafka, whose statistics say it.
    /// A quiet stream's event time follows the wall clock only there.
    func caughtUp() -> Set<KafkaTopicPartition>?
}

extension KafkaConsumer: RecordSource {
    public func caughtUp() -> Set<KafkaTopicPartition>? { nil }

    public func poll(max: Int, timeoutMs: Int32, _ body: (KafkaRecordView) throws -> Void) async throws -> Int {
        try pollBatch(max: max, timeoutMs: timeoutMs, body)
    }

    public func committed(_ partitions: [KafkaTopicPartition]) async throws -> [KafkaTopicPartition: Int64?] {
        try committed(partitions, timeoutMs: 5_000)
    }
}
