import Foundation
import Logging
import SentinelDaemon
import SentinelHTTP
import SentinelKafka
import SentinelKinesis
import Synchronization

/// A Kinesis stream as the consume loop's source of records: each shard is a partition (its
/// number taken from the shard id), its records numbered on from the lease's
/// `sentinelPosition`. The shards are divided among the consumers through a lease table in
/// the layout of the Kinesis Client Library (see `LeaseTable`): a lease nobody holds, or whose
/// holder stopped renewing it for `failoverSeconds`, is taken; a lease this consumer fails to
/// renew is revoked before anyone else can take it (renewals come at a third of that time). A
/// shard whose parents (before a split or merge) are not read to their end waits for them, so
/// a session's records stay in order. Commits are checkpoints in the lease table.
///
/// One fetching task per shard reads ahead (`GetRecords`) into a bounded buffer; everything
/// else runs on the consume loop's task, inside `poll`.
public final class KinesisRecordSource: RecordSource {
    public struct Configuration: Sendable {
        public var stream: String
        /// This consumer's name in the lease table.
        public var owner: String
        public var failoverSeconds: Double = 10
        /// How often the shards and the lease table are looked at again.
        public var scanSeconds: Double = 5
        /// Records fetched ahead of the loop, over all shards.
        public var maxBufferedRecords = 20_000

        public init(stream: String, owner: String) {
            self.stream = stream
            self.owner = owner
        }
    }

    /// A page of a shard's records, fetched ahead.
    struct Page: Sendable {
        var shard: String
        var records: [KinesisClient.Record]
        /// The shard is closed and this was its last page.
        var end: Bool
        var millisBehindLatest: Int64?
    }

    /// What fetching tasks and the loop share.
    final class Buffer: Sendable {
        struct State {
            var pages: [Page] = []
            var head = 0
            var records = 0
        }
        let state = Mutex(State())
        let limit: Int
        init(limit: Int) { self.limit = limit }

        var isFull: Bool { state.withLock { $0.records >= limit } }

        func put(_ page: Page) { state.withLock { $0.pages.append(page); $0.records += page.records.count } }

        /// Pages in order, up to about `maxRecords` records.
        func take(maxRecords: Int) -> [Page] {
            state.withLock { state in
                var taken: [Page] = []
                var count = 0
                while state.head < state.pages.count, count < maxRecords || taken.isEmpty {
                    let page = state.pages[state.head]
                    state.head += 1
                    count += page.records.count
                    taken.append(page)
                }
                state.records -= count
                if state.head > 1_024 || state.head == state.pages.count {
                    state.pages.removeFirst(state.head)
                    state.head = 0
                }
                return taken
            }
        }

        /// Drops the pages of `shard` not yet taken.
        func drop(_ shard: String) {
            state.withLock { state in
                let kept = state.pages[state.head...].filter { $0.shard != shard }
                state.pages = Array(kept)
                state.head = 0
                state.records = kept.reduce(0) { $0 + $1.records.count }
            }
        }
    }

    /// A shard this consumer holds.
    struct Held {
        var lease: LeaseTable.Lease
        var partition: KafkaTopicPartition
        var fetcher: Task<Void, Never>?
        /// The number the next record gets.
        var nextPosition: Int64
        /// Positions after which a commit may checkpoint, and the sequence number there (the
        /// record before the position): every 32nd record and each page's last.
        var marks: [(position: Int64, sequenceNumber: String)] = []
        /// The shard's last record was handed to the loop; its number after it.
        var endPosition: Int64?
        /// When the lease was last taken, renewed or checkpointed (monotonic seconds).
        var renewedAt = monotonicSeconds()
    }

    let configuration: Configuration
    let kinesis: KinesisClient
    let leases: LeaseTable
    let logger: Logger
    private let buffer: Buffer
    private var held: [String: Held] = [:]
    private var byPartition: [Int32: String] = [:]
    private var rebalances: [KafkaRebalance] = []
    /// Leases held by others: the counter last seen and when it was first seen.
    private var seen: [String: (counter: Int64, since: Double)] = [:]
    private var lastScan = -Double.infinity
    private var lastRenewal = monotonicSeconds()

    /// Makes the lease table if needed and takes the first leases (handed over as assignments).
    public init(configuration: Configuration, kinesis: KinesisClient, leases: LeaseTable, logger: Logger) async throws {
        self.configuration = configuration
        self.kinesis = kinesis
        self.leases = leases
        self.logger = logger
        buffer = Buffer(limit: configuration.maxBufferedRecords)
        try await leases.create()
        try await kinesis.waitUntilActive(configuration.stream, timeoutSeconds: 120)
        try await scan()
    }

    /// The shard's partition number: the digits of `shardId-000000000012`.
    static func partitionNumber(_ shardID: String) -> Int32? {
        guard let digits = shardID.split(separator: "-").last, let n = Int32(digits), n >= 0 else { return nil }
        return n
    }

    // MARK: - RecordSource

    public func poll(max: Int, timeoutMs: Int32, _ body: (KafkaRecordView) throws -> Void) async throws -> Int {
        await maintainLeases()
        var pages = buffer.take(maxRecords: max)
        let deadline = monotonicSeconds() + Double(timeoutMs) / 1000
        while pages.isEmpty, monotonicSeconds() < deadline, rebalances.isEmpty {
            try? await Task.sleep(for: .milliseconds(10))
            pages = buffer.take(maxRecords: max)
        }
        var handed = 0
        for page in pages {
            guard var shard = held[page.shard] else { continue }  // revoked meanwhile
            defer { held[page.shard] = shard }
            for (index, record) in page.records.enumerated() {
                let position = shard.nextPosition
                shard.nextPosition += 1
                if shard.nextPosition % 32 == 0 || index == page.records.count - 1 {
                    shard.marks.append((shard.nextPosition, record.sequenceNumber))
                }
                try record.data.withUnsafeBufferPointer { value in
                    try record.partitionKey.utf8CString.withUnsafeBytes { key in
                        try body(
                            KafkaRecordView(
                                topic: configuration.stream, partition: shard.partition.partition, offset: position,
                                key: UnsafeRawBufferPointer(rebasing: key.dropLast()), value: value))
                    }
                }
                handed += 1
            }
            if page.end {
                shard.endPosition = shard.nextPosition
                logger.info("\(page.shard): read to its end (closed by a reshard)")
            }
        }
        return handed
    }

    public func nextRebalance() -> KafkaRebalance? { rebalances.isEmpty ? nil : rebalances.removeFirst() }

    public func completeAssignment(_ partitions: [KafkaTopicPartition], offsets: [KafkaTopicPartition: Int64]) async throws {
        for tp in partitions {
            guard let id = byPartition[tp.partition], var shard = held[id] else { continue }
            if let offset = offsets[tp], offset != shard.nextPosition {
                logger.warning("\(id): cannot start at \(offset) (not a checkpoint of the lease table); starting at \(shard.nextPosition)")
            }
            let start: KinesisClient.StartingPosition =
                switch shard.lease.checkpoint {
                case "TRIM_HORIZON", "": .trimHorizon
                case "LATEST": .latest
                default: .afterSequenceNumber(shard.lease.checkpoint)
                }
            shard.fetcher = fetch(id, from: start)
            held[id] = shard
        }
    }

    public func completeRevocation(_ partitions: [KafkaTopicPartition]) async throws {}

    public func commit(_ offsets: [KafkaTopicPartition: Int64]) async throws {
        for (tp, offset) in offsets {
            guard let id = byPartition[tp.partition], var shard = held[id], offset > shard.lease.position else { continue }
            let checkpoint: (sequence: String, position: Int64)
            if let end = shard.endPosition, offset >= end {
                checkpoint = ("SHARD_END", end)
            } else if let mark = shard.marks.last(where: { $0.position <= offset }) {
                checkpoint = (mark.sequenceNumber, mark.position)
            } else {
                continue
            }
            guard checkpoint.position > shard.lease.position || checkpoint.sequence == "SHARD_END" else { continue }
            if let updated = try await leases.checkpoint(shard.lease, at: checkpoint.sequence, position: checkpoint.position) {
                shard.lease = updated
                shard.renewedAt = monotonicSeconds()
                shard.marks.removeAll { $0.position <= checkpoint.position }
                held[id] = shard
            } else {
                lose(id, "its checkpoint found it taken")
            }
        }
    }

    public func committed(_ partitions: [KafkaTopicPartition]) async throws -> [KafkaTopicPartition: Int64?] {
        var result: [KafkaTopicPartition: Int64?] = [:]
        for tp in partitions {
            guard let id = byPartition[tp.partition], let shard = held[id] else { continue }
            result[tp] = shard.lease.checkpoint == "TRIM_HORIZON" ? nil : shard.lease.position
        }
        return result
    }

    public func close() async {
        for (id, shard) in held {
            shard.fetcher?.cancel()
            // Given up at once: another consumer takes it without waiting for the failover time.
            do { try await leases.release(shard.lease) } catch { logger.warning("\(id): lease not released (\(error)); others take it after the failover time") }
        }
        for shard in held.values { await shard.fetcher?.value }
        held.removeAll()
    }

    // MARK: - Leases

    /// Renews the held leases when due and looks at the shards and the lease table again.
    private func maintainLeases() async {
        let now = monotonicSeconds()
        if now - lastRenewal >= configuration.failoverSeconds / 3 {
            lastRenewal = now
            for id in held.keys.sorted() {
                guard let shard = held[id] else { continue }
                do {
                    if let renewed = try await leases.renew(shard.lease) {
                        held[id]?.lease = renewed
                        held[id]?.renewedAt = monotonicSeconds()
                    } else {
                        lose(id, "another consumer took it")
                    }
                } catch {
                    // Unsure whether it is still ours: stop before the failover time lets another take it.
                    if monotonicSeconds() - shard.renewedAt > configuration.failoverSeconds * 2 / 3 { lose(id, "it could not be renewed: \(error)") }
                    logger.warning("\(id): lease renewal failed: \(error)")
                }
            }
        }
        if now - lastScan >= configuration.scanSeconds {
            do { try await scan() } catch { logger.warning("Kinesis shards or leases could not be read (will retry): \(error)") }
        }
    }

    /// Adds leases for new shards and takes those that are free, or whose holder went quiet,
    /// and whose parents are read to their end.
    private func scan() async throws {
        lastScan = monotonicSeconds()
        let shards = try await kinesis.listShards(configuration.stream)
        var table = try await leases.leases()
        for shard in shards where table[shard.id] == nil {
            let lease = LeaseTable.Lease(shardID: shard.id, parents: shard.parents)
            if try await leases.add(lease) { table[shard.id] = lease }
        }
        if table.values.contains(where: { $0.shardID != "" && Self.partitionNumber($0.shardID) == nil }) {
            logger.warning("shard ids without a number: those shards are not read")
        }
        let now = monotonicSeconds()
        var taken: [KafkaTopicPartition] = []
        for id in table.keys.sorted() where held[id] == nil {
            guard let lease = table[id], !lease.isFinished, let number = Self.partitionNumber(id) else { continue }
            // Parents first: finished in the table, or read to their end here.
            let parentsDone = lease.parents.allSatisfy { parent in
                guard let p = table[parent] else { return true }  // trimmed long ago
                return p.isFinished || held[parent]?.endPosition != nil
            }
            guard parentsDone else { continue }
            if let owner = lease.owner, owner != configuration.owner {
                // Held by another: take it only once its holder stopped renewing.
                if let last = seen[id], last.counter == lease.counter {
                    guard now - last.since >= configuration.failoverSeconds else { continue }
                } else {
                    seen[id] = (lease.counter, now)
                    continue
                }
            }
            guard let mine = try await leases.take(lease, for: configuration.owner) else { continue }
            seen[id] = nil
            let tp = KafkaTopicPartition(topic: configuration.stream, partition: number)
            held[id] = Held(lease: mine, partition: tp, nextPosition: mine.position)
            byPartition[number] = id
            taken.append(tp)
            logger.info("\(id): lease taken at \(mine.checkpoint) (record number \(mine.position))")
        }
        if !taken.isEmpty { rebalances.append(.assign(taken)) }
    }

    /// A lease is no longer this consumer's: its records stop here.
    private func lose(_ id: String, _ why: String) {
        guard let shard = held.removeValue(forKey: id) else { return }
        shard.fetcher?.cancel()
        byPartition[shard.partition.partition] = nil
        buffer.drop(id)
        rebalances.append(.revoke([shard.partition]))
        logger.warning("\(id): lease lost (\(why)); its records are left to its new holder")
    }

    // MARK: - Fetching

    /// Reads a shard ahead of the loop: `GetRecords` at most five times a second while caught
    /// up, throttling and errors retried with backoff, an expired iterator renewed from the last
    /// record fetched.
    private func fetch(_ shard: String, from start: KinesisClient.StartingPosition) -> Task<Void, Never> {
        let kinesis = self.kinesis
        let stream = configuration.stream
        let buffer = self.buffer
        let logger = self.logger
        return Task {
            var position = start
            var iterator: String?
            var failures = 0
            while !Task.isCancelled {
                do {
                    if iterator == nil { iterator = try await kinesis.shardIterator(stream, shard: shard, from: position) }
                    let page = try await kinesis.records(iterator!)
                    failures = 0
                    if let last = page.records.last { position = .afterSequenceNumber(last.sequenceNumber) }
                    let end = page.nextIterator == nil
                    if !page.records.isEmpty || end {
                        while buffer.isFull, !Task.isCancelled { try await Task.sleep(for: .milliseconds(20)) }
                        buffer.put(Page(shard: shard, records: page.records, end: end, millisBehindLatest: page.millisBehindLatest))
                    }
                    if end { return }
                    iterator = page.nextIterator
                    if page.records.isEmpty || (page.millisBehindLatest ?? 1) == 0 { try await Task.sleep(for: .milliseconds(200)) }
                } catch let error as AWSError where error.isExpiredIterator {
                    iterator = nil
                } catch is CancellationError {
                    return
                } catch {
                    failures += 1
                    iterator = nil
                    if failures == 1 || failures % 10 == 0 { logger.warning("\(shard): GetRecords failed (\(failures) in a row; will retry): \(error)") }
                    try? await Task.sleep(for: .milliseconds(min(200 << min(failures, 5), 5_000)))
                }
            }
        }
    }
}
